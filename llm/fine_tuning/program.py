"""The fine-tuning run both run_fine_tuning*.py scripts make, in three phases: prepare, train, finish.

prepare  checks every input and output place, then loads the data and the model (nothing written before)
train    LoRA SFT with TRL, a valid-prompt test and a summary line after every epoch, checkpoints for --resume
finish   saves the adapter (atomically), plots the losses, tests the saved adapter as the chat loads it
"""

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainerCallback, set_seed
from transformers.trainer_callback import ProgressCallback
from trl import SFTTrainer

from llm.common.adapters import load_fine_tuned
from llm.common.cli import UserError
from llm.common.data import Splits, check_fits_context, load_splits
from llm.common.inference import DEFAULT_BATCH_SIZE, STOP_MARKER, format_answers, generate_answers
from llm.common.logs import RunLog, library_versions, log_file_path, plot_losses, epoch_losses
from llm.common.folders import folder_is_empty
from llm.common.models import (
    LoadedModel, base_folder, check_model_folder, load_local, load_tokenizer, pick_device,
    read_config, tiny_notice,
)
from llm.common.outputs import check_replaceable, check_writable_folder, disk_full, recover_interrupted_save
from llm.common.specs import DEFAULT_DATASET, TINY_RECIPE, ModelSpec, Recipe, recipe_options
from llm.common.training import build_trainer, lora_config, save_adapter_atomically
from llm.fine_tuning import resume
from llm.fine_tuning.epochs import (
    EpochReport, EpochSummary, RunProgress, best_epoch, empty_count, epoch_table, match_report,
)

MATCH_PROBE_SIZE = 40  # train prompts answered greedily before and after training
FINAL_TEST_ROUNDS = 2


@dataclasses.dataclass
class Run:
    """Everything the train and finish phases need, resolved once by prepare."""

    spec: ModelSpec
    args: argparse.Namespace  # as parsed; the resolved paths are the fields below
    output_dir: Path
    logs_dir: Path
    checkpoints: resume.Checkpoints
    model_dir: Path
    dataset: Path
    splits: Splits
    recipe: Recipe
    loaded: LoadedModel
    device: str
    dtype: torch.dtype
    state: PartialState
    started: float

    @property
    def resume_from(self) -> Path | None:
        return self.checkpoints.latest if self.args.resume else None


def check_output_places(output_dir: Path, logs_dir: Path) -> tuple[Path, Path]:
    """(output folder, logs folder) resolved, once both are usable and saving one cannot delete the other."""
    output_dir = check_replaceable(output_dir, "--output-dir")
    logs_dir = check_writable_folder(logs_dir, "--logs-dir")
    for replaced in (output_dir, resume.checkpoint_dir_for(output_dir)):
        if logs_dir == replaced or logs_dir.is_relative_to(replaced):
            raise UserError(f"--logs-dir {logs_dir}: inside {replaced}, which the run replaces or removes; "
                            f"put the logs elsewhere")
    return output_dir, logs_dir


def _fresh_recipe(args: argparse.Namespace, is_tiny: bool) -> Recipe:
    """The recipe (the stand-in's epochs and learning rate when there are no weights), with the options given."""
    defaults = Recipe(**TINY_RECIPE) if is_tiny else Recipe()
    given = {name: getattr(args, name) for name in recipe_options() if getattr(args, name) is not None}
    return dataclasses.replace(defaults, **given)


def prepare(spec: ModelSpec, args: argparse.Namespace) -> Run:
    """Check every input and output place, then load data and model; a UserError (one line) before any write."""
    started = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())
    output_dir, logs_dir = check_output_places(args.output_dir, args.logs_dir)
    checkpoints = resume.scan(resume.checkpoint_dir_for(output_dir))
    if args.resume and checkpoints.latest is None:
        cut_off = f" ({', '.join(path.name for path in checkpoints.incomplete)}: cut off while being written)" \
            if checkpoints.incomplete else ""
        raise UserError(f"--resume: no complete checkpoint in {checkpoints.folder} to continue from{cut_off}: "
                        f"run without --resume to start over")
    if not args.resume and checkpoints.complete:
        raise UserError(f"{checkpoints.folder} holds checkpoints of an unfinished run: "
                        f"add --resume to continue it, or delete that folder to start over")
    recipe = None
    if args.resume:
        recipe, model_dir, dataset = resume.resumed_settings(spec, args, checkpoints.folder, state.num_processes)
    else:
        model_dir, dataset = args.model_dir or spec.model_dir, args.dataset or DEFAULT_DATASET
    splits = load_splits(dataset)
    if args.keep == "best" and not splits.valid_with_answers:
        raise UserError(f"--keep best: {dataset} has no valid rows with answers, so there is no eval loss to pick by")
    if args.report_to == "tensorboard" and find_spec("tensorboard") is None:
        raise UserError("--report-to tensorboard: tensorboard is not installed (pip install tensorboard)")
    if not folder_is_empty(model_dir):
        check_model_folder(spec, model_dir, args.trust_pickled_weights)

    device, dtype = pick_device()
    with state.main_process_first():  # the first process builds the tiny stand-in, the others reuse it
        base_dir = base_folder(spec, model_dir, splits)
    config = read_config(base_dir)
    check_fits_context(splits, load_tokenizer(base_dir, config.vocab_size), config.max_position_embeddings)
    is_tiny = base_dir != model_dir
    recipe = recipe or _fresh_recipe(args, is_tiny)
    if recipe.lora_rank > config.hidden_size:
        raise UserError(f"--lora-rank {recipe.lora_rank}: larger than the model's hidden size "
                        f"({config.hidden_size}); LoRA's rank is at most that")
    loaded = load_local(spec, base_dir, device, dtype, args.trust_pickled_weights)
    loaded.is_tiny = is_tiny
    return Run(spec, args, output_dir, logs_dir, checkpoints, model_dir, dataset, splits, recipe, loaded,
               device, dtype, state, started)


def per_epoch_test_batch(device: str, prompts: int) -> int:
    """Prompts per generate() call of the per-epoch test: on a GPU all at once (the lent H200: 0.8 s an epoch
    for the 60, against 1.2 to 3.8 s in batches of 16: docs/gpu.md); on CPU batches of 16, as the original."""
    return max(1, prompts) if device == "cuda" else DEFAULT_BATCH_SIZE


def header(run: Run) -> str:
    loaded, splits = run.loaded, run.splits
    return "\n".join([
        f"Oh-LoRA fine-tuning: {run.spec.display_name}" + (" (TINY STAND-IN)" if loaded.is_tiny else ""),
        f"model folder: {run.model_dir}" + (f" (empty; stand-in loaded from {loaded.model_dir})" if loaded.is_tiny else ""),
        f"dataset: {splits.path} ({len(splits.train)} train rows, {len(splits.valid)} valid rows, "
        f"{len(splits.valid_with_answers)} valid rows with answers for the eval loss)",
        f"adapter output: {run.output_dir} (keeps the {run.args.keep} epoch)",
        "hyperparameters: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(run.recipe).items()),
        f"LoRA targets: {', '.join(run.spec.lora_targets)}",
        f"device: {run.device}, dtype: {str(run.dtype).removeprefix('torch.')}, processes: {run.state.num_processes}",
        f"per-epoch test: {len(splits.valid)} valid prompts, "
        f"{per_epoch_test_batch(run.device, len(splits.valid))} per generate() call",
        library_versions(),
        f"resume: {run.args.resume}",
    ])


def _probe(splits: Splits):
    return splits.train[:: max(1, len(splits.train) // MATCH_PROBE_SIZE)][:MATCH_PROBE_SIZE]


def train(run: Run, log: RunLog, callbacks: Sequence[TrainerCallback] = (),
          test_batch_size: int | None = None, on_epoch_summary: Callable[[EpochSummary], None] | None = None,
          **trainer_overrides) -> tuple[SFTTrainer, EpochReport]:
    """LoRA SFT of the loaded model; returns the trainer (best or last epoch loaded, per --keep) and the report.

    For the training benchmark (the fine-tuning scripts leave them as they are): `callbacks` run before the
    run's own at every event, `test_batch_size` is the per-epoch test's generation batch (None: what
    per_epoch_test_batch gives the scripts), `on_epoch_summary` gets each epoch's summary row once it is
    complete, and `trainer_overrides` go to the SFTConfig over the recipe's (e.g. save_strategy="no").
    """
    set_seed(run.recipe.seed)
    is_main = run.state.is_main_process
    report = EpochReport([example.input_data for example in run.splits.valid], run.recipe, log,
                         has_eval=bool(run.splits.valid_with_answers),
                         batch_size=test_batch_size or per_epoch_test_batch(run.device, len(run.splits.valid)),
                         on_summary=on_epoch_summary)
    keep_best = dict(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False) \
        if run.args.keep == "best" else {}
    trainer = build_trainer(
        run.loaded.model, run.loaded.tokenizer, run.recipe, lora_config(run.spec, run.recipe), run.splits.train,
        run.splits.valid_with_answers, run.checkpoints.folder, run.device, run.dtype,
        callbacks=[*callbacks, report, resume.CheckpointLog(run.checkpoints.folder, log)],
        **(dict(report_to=run.args.report_to) | keep_best | trainer_overrides))
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RunProgress(log))
    if is_main:
        # Left by a kill during a save; the Trainer would count them among the checkpoints it keeps.
        for checkpoint in resume.remove_incomplete(run.checkpoints):
            print(f"skipped and removed {checkpoint}: incomplete (the run was stopped while writing it)")
        if run.resume_from is None:
            resume.write_settings(run.checkpoints.folder, resume.RunSettings(
                model=run.spec.name, model_dir=str(run.model_dir.resolve()), tiny_stand_in=run.loaded.is_tiny,
                dataset=str(run.dataset.resolve()), dataset_sha256=resume.sha256(run.dataset),
                processes=run.state.num_processes, recipe=dataclasses.asdict(run.recipe)))
    if run.resume_from is not None:
        done = resume.trainer_state(run.resume_from)
        print(f"resumed from {run.resume_from} with the settings in {run.checkpoints.folder / resume.RUN_SETTINGS_NAME}: "
              f"at epoch {round(done['epoch'])}/{run.recipe.epochs}, step {done['global_step']}/{done['max_steps']}")
    try:
        result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    except (OSError, RuntimeError) as error:
        if not disk_full(run.checkpoints.folder, error):
            raise
        raise UserError(f"no space left on {run.checkpoints.folder}: a checkpoint could not be written; the "
                        f"complete ones are kept: free some space and run again with --resume") from None
    if run.state.num_processes > 1:  # each process says what it did
        print(f"[rank {run.state.process_index}/{run.state.num_processes}] trained {trainer.state.global_step} steps "
              f"({len(trainer.get_train_dataloader())} per epoch), final train loss {result.training_loss:.4f}",
              file=sys.stderr)
    return trainer, report


def finish(run: Run, trainer: SFTTrainer, report: EpochReport, log: RunLog, log_path: Path) -> None:
    """Save the adapter, plot, test what was saved; the log ends with the table and where the adapter went."""
    best = best_epoch(report.rows)
    kept = (best.epoch if run.args.keep == "best" and best else round(trainer.state.epoch))
    save_adapter_atomically(trainer.model, run.loaded.tokenizer, run.output_dir)
    resume.remove_run_files(run.checkpoints.folder)  # the run is complete: its checkpoints are spent
    losses = epoch_losses(trainer.state.log_history)
    plot_path = log_path.with_suffix(".png")
    stand_in = " (TINY STAND-IN, not the real model)" if run.loaded.is_tiny else ""
    plot_losses(losses, plot_path, f"{run.spec.display_name}{stand_in} LoRA fine-tuning")

    # Test what was saved, not what is in memory: a fresh base with the saved adapter, as the chat loads it.
    del trainer
    reloaded = load_fine_tuned(run.spec, run.model_dir, run.output_dir, run.device, run.dtype, say=None,
                               trust_pickled=run.args.trust_pickled_weights)
    valid_inputs = [example.input_data for example in run.splits.valid]
    for round_number in range(1, FINAL_TEST_ROUNDS + 1):
        answers = generate_answers(reloaded.model, reloaded.tokenizer, valid_inputs,
                                   temperature=run.recipe.temperature, max_trials=run.recipe.max_trials,
                                   progress=f"final test {round_number}/{FINAL_TEST_ROUNDS}")
        title = f"final test {round_number}/{FINAL_TEST_ROUNDS} with the saved adapter (temperature {run.recipe.temperature})"
        log.detail(format_answers(title, answers))
        print(f"{title}: empty answers {empty_count(answers)}/{len(answers)}, ended at the end marker "
              f"{sum(answer.stop == STOP_MARKER for answer in answers)}/{len(answers)}")
    print(f"greedy answers to {len(_probe(run.splits))} train prompts vs the dataset, after training: "
          f"{match_report(reloaded.model, reloaded.tokenizer, _probe(run.splits))}")
    log.detail("per-epoch summary:\n" + epoch_table(report.rows))
    if best is not None:
        print(f"lowest eval loss: epoch {best.epoch} ({best.eval_loss:.4f}); the adapter saved is epoch {kept}'s "
              f"(--keep {run.args.keep})")
    print(f"total time: {time.time() - run.started:.1f} s")
    print(f"loss plot: {plot_path}")
    print(f"log: {log_path}")
    print(f"adapter saved to {run.output_dir}")


class _Silent(contextlib.redirect_stdout):
    """What the other processes of a multi-process run log: nothing."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())

    def detail(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


def fine_tune(spec: ModelSpec, args: argparse.Namespace) -> int:
    """Prepare, train, finish (args from llm.fine_tuning.options.build_parser); returns an exit code."""
    run = prepare(spec, args)
    is_main = run.state.is_main_process
    recovered = recover_interrupted_save(run.output_dir) if is_main else None
    log_path = log_file_path(run.logs_dir, args.log_name)
    with (RunLog(log_path, verbose=args.verbose) if is_main else _Silent()) as log:
        if run.loaded.is_tiny:
            print(tiny_notice(spec, run.model_dir, run.loaded.model_dir))
        print(header(run))
        if recovered:
            print(recovered)
        if is_main:
            print(f"greedy answers to {len(_probe(run.splits))} train prompts vs the dataset, before training: "
                  f"{match_report(run.loaded.model, run.loaded.tokenizer, _probe(run.splits))}")
        trainer, report = train(run, log)
        if is_main:
            finish(run, trainer, report, log, log_path)
    # The other processes wait for the main one's save and tests, then all leave the process group together: one
    # that exits still in it can abort in gloo's teardown, and torchrun then stops the main one mid-save.
    run.state.wait_for_everyone()
    run.state.destroy_process_group()
    return 0
