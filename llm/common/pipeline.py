"""The fine-tuning run that both run_fine_tuning*.py scripts share: arguments in, adapter and log out."""

import argparse
import contextlib
import hashlib
import io
import dataclasses
import json
import os
import platform
import re
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from trl import SFTTrainer

from llm.common.adapters import load_fine_tuned
from llm.common.cli import ArgumentParser, UserError, add_trust_pickled_option, positive_float, positive_int
from llm.common.data import Splits, check_fits_context, load_splits, to_prompt_completion
from llm.common.inference import generate_answers
from llm.common.logs import RunLog, log_file_path, plot_losses
from llm.common.models import (
    LoadedModel, base_folder, check_model_folder, folder_is_empty, load_local, load_tokenizer, pick_device, read_config,
    tiny_notice,
)
from llm.common.training import (
    ValidPromptTest, match_report, format_answers, lora_config, save_adapter_atomically, sft_config,
)
from llm.common.specs import DEFAULT_DATASET, TINY_EPOCHS, TINY_LEARNING_RATE, ModelSpec, Recipe

MATCH_PROBE_SIZE = 40  # train prompts answered greedily before and after training
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")
RUN_SETTINGS_NAME = "run_settings.json"  # in the checkpoint folder: what a resumed run must keep the same
# The options whose defaults come from the Recipe (argparse dest -> flag).
RECIPE_OPTIONS = {"epochs": "--epochs", "lora_rank": "--lora-rank", "learning_rate": "--learning-rate",
                  "batch_size": "--batch-size", "temperature": "--temperature", "max_trials": "--max-trials",
                  "seed": "--seed"}


def _escaped(help_text: str) -> str:
    """Help text with a path in it: argparse would read a '%' in the path as a format."""
    return help_text.replace("%", "%%")


def build_parser(spec: ModelSpec) -> argparse.ArgumentParser:
    recipe = Recipe()
    parser = ArgumentParser(
        description=f"LoRA fine-tuning of {spec.display_name} into the Oh-LoRA persona. Without weights in "
                    f"--model-dir it runs on a tiny stand-in model of the same architecture, and says so.",
    )
    # Options a resumed run takes from the run it continues default to None, so that a value given on the
    # command line can be told from the default; their help names the default itself.
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=_escaped(f"folder with the base weights (default: {spec.model_dir})"))
    parser.add_argument("--dataset", type=Path, default=None, help=_escaped(f"the dataset CSV (default: {DEFAULT_DATASET})"))
    parser.add_argument("--output-dir", type=Path, default=spec.adapter_dir, help="where the adapter is saved (default: %(default)s)")
    parser.add_argument("--logs-dir", type=Path, default=spec.logs_dir, help="where the log and plot go (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default {recipe.epochs}; {TINY_EPOCHS} on the tiny stand-in)")
    parser.add_argument("--lora-rank", type=positive_int, default=None, help=f"LoRA rank r (default: {recipe.lora_rank})")
    parser.add_argument("--learning-rate", type=positive_float, default=None,
                        help=f"learning rate (default {recipe.learning_rate}; {TINY_LEARNING_RATE} on the tiny stand-in)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help=f"train batch size per device (default: {recipe.batch_size})")
    parser.add_argument("--temperature", type=positive_float, default=None,
                        help=f"sampling temperature of the per-epoch valid-prompt test (default: {recipe.temperature})")
    parser.add_argument("--max-trials", type=positive_int, default=None,
                        help=f"generations per prompt while the answer is empty (default: {recipe.max_trials})")
    parser.add_argument("--seed", type=int, default=None, help=f"random seed (default: {recipe.seed})")
    parser.add_argument("--log-name", default=None, help="appended to the log file name as ' (TEXT)'")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its latest complete checkpoint, with its settings")
    add_trust_pickled_option(parser)
    return parser


def checkpoint_dir_for(adapter_dir: Path) -> Path:
    return adapter_dir.with_name(f"{adapter_dir.name}_checkpoints")


def _checkpoint_folders(checkpoint_dir: Path) -> list[Path]:
    """The Trainer's checkpoint-N folders, in step order."""
    folders = [path for path in checkpoint_dir.glob("checkpoint-*")
               if re.fullmatch(r"checkpoint-[0-9]+", path.name) and path.is_dir()]
    return sorted(folders, key=lambda path: int(path.name.removeprefix("checkpoint-")))


def _trainer_state(checkpoint: Path) -> dict | None:
    """The checkpoint's trainer_state.json, or None when the checkpoint was not written in full.

    Trainer._save_checkpoint writes the adapter, then optimizer, scheduler and RNG state, and trainer_state.json
    last; a kill while it saves leaves that file missing or cut off (no longer JSON).
    """
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    step = int(checkpoint.name.removeprefix("checkpoint-"))
    return state if isinstance(state, dict) and state.get("global_step") == step else None


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


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_json_atomically(path: Path, value: dict) -> None:
    """Write beside, then rename: a kill leaves no file or a whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def _fresh_recipe(args: argparse.Namespace, is_tiny: bool) -> Recipe:
    """The recipe (with the stand-in's epochs and learning rate when there are no weights), and the options given."""
    defaults = Recipe(epochs=TINY_EPOCHS, learning_rate=TINY_LEARNING_RATE) if is_tiny else Recipe()
    given = {name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) is not None}
    return dataclasses.replace(defaults, **given)


def _resumed_recipe(spec: ModelSpec, args: argparse.Namespace, checkpoint_dir: Path, processes: int) -> Recipe:
    """The recipe of the run being resumed; fills in its dataset and model folder where the command leaves them out.

    A UserError when the command, the dataset file or the model folder contradict what the run started with.
    """
    path = checkpoint_dir / RUN_SETTINGS_NAME
    start_over = f"delete {checkpoint_dir} to start over"
    try:
        settings = RunSettings(**json.loads(path.read_text(encoding="utf-8")))
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
    differences = [f"{flag} {getattr(args, name)} (the run has {getattr(recipe, name)})"
                   for name, flag in RECIPE_OPTIONS.items()
                   if getattr(args, name) is not None and getattr(args, name) != getattr(recipe, name)]
    for name, flag in (("model_dir", "--model-dir"), ("dataset", "--dataset")):
        given, recorded = getattr(args, name), getattr(settings, name)
        if given is not None and str(given.resolve()) != recorded:
            differences.append(f"{flag} {given} (the run has {recorded})")
    if differences:
        raise UserError(f"--resume: {', '.join(differences)}: leave out what differs to continue with the "
                        f"run's settings, or {start_over}")
    args.model_dir, args.dataset = Path(settings.model_dir), Path(settings.dataset)
    if args.dataset.is_file() and _sha256(args.dataset) != settings.dataset_sha256:
        raise UserError(f"--resume: {args.dataset} changed since the run started: put back the file it "
                        f"started with, or {start_over}")
    if folder_is_empty(args.model_dir) != settings.tiny_stand_in:
        trained = "the tiny stand-in" if settings.tiny_stand_in else "the weights in that folder"
        now = "holds weights now" if settings.tiny_stand_in else "is empty now"
        raise UserError(f"--resume: the run trained {trained}, but {args.model_dir} {now}: "
                        f"put it back as it was, or {start_over}")
    return recipe


class CheckpointLog(TrainerCallback):
    """After each save, the checkpoints left on disk (the Trainer has removed those past save_total_limit by then)."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            kept = ", ".join(path.name for path in _checkpoint_folders(self.checkpoint_dir))
            print(f"checkpoint saved at epoch {round(state.epoch)}/{round(args.num_train_epochs)}, "
                  f"step {state.global_step}; checkpoints on disk: {kept}")


def _header(spec: ModelSpec, loaded: LoadedModel, splits: Splits, recipe: Recipe, args: argparse.Namespace,
            device: str, dtype: torch.dtype, world_size: int) -> str:
    versions = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    lines = [
        f"Oh-LoRA fine-tuning: {spec.display_name}" + (" (TINY STAND-IN)" if loaded.is_tiny else ""),
        f"model folder: {args.model_dir}" + (f" (empty; stand-in loaded from {loaded.model_dir})" if loaded.is_tiny else ""),
        f"dataset: {splits.path} ({len(splits.train)} train rows, {len(splits.valid)} valid rows, "
        f"{len(splits.valid_with_answers)} valid rows with answers for the eval loss)",
        f"adapter output: {args.output_dir}",
        "hyperparameters: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(recipe).items()),
        f"LoRA targets: {', '.join(spec.lora_targets)}",
        f"device: {device}, dtype: {str(dtype).removeprefix('torch.')}, processes: {world_size}",
        f"python {platform.python_version()}, {versions}",
        f"resume: {args.resume}",
    ]
    return "\n".join(lines)


def fine_tune(spec: ModelSpec, argv: list[str] | None = None) -> int:
    """Parse arguments, train, save the adapter, test the saved adapter; returns an exit code."""
    args = build_parser(spec).parse_args(argv)
    started = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process

    # Everything that can be wrong with the inputs is found before anything is written.
    checkpoint_dir = checkpoint_dir_for(args.output_dir)
    checkpoints = _checkpoint_folders(checkpoint_dir)
    complete = [checkpoint for checkpoint in checkpoints if _trainer_state(checkpoint) is not None]
    incomplete = [checkpoint for checkpoint in checkpoints if checkpoint not in complete]
    resume_from = complete[-1] if args.resume and complete else None
    if args.resume and resume_from is None:
        cut_off = f" ({', '.join(path.name for path in incomplete)}: cut off while being written)" if incomplete else ""
        raise UserError(f"--resume: no complete checkpoint in {checkpoint_dir} to continue from{cut_off}: "
                        f"run without --resume to start over")
    if not args.resume and complete:
        raise UserError(f"{checkpoint_dir} holds checkpoints of an unfinished run: "
                        f"add --resume to continue it, or delete that folder to start over")
    if args.resume:
        recipe = _resumed_recipe(spec, args, checkpoint_dir, state.num_processes)
    else:
        args.model_dir = args.model_dir or spec.model_dir
        args.dataset = args.dataset or DEFAULT_DATASET
    splits = load_splits(args.dataset)
    if not folder_is_empty(args.model_dir):
        check_model_folder(spec, args.model_dir, args.trust_pickled_weights)

    device, dtype = pick_device()
    with state.main_process_first():  # the first process builds the tiny stand-in, the others reuse it
        base_dir = base_folder(spec, args.model_dir, splits)
    config = read_config(base_dir)
    context = config.max_position_embeddings
    check_fits_context(splits, load_tokenizer(base_dir, config.vocab_size), context)  # before loading the weights
    loaded = load_local(spec, base_dir, device, dtype, args.trust_pickled_weights)
    loaded.is_tiny = base_dir != args.model_dir
    if not args.resume:
        recipe = _fresh_recipe(args, loaded.is_tiny)
    set_seed(recipe.seed)
    log_path = log_file_path(args.logs_dir, args.log_name)
    # Other processes run the same code but print nothing and write no log.
    with (RunLog(log_path) if is_main else contextlib.redirect_stdout(io.StringIO())):
        if loaded.is_tiny:
            print(tiny_notice(spec, args.model_dir, loaded.model_dir))
        print(_header(spec, loaded, splits, recipe, args, device, dtype, state.num_processes))
        probe = splits.train[:: max(1, len(splits.train) // MATCH_PROBE_SIZE)][:MATCH_PROBE_SIZE]
        if is_main:
            matches_before = match_report(loaded.model, loaded.tokenizer, probe)
            print(f"greedy answers to {len(probe)} train prompts vs the dataset, before training: {matches_before}")

        trainer = SFTTrainer(
            model=loaded.model,
            args=sft_config(recipe, checkpoint_dir, device, dtype, bool(splits.valid_with_answers),
                            max_length=context),
            train_dataset=to_prompt_completion(splits.train),
            eval_dataset=to_prompt_completion(splits.valid_with_answers) if splits.valid_with_answers else None,
            processing_class=loaded.tokenizer,
            peft_config=lora_config(spec, recipe),
            callbacks=[ValidPromptTest([example.input_data for example in splits.valid], recipe),
                       CheckpointLog(checkpoint_dir)],
        )
        if is_main:
            # Left by a kill during a save; the Trainer would count them among the checkpoints it keeps.
            for checkpoint in incomplete:
                shutil.rmtree(checkpoint)
                print(f"skipped and removed {checkpoint}: incomplete (the run was stopped while writing it)")
            if resume_from is None:
                settings = RunSettings(
                    model=spec.name, model_dir=str(args.model_dir.resolve()), tiny_stand_in=loaded.is_tiny,
                    dataset=str(args.dataset.resolve()), dataset_sha256=_sha256(args.dataset),
                    processes=state.num_processes, recipe=dataclasses.asdict(recipe))
                _write_json_atomically(checkpoint_dir / RUN_SETTINGS_NAME, dataclasses.asdict(settings))
        if resume_from is not None:
            done = _trainer_state(resume_from)
            print(f"resumed from {resume_from} with the settings in {checkpoint_dir / RUN_SETTINGS_NAME}: "
                  f"at epoch {round(done['epoch'])}/{recipe.epochs}, step {done['global_step']}/{done['max_steps']}")
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        steps_per_epoch = len(trainer.get_train_dataloader())
        print(f"[rank {state.process_index}/{state.num_processes}] trained {trainer.state.global_step} steps "
              f"({steps_per_epoch} per epoch), final train loss {result.training_loss:.4f}", file=sys.stderr)
        if not is_main:
            return 0

        save_adapter_atomically(trainer.model, loaded.tokenizer, args.output_dir)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run is complete: its checkpoints are spent
        print(f"adapter saved to {args.output_dir}")
        plot_path = log_path.with_suffix(".png")
        plot_losses(trainer.state.log_history, plot_path, f"{spec.display_name} LoRA fine-tuning")
        print(f"loss plot: {plot_path}")

        # Test what was saved, not what is in memory: a fresh base with the saved adapter, as the chat loads it.
        del trainer
        reloaded = load_fine_tuned(spec, args.model_dir, args.output_dir, device, dtype, say=None,
                                   trust_pickled=args.trust_pickled_weights)
        valid_inputs = [example.input_data for example in splits.valid]
        for round_number in (1, 2):
            answers = generate_answers(reloaded.model, reloaded.tokenizer, valid_inputs,
                                       temperature=recipe.temperature, max_trials=recipe.max_trials,
                                       progress=f"final test {round_number}/2")
            print(format_answers(f"final test {round_number}/2 with the saved adapter "
                                 f"(temperature {recipe.temperature})", answers))
        print(f"greedy answers to {len(probe)} train prompts vs the dataset, after training: "
              f"{match_report(reloaded.model, reloaded.tokenizer, probe)} (before: {matches_before})")
        print(f"total time: {time.time() - started:.1f} s")
        print(f"log: {log_path}")
    return 0
