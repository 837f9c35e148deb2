"""The fine-tuning run both run_fine_tuning*.py scripts make, in three phases: prepare, train, finish.

prepare  checks every input and output place, then loads the data and the model (nothing written before)
train    LoRA SFT with TRL, a valid-prompt test and a summary line after every epoch, checkpoints for --resume
finish   saves the adapter (atomically), plots the losses, tests the saved adapter as the chat loads it
"""

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
from peft import prepare_model_for_kbit_training
from transformers import TrainerCallback, set_seed
from trl import SFTTrainer

from llm.common.adapters import load_fine_tuned
from llm.common.cli import UserError
from llm.common.data import Splits, check_fits_context, load_splits
from llm.common.device import Device, detect
from llm.common.inference import STOP_MARKER, format_answers, generate_answers
from llm.common.logs import Log, NoLog, RunLog, epoch_losses, library_versions, log_file_path, plot_losses
from llm.common.folders import ADAPTER, folder_is_empty
from llm.common.models import (
    LoadedModel, base_folder, check_model_folder, load_local, load_tokenizer, read_config, tiny_notice,
)
from llm.common.outputs import (
    check_not_busy, check_replaceable, check_writable_folder, output_lock, recover_interrupted_save, storage_error,
)
from llm.common.specs import DEFAULT_DATASET, ModelSpec, Recipe, recipe_for
from llm.common.training import build_trainer, lora_config, save_adapter_atomically
from llm.fine_tuning import resume
from llm.fine_tuning.options import FineTuningOptions
from llm.fine_tuning.speed import SpeedOptions, configure_generation, defaults_for, with_attention
from llm.fine_tuning.epochs import (
    EpochReport, EpochSummary, RunProgress, best_epoch, empty_count, epoch_table, match_report,
)

MATCH_PROBE_SIZE = 40  # train prompts answered greedily before and after training
FINAL_TEST_ROUNDS = 2


@dataclasses.dataclass
class Run:
    """Everything the train and finish phases need, resolved once by prepare."""

    spec: ModelSpec
    options: FineTuningOptions  # as asked; the resolved paths, recipe and speed options are the fields below
    output_dir: Path
    logs_dir: Path
    checkpoints: resume.Checkpoints
    model_dir: Path
    dataset: Path
    splits: Splits
    recipe: Recipe
    speed: SpeedOptions
    quantization: str  # how the base's weights are held: none, 4bit or 8bit
    loaded: LoadedModel
    device: Device
    dtype: torch.dtype
    state: PartialState
    started: float

    @property
    def resume_from(self) -> Path | None:
        return self.checkpoints.latest if self.options.resume else None


def check_output_places(output_dir: Path, logs_dir: Path) -> tuple[Path, Path]:
    """(output folder, logs folder) resolved, once both are usable and saving one cannot delete the other."""
    output_dir = check_replaceable(output_dir, "--output-dir", ADAPTER)
    logs_dir = check_writable_folder(logs_dir, "--logs-dir")
    for replaced in (output_dir, resume.checkpoint_dir_for(output_dir)):
        if logs_dir == replaced or logs_dir.is_relative_to(replaced):
            raise UserError(f"--logs-dir {logs_dir}: inside {replaced}, which the run replaces or removes; "
                            f"put the logs elsewhere")
    return output_dir, logs_dir


def _checkpoints(output_dir: Path, resuming: bool) -> resume.Checkpoints:
    """The run's checkpoints, when they fit what was asked: some to continue from with --resume, none without."""
    check_not_busy(output_dir, "--output-dir")  # a live run's checkpoints are not an unfinished run's
    checkpoints = resume.scan(resume.checkpoint_dir_for(output_dir))
    if resuming and checkpoints.latest is None:
        cut_off = f" ({', '.join(path.name for path in checkpoints.incomplete)}: cut off while being written)" \
            if checkpoints.incomplete else ""
        raise UserError(f"--resume: no complete checkpoint in {checkpoints.folder} to continue from{cut_off}: "
                        f"run without --resume to start over")
    if not resuming and checkpoints.complete:
        raise UserError(f"{checkpoints.folder} holds checkpoints of an unfinished run: "
                        f"add --resume to continue it, or delete that folder to start over")
    return checkpoints


def prepare(spec: ModelSpec, options: FineTuningOptions, held: contextlib.ExitStack | None = None) -> Run:
    """Check every input and output place, then load data and model; a UserError (one line) before any write.

    With `held`, the output folder is locked against a second run until `held` closes (the main process's)."""
    started = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())
    output_dir, logs_dir = check_output_places(options.output_dir or spec.adapter_dir,
                                               options.logs_dir or spec.logs_dir)
    checkpoints = _checkpoints(output_dir, options.resume)
    recipe = None
    if options.resume:
        recipe, model_dir, dataset, quantization = resume.resumed_settings(spec, options, checkpoints.folder,
                                                                           state.num_processes)
        resume.check_checkpoint_fits(checkpoints.latest, spec, recipe)
    else:
        model_dir, dataset = options.model_dir or spec.model_dir, options.dataset or DEFAULT_DATASET
        quantization = options.quantization or "none"
    splits = load_splits(dataset)
    if options.keep == "best" and not splits.valid_with_answers:
        raise UserError(f"--keep best: {dataset} has no valid rows with answers, so there is no eval loss to pick by")
    if options.report_to == "tensorboard" and find_spec("tensorboard") is None:
        raise UserError("--report-to tensorboard: tensorboard is not installed (pip install tensorboard)")
    if not folder_is_empty(model_dir):
        check_model_folder(spec, model_dir, options.trust_pickled_weights)

    device = detect()
    speed = defaults_for(device, options.speed)
    speed.check()
    reason = speed.unavailable(spec, device)
    if reason is not None:
        raise UserError(f"{speed.describe()}: {reason}")
    with state.main_process_first():  # the first process builds the tiny stand-in, the others reuse it
        base_dir = base_folder(spec, model_dir, splits)
    config = read_config(base_dir)
    check_fits_context(splits, load_tokenizer(base_dir, config.vocab_size), config.max_position_embeddings)
    is_tiny = base_dir != model_dir
    recipe = recipe or recipe_for(is_tiny, **options.recipe)
    if recipe.lora_rank > config.hidden_size:
        raise UserError(f"--lora-rank {recipe.lora_rank}: larger than the model's hidden size "
                        f"({config.hidden_size}); LoRA's rank is at most that")
    if held is not None and state.is_main_process:  # every check passed: from here on the run writes
        held.enter_context(output_lock(output_dir, "--output-dir"))
    dtype = device.dtype if speed.dtype == "auto" else getattr(torch, speed.dtype)
    if speed.tf32:
        torch.set_float32_matmul_precision("high")
    loaded = load_local(with_attention(spec, speed.attn), base_dir, device.kind, dtype, options.trust_pickled_weights,
                        quantization=quantization)
    if quantization != "none":  # QLoRA's preparation: norms in float32, inputs that carry gradients
        loaded.model = prepare_model_for_kbit_training(
            loaded.model, use_gradient_checkpointing=options.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    loaded.is_tiny = is_tiny
    return Run(spec, options, output_dir, logs_dir, checkpoints, model_dir, dataset, splits, recipe, speed,
               quantization, loaded, device, dtype, state, started)


def header(run: Run) -> str:
    loaded, splits = run.loaded, run.splits
    dtype = str(run.dtype).removeprefix("torch.")
    why = run.device.dtype_reason() if run.speed.dtype == "auto" else f"{dtype} (--dtype)"
    return "\n".join([
        f"Oh-LoRA fine-tuning: {run.spec.display_name}" + (" (TINY STAND-IN)" if loaded.is_tiny else ""),
        f"model folder: {run.model_dir}" + (f" (empty; stand-in loaded from {loaded.model_dir})" if loaded.is_tiny else ""),
        f"dataset: {splits.path} ({len(splits.train)} train rows, {len(splits.valid)} valid rows, "
        f"{len(splits.valid_with_answers)} valid rows with answers for the eval loss)",
        f"adapter output: {run.output_dir} (keeps the {run.options.keep} epoch)",
        "hyperparameters: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(run.recipe).items()),
        f"LoRA targets: {', '.join(run.spec.lora_targets)}",
        f"device: {run.device.describe()}; dtype: {why}; processes: {run.state.num_processes}",
        f"memory: {memory_line(run)}",
        f"estimate: {estimate(run)}",
        f"speed options: {run.speed.describe()}",
        *([config_line(run.options)] if run.options.config else []),
        f"per-epoch test: {len(splits.valid)} valid prompts, {run.speed.test_batch_size} per generate() call",
        library_versions(),
        f"resume: {run.options.resume}",
    ])


def estimate(run: Run) -> str:
    """What this run's options need with the real model on a GPU (the stand-in's own needs are a CPU's trifle)."""
    from llm.fine_tuning.benchmark.machine import peak_tflops_for
    from llm.fine_tuning.dry_run import estimate_line, plan_for

    plan, _, _ = plan_for(run.spec, run.options, run.splits, run.model_dir)
    return estimate_line(plan, peak_tflops_for(run.device.name) if run.device.kind == "cuda" else None)


def memory_line(run: Run) -> str:
    quantization = {"none": f"base weights in {str(run.dtype).removeprefix('torch.')} (no quantization)",
                    "4bit": "base weights in 4 bits (NF4, double quantisation; bitsandbytes), LoRA trained over them",
                    "8bit": "base weights in 8 bits (bitsandbytes), LoRA trained over them"}[run.quantization]
    return f"{quantization}; gradient checkpointing {'on' if run.options.gradient_checkpointing else 'off'}"


def config_line(options: FineTuningOptions) -> str:
    """What the --config file set, and what the command line gave instead."""
    settings = dataclasses.asdict(options)
    values = {**settings, **settings["recipe"], **settings["speed"]}
    parts = [f"{key}={value}" + ("" if values.get(key) == value else f" (the command line: {values.get(key)})")
             for key, value in options.from_config.items()]
    return f"config {options.config}: " + (", ".join(parts) or "sets nothing")


def _probe(splits: Splits):
    return splits.train[:: max(1, len(splits.train) // MATCH_PROBE_SIZE)][:MATCH_PROBE_SIZE]


def train(run: Run, log: Log, callbacks: Sequence[TrainerCallback] = (),
          on_epoch_summary: Callable[[EpochSummary], None] | None = None,
          **trainer_overrides) -> tuple[SFTTrainer, EpochReport]:
    """LoRA SFT of the loaded model; returns the trainer (best or last epoch loaded, per --keep) and the report.

    For the training benchmark (the fine-tuning scripts leave them as they are): `callbacks` run before the
    run's own at every event, `on_epoch_summary` gets each epoch's summary row once it is complete, and
    `trainer_overrides` go to the SFTConfig over the recipe's and the speed options' (e.g. save_strategy="no").
    """
    set_seed(run.recipe.seed)
    is_main = run.state.is_main_process
    report = EpochReport([example.input_data for example in run.splits.valid], run.recipe, log,
                         has_eval=bool(run.splits.valid_with_answers),
                         batch_size=run.speed.test_batch_size, on_summary=on_epoch_summary)
    keep_best = dict(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False) \
        if run.options.keep == "best" else {}
    configure_generation(run.loaded.model, run.speed)
    trainer = build_trainer(
        run.loaded.model, run.loaded.tokenizer, run.recipe, lora_config(run.spec, run.recipe), run.splits.train,
        run.splits.valid_with_answers, run.checkpoints.folder, run.device.kind, run.dtype,
        callbacks=[*callbacks, report, resume.CheckpointLog(run.checkpoints.folder, log)],
        quiet_steps=run.speed.quiet_steps, gradient_checkpointing=run.options.gradient_checkpointing,
        progress=RunProgress(log),
        **(dict(report_to=run.options.report_to) | keep_best | run.speed.trainer_overrides() | trainer_overrides))
    if is_main:
        # Left by a kill during a save; the Trainer would count them among the checkpoints it keeps.
        for checkpoint in resume.remove_incomplete(run.checkpoints):
            print(f"skipped and removed {checkpoint}: incomplete (the run was stopped while writing it)")
        if run.resume_from is None:
            resume.write_settings(run.checkpoints.folder, resume.RunSettings(
                model=run.spec.name, model_dir=str(run.model_dir.resolve()), tiny_stand_in=run.loaded.is_tiny,
                dataset=str(run.dataset.resolve()), dataset_sha256=resume.sha256(run.dataset),
                processes=run.state.num_processes, recipe=dataclasses.asdict(run.recipe),
                quantization=run.quantization))
    if run.resume_from is not None:
        done = resume.trainer_state(run.resume_from)
        print(f"resumed from {run.resume_from} with the settings in {run.checkpoints.folder / resume.RUN_SETTINGS_NAME}: "
              f"at epoch {round(done['epoch'])}/{run.recipe.epochs}, step {done['global_step']}/{done['max_steps']}")
    try:
        result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    except Exception as error:
        if not storage_error(error, run.checkpoints.folder):
            raise
        raise UserError(f"no space left on {run.checkpoints.folder}: a checkpoint could not be written; the "
                        f"complete ones are kept: free some space and run again with --resume") from None
    if run.state.num_processes > 1:  # each process says what it did
        print(f"[rank {run.state.process_index}/{run.state.num_processes}] trained {trainer.state.global_step} steps "
              f"({len(trainer.get_train_dataloader())} per epoch), final train loss {result.training_loss:.4f}",
              file=sys.stderr)
    return trainer, report


def finish(run: Run, trainer: SFTTrainer, report: EpochReport, log: Log, log_path: Path) -> None:
    """Save the adapter, plot, test what was saved; the log ends with the table and where the adapter went."""
    best = best_epoch(report.rows)
    kept = (best.epoch if run.options.keep == "best" and best else round(trainer.state.epoch))
    save_adapter_atomically(trainer.model, run.loaded.tokenizer, run.output_dir, run.quantization)
    resume.remove_run_files(run.checkpoints.folder)  # the run is complete: its checkpoints are spent
    losses = epoch_losses(trainer.state.log_history)
    plot_path = log_path.with_suffix(".png")
    stand_in = " (TINY STAND-IN, not the real model)" if run.loaded.is_tiny else ""
    plot_losses(losses, plot_path, f"{run.spec.display_name}{stand_in} LoRA fine-tuning")

    # Test what was saved, not what is in memory: a fresh base with the saved adapter, as the chat loads it.
    del trainer
    reloaded = load_fine_tuned(run.spec, run.model_dir, run.output_dir, run.device.kind, run.dtype, say=None,
                               trust_pickled=run.options.trust_pickled_weights)
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
              f"(--keep {run.options.keep})")
    print(f"total time: {time.time() - run.started:.1f} s")
    print(f"loss plot: {plot_path}")
    print(f"log: {log_path}")
    print(f"adapter saved to {run.output_dir}")


class _OtherProcess(NoLog, contextlib.redirect_stdout):
    """What the other processes of a multi-process run log and print: nothing."""

    def __init__(self) -> None:
        contextlib.redirect_stdout.__init__(self, io.StringIO())


def fine_tune(spec: ModelSpec, options: FineTuningOptions) -> int:
    """Prepare, train, finish, with the output folder locked against a second run; returns an exit code."""
    with contextlib.ExitStack() as held:
        return _fine_tune(spec, prepare(spec, options, held))


def _fine_tune(spec: ModelSpec, run: Run) -> int:
    options = run.options
    is_main = run.state.is_main_process
    recovered = recover_interrupted_save(run.output_dir) if is_main else None
    log_path = log_file_path(run.logs_dir, options.log_name)
    with (RunLog(log_path, verbose=options.verbose) if is_main else _OtherProcess()) as log:
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
