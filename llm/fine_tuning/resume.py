"""Resuming an interrupted run: its checkpoint folder, the settings it started with, and what may differ.

The checkpoint folder sits beside the adapter (`<output-dir>_checkpoints`). A run writes its settings there
when it starts, the Trainer writes `checkpoint-N` folders each epoch, and the run removes what it wrote when
it ends; a folder holding anything else is refused, since that clean-up would delete it.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

from llm.common.cli import UserError
from llm.common.folders import ADAPTER_CONFIG, folder_is_empty, read_json_object
from llm.common.outputs import check_format
from llm.common.specs import ModelSpec, Recipe
from llm.fine_tuning.options import FineTuningOptions

RUN_SETTINGS_NAME = "run_settings.json"
# Also written there by the Trainer: TRL's model card on each save, TensorBoard's event files (--report-to).
TRAINER_FILES = {"README.md", "runs"}
# The Trainer's folder names (transformers.trainer_utils.PREFIX_CHECKPOINT_DIR + "-" + step); its own
# get_last_checkpoint cannot tell a checkpoint cut off by a kill from a whole one, hence the scan below.
_CHECKPOINT = re.compile(r"checkpoint-([0-9]+)")


SETTINGS_FORMAT = 1  # of run_settings.json


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What a resumed run must share with the run it continues; written beside the checkpoints at the start."""

    model: str  # ModelSpec.name
    model_dir: str
    tiny_stand_in: bool
    dataset: str
    dataset_sha256: str
    processes: int
    recipe: dict
    quantization: str = "none"  # how the base model's weights were held: a resumed run must hold them alike
    format: int = SETTINGS_FORMAT  # a file of a newer format is refused before the run writes anything


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    folder: Path
    complete: list[Path]  # in step order
    incomplete: list[Path]  # cut off while being written: trainer_state.json (written last) missing or partial

    @property
    def latest(self) -> Path | None:
        return self.complete[-1] if self.complete else None


def checkpoint_dir_for(adapter_dir: Path) -> Path:
    return adapter_dir.with_name(f"{adapter_dir.name}_checkpoints")


def trainer_state(checkpoint: Path) -> dict | None:
    """The checkpoint's trainer_state.json, or None when the checkpoint was not written in full."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    step = int(_CHECKPOINT.fullmatch(checkpoint.name)[1])
    return state if isinstance(state, dict) and state.get("global_step") == step else None


def _is_run_file(path: Path) -> bool:
    """What a run writes into its checkpoint folder: checkpoint-N folders, the settings, their partial copies."""
    return (path.is_dir() and _CHECKPOINT.fullmatch(path.name) is not None) or \
        path.name in {RUN_SETTINGS_NAME, *TRAINER_FILES} or path.name.startswith(f".{RUN_SETTINGS_NAME}.partial-")


def scan(checkpoint_dir: Path) -> Checkpoints:
    """The run's checkpoints; a UserError when the folder holds anything a run did not write."""
    if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
        raise UserError(f"{checkpoint_dir}: a file where the run keeps its checkpoints; move it away")
    entries = list(checkpoint_dir.iterdir()) if checkpoint_dir.is_dir() else []
    foreign = sorted(path.name for path in entries if not _is_run_file(path))
    if foreign:
        raise UserError(f"{checkpoint_dir}: holds files a fine-tuning run did not write ({', '.join(foreign[:3])}), "
                        f"and the run removes that folder when it ends; move them away or choose another --output-dir")
    folders = sorted((path for path in entries if path.is_dir() and _CHECKPOINT.fullmatch(path.name)),
                     key=lambda path: int(_CHECKPOINT.fullmatch(path.name)[1]))
    complete = [folder for folder in folders if trainer_state(folder) is not None]
    return Checkpoints(checkpoint_dir, complete, [folder for folder in folders if folder not in complete])


def remove_run_files(checkpoint_dir: Path) -> None:
    """Remove what the run wrote into its checkpoint folder, and the folder when nothing else is left."""
    if not checkpoint_dir.is_dir():
        return
    for path in checkpoint_dir.iterdir():
        if _is_run_file(path):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        checkpoint_dir.rmdir()


def remove_incomplete(checkpoints: Checkpoints) -> list[Path]:
    """Remove the checkpoints a kill cut off (the Trainer would count them among those it keeps)."""
    for checkpoint in checkpoints.incomplete:
        shutil.rmtree(checkpoint)
    return checkpoints.incomplete


class CheckpointLog(TrainerCallback):
    """After each save, the checkpoints left on disk (the Trainer has removed those past save_total_limit by then)."""

    def __init__(self, checkpoint_dir: Path, log) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.log = log

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            kept = ", ".join(path.name for path in scan(self.checkpoint_dir).complete)
            self.log.detail(f"checkpoint saved at epoch {round(state.epoch)}/{round(args.num_train_epochs)}, "
                            f"step {state.global_step}; checkpoints on disk: {kept}")


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_settings(checkpoint_dir: Path, settings: RunSettings) -> None:
    """Write beside, then rename: a kill leaves no file or a whole one."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / RUN_SETTINGS_NAME
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def check_checkpoint_fits(checkpoint: Path, spec: ModelSpec, recipe: Recipe) -> None:
    """The checkpoint's adapter must be the one the run's settings make (another run's checkpoint copied in, a
    settings file edited: resuming it would stop on a size mismatch or in the optimizer)."""
    config = read_json_object(checkpoint / ADAPTER_CONFIG)
    if config is None:
        raise UserError(f"--resume: {checkpoint / ADAPTER_CONFIG} is missing or unreadable: delete "
                        f"{checkpoint.parent} to start over")
    saved = (config.get("r"), sorted(config.get("target_modules") or []))
    expected = (recipe.lora_rank, sorted(spec.lora_targets))
    if saved != expected:
        raise UserError(f"--resume: {checkpoint} holds a LoRA adapter of rank {saved[0]} on {', '.join(saved[1])}, "
                        f"but the run's settings make rank {expected[0]} on {', '.join(expected[1])} ({spec.display_name}): "
                        f"it is another run's; delete {checkpoint.parent} to start over")


def resumed_settings(spec: ModelSpec, options: FineTuningOptions, checkpoint_dir: Path,
                     processes: int) -> tuple[Recipe, Path, Path, str]:
    """(recipe, model folder, dataset, quantization) of the run being resumed, where the command leaves them out.

    A UserError when the command, the dataset file or the model folder contradict what the run started with.
    """
    path = checkpoint_dir / RUN_SETTINGS_NAME
    start_over = f"delete {checkpoint_dir} to start over"
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        check_format(f"--resume: {path}", recorded.get("format", 1) if isinstance(recorded, dict) else 1,
                     SETTINGS_FORMAT, start_over)
        settings = RunSettings(**recorded)
        recipe = Recipe(**settings.recipe)
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        raise UserError(f"--resume: {path} is missing or unreadable, so the settings of the run to continue "
                        f"are unknown: {start_over}") from None
    if settings.model != spec.name:
        raise UserError(f"--resume: {checkpoint_dir} holds a run of the {settings.model} model, not {spec.name}: "
                        f"resume it with that model's script, or {start_over}")
    if processes != settings.processes:
        raise UserError(f"--resume: the run used {settings.processes} process(es) and this one has {processes}; "
                        f"the data each one sees depends on it: start it as before, or {start_over}")
    differences = [f"--{name.replace('_', '-')} {value} (the run has {getattr(recipe, name)})"
                   for name, value in options.recipe.items() if value != getattr(recipe, name)]
    if options.quantization not in (None, settings.quantization):
        differences.append(f"--quantization {options.quantization} (the run has {settings.quantization})")
    if options.model_dir is not None and str(options.model_dir.resolve()) != settings.model_dir:
        differences.append(f"--model-dir {options.model_dir} (the run has {settings.model_dir})")
    # The dataset is known by its content: the same file moved elsewhere is given with --dataset.
    dataset = Path(settings.dataset)
    if options.dataset is not None and str(options.dataset.resolve()) != settings.dataset:
        if options.dataset.is_file() and sha256(options.dataset) == settings.dataset_sha256:
            dataset = options.dataset
        else:
            differences.append(f"--dataset {options.dataset} (the run has {settings.dataset})")
    if differences:
        raise UserError(f"--resume: {', '.join(differences)}: leave out what differs to continue with the "
                        f"run's settings, or {start_over}")
    model_dir = Path(settings.model_dir)
    if not dataset.is_file():
        raise UserError(f"--resume: the run's dataset {dataset} is gone: give the same file's place with "
                        f"--dataset, or {start_over}")
    if sha256(dataset) != settings.dataset_sha256:
        raise UserError(f"--resume: {dataset} changed since the run started: put back the file it "
                        f"started with, or {start_over}")
    if folder_is_empty(model_dir) != settings.tiny_stand_in:
        trained = "the tiny stand-in" if settings.tiny_stand_in else "the weights in that folder"
        now = "holds weights now" if settings.tiny_stand_in else "is empty now"
        raise UserError(f"--resume: the run trained {trained}, but {model_dir} {now}: "
                        f"put it back as it was, or {start_over}")
    return recipe, model_dir, dataset, settings.quantization
