"""What both Unsloth measurement scripts share: the options, the measured work, the results row and the log.

Each run answers valid prompts (inference) and LoRA-fine-tunes on train pairs (fine-tuning), measuring wall
time and peak memory of each with llm.common.measure. Only loading the model and attaching LoRA differ
between the two scripts; they pass those in as a Side.
"""

import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed

from llm.common.cli import UserError, error_line
from llm.common.data import Example, Splits, check_fits_context, load_splits
from llm.common.inference import format_answers, generate_answers
from llm.common.logs import LIBRARIES, RunLog, library_versions, log_file_path
from llm.common.measure import Measurement, measure
from llm.common.folders import folder_is_empty
from llm.common.device import Device, detect, host_description
from llm.common.models import (
    build_full_size, check_model_folder, ensure_tiny_model, load_local, load_tokenizer, tiny_notice,
)
from llm.common.training import build_trainer, lora_config
from llm.unsloth_test import RESULT_FIELDS, STATUS_OK, WITHOUT, UnslothTestOptions, append_result, read_results
from llm.common.specs import (
    DEFAULT_BATCH_SIZE, GEMMA, MAX_LENGTH, SHAPES, TINY_CONTEXT, ModelSpec, Recipe, repo_relative,
)

EVAL_PAIRS = 5  # the original experiment's eval: 5 valid pairs after each epoch
SEQ_LENGTH = TINY_CONTEXT  # the length every pair must fit, here as on the tiny stand-in: all the dataset's do
UNAVAILABLE_EXIT = 3


@dataclass(frozen=True)
class Subject:
    """The model a run measures, resolved from the options before anything is written."""

    spec: ModelSpec
    label: str  # the results.csv `model` column: runs are compared only with runs of the same label
    short: str  # in the log file name
    weights_dir: Path | None  # a folder in the Hugging Face layout; None for --shape (built, not loaded)
    tokenizer_dir: Path | None = None  # --shape: the tiny stand-in whose tokenizer drives the model
    notice: str | None = None  # printed and logged: the run is not on real weights
    trust_pickled: bool = False  # --trust-pickled-weights: the folder's .bin weights may be loaded


@dataclass(frozen=True)
class Side:
    """With or without Unsloth: what differs between the two scripts; everything else is shared so that the work
    is the same."""

    unsloth: str  # the results.csv `unsloth` column: WITHOUT or one of WITH_SIDES
    load: Callable[[Subject, str, torch.dtype, Path], tuple[PreTrainedModel, PreTrainedTokenizerBase]]
    # Returns the model to train and the LoraConfig for SFTTrainer (None when LoRA is attached already).
    attach_lora: Callable[[PreTrainedModel, LoraConfig, Recipe], tuple[PreTrainedModel, LoraConfig | None]]
    prepare_inference: Callable[[PreTrainedModel], None] = lambda model: None
    libraries: tuple[str, ...] = LIBRARIES  # versions printed in the log
    failure_hint: Callable[[BaseException], str | None] = lambda error: None  # what to try after a failure


def describe_model(options: UnslothTestOptions) -> tuple[ModelSpec, str, str]:
    """(spec, label, short name) from the options alone: cheap, builds nothing."""
    if options.shape:
        if options.model_dir is not None:
            raise UserError("--shape builds a random model of the real size: leave out --model-dir")
        return SHAPES[options.shape], f"{options.shape} (full size, random weights)", options.shape
    model_dir = options.model_dir or GEMMA.model_dir
    if folder_is_empty(model_dir):
        return GEMMA, f"{GEMMA.display_name} tiny stand-in", "tiny"
    return GEMMA, f"{GEMMA.display_name} ({repo_relative(model_dir)})", "weights"


def resolve_subject(options: UnslothTestOptions, splits: Splits) -> Subject:
    """The model to measure; a bad weights folder stops here, before anything is written."""
    spec, label, short = describe_model(options)
    if options.shape:
        tiny_dir = ensure_tiny_model(spec, splits)
        notice = (
            f"NOTICE: --shape {options.shape} is a RANDOMLY INITIALISED {spec.display_name} of the full real size "
            f"(config: {spec.full_config['num_hidden_layers']} layers, d_model {spec.full_config['hidden_size']}, "
            f"vocab {spec.full_config['vocab_size']}). Time and memory are at real scale; the answers are noise.\n"
            f"NOTICE: it is driven by the tiny stand-in's tokenizer ({repo_relative(tiny_dir)}): all its ids are below the "
            f"model's vocabulary, so every forward pass costs what the real model's does, but a text becomes a "
            f"different number of tokens than with the real tokenizer. A random model never writes the end "
            f"marker, so every answer runs to the length limit: more generation than a trained model does."
        )
        return Subject(spec, label, short, None, tiny_dir, notice)
    model_dir = options.model_dir or GEMMA.model_dir
    if short == "tiny":
        tiny_dir = ensure_tiny_model(spec, splits)
        return Subject(spec, label, short, tiny_dir, notice=tiny_notice(spec, model_dir, tiny_dir))
    check_model_folder(spec, model_dir, options.trust_pickled_weights)
    return Subject(spec, label, short, model_dir, trust_pickled=options.trust_pickled_weights)


def pick_examples(options: UnslothTestOptions, splits: Splits) -> tuple[list[str], list[Example], list[Example]]:
    """The first N valid prompts, the first N train pairs and the first valid pairs with answers, for eval."""
    wanted = [("--prompts", options.prompts, splits.valid, "valid prompts"),
              ("--train-pairs", options.train_pairs, splits.train, "train pairs"),
              ("eval", EVAL_PAIRS, splits.valid_with_answers, "valid pairs with answers")]
    for option, count, examples, what in wanted:
        if count > len(examples):
            raise UserError(f"{option}: {count} {what} asked for, but {splits.path} has only {len(examples)}")
    return ([example.input_data for example in splits.valid[:options.prompts]], splits.train[:options.train_pairs],
            splits.valid_with_answers[:EVAL_PAIRS])


def load_plain(subject: Subject, device: str, dtype: torch.dtype,
               workdir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Without Unsloth: transformers loads the weights, or the full-size random model is built in memory."""
    if subject.weights_dir is None:
        tokenizer = load_tokenizer(subject.tokenizer_dir)
        return build_full_size(subject.spec, tokenizer, device, dtype), tokenizer
    loaded = load_local(subject.spec, subject.weights_dir, device, dtype, subject.trust_pickled)
    return loaded.model, loaded.tokenizer


# Without Unsloth, SFTTrainer attaches LoRA itself from the LoraConfig.
PLAIN = Side(WITHOUT, load_plain, lambda model, config, recipe: (model, config))


def new_row(options: UnslothTestOptions, side: str, label: str, device: Device) -> dict[str, object]:
    row: dict[str, object] = {field: "" for field in RESULT_FIELDS}
    row.update(date=datetime.now().strftime("%Y-%m-%d %H:%M"), machine=options.machine or host_description(),
               device=f"{device.describe()}, {device.dtype_name}", model=label, unsloth=side, prompts=options.prompts,
               train_pairs=options.train_pairs, epochs=options.epochs)
    return row


def _record(row: dict[str, object], part: str, measurement: Measurement) -> None:
    row[f"{part}_s"] = f"{measurement.seconds:.2f}"
    row[f"{part}_peak_mb"] = f"{measurement.peak_mb:.1f}"
    if measurement.process_mb is not None:
        row[f"{part}_process_mb"] = f"{measurement.process_mb:.1f}"
    kinds = [kind for kind in (row["peak_memory_kind"], measurement.peak_kind) if kind]
    row["peak_memory_kind"] = " / ".join(dict.fromkeys(kinds))


def _describe(part: str, measurement: Measurement) -> str:
    process = f", process {measurement.process_mb:,.0f} MB (nvidia-smi)" if measurement.process_mb is not None else ""
    return f"{part}: {measurement.seconds:.2f} s, peak {measurement.peak_mb:,.0f} MB ({measurement.peak_kind}){process}"


def _command() -> str:
    return shlex.join([repo_relative(Path(sys.argv[0])), *sys.argv[1:]])


def _header(side: Side, subject: Subject, options: UnslothTestOptions, device_text: str,
            recipe: Recipe) -> str:
    which, _, setting = side.unsloth.partition(" ")
    return "\n".join([
        f"Oh-LoRA Unsloth test, {which.upper()} Unsloth{' ' + setting if setting else ''}: {subject.label}",
        f"command: {_command()}",
        f"weights: {repo_relative(subject.weights_dir) if subject.weights_dir else 'none (built from the config)'}",
        f"device: {device_text}",
        f"inference: {options.prompts} valid prompts, greedy, batches of up to {DEFAULT_BATCH_SIZE}, "
        f"{MAX_LENGTH} tokens per sequence (prompt included)",
        f"fine-tuning: LoRA r={recipe.lora_rank} alpha={recipe.lora_alpha} dropout={recipe.lora_dropout} on "
        f"{', '.join(subject.spec.lora_targets)}; {options.train_pairs} train pairs x {options.epochs} epochs, "
        f"train batch {recipe.batch_size}, eval on {EVAL_PAIRS} valid pairs after each epoch, lr {recipe.learning_rate}",
        f"dataset: {repo_relative(options.dataset)}",
        f"results file: {repo_relative(options.results)}",
        library_versions(side.libraries),
    ])


def _fine_tune(side: Side, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, subject: Subject,
               recipe: Recipe, train: list[Example], evals: list[Example], device: str, dtype: torch.dtype,
               workdir: Path) -> tuple[int, float]:
    """The measured fine-tuning: attach LoRA, train (with eval after each epoch); returns steps and train loss."""
    model, peft_config = side.attach_lora(model, lora_config(subject.spec, recipe), recipe)
    trainer = build_trainer(model, tokenizer, recipe, peft_config, train, evals, workdir / "checkpoints", device,
                            dtype, save_strategy="no")
    result = trainer.train()
    return trainer.state.global_step, result.training_loss


def run(side: Side, options: UnslothTestOptions) -> int:
    """Parse options, measure inference and fine-tuning, append the row, write the log; returns the exit code."""
    # Everything that can be wrong with the inputs is found before anything is written.
    splits = load_splits(options.dataset)
    prompts, train, evals = pick_examples(options, splits)
    read_results(options.results)
    subject = resolve_subject(options, splits)
    check_fits_context(splits, load_tokenizer(subject.weights_dir or subject.tokenizer_dir), SEQ_LENGTH)
    device = detect()
    dtype, recipe = device.dtype, Recipe(epochs=options.epochs)
    row = new_row(options, side.unsloth, subject.label, device)
    log_path = log_file_path(options.logs_dir, f"{side.unsloth.split()[0]}_unsloth_{subject.short}")

    with RunLog(log_path) as log, tempfile.TemporaryDirectory(prefix="unsloth_test-") as workdir:
        if subject.notice:
            log.notice(subject.notice)
        print(_header(side, subject, options, row["device"], recipe))
        set_seed(recipe.seed)
        started = time.perf_counter()
        model, tokenizer = side.load(subject, device.kind, dtype, Path(workdir))
        parameters = sum(parameter.numel() for parameter in model.parameters())
        print(f"model ready in {time.perf_counter() - started:.1f} s (not measured): {parameters:,} parameters")
        try:
            side.prepare_inference(model)
            answers, inference = measure(lambda: generate_answers(model, tokenizer, prompts, progress="inference"))
            _record(row, "inference", inference)
            print(format_answers(f"inference: {len(prompts)} valid prompts (greedy)", answers))
            print(_describe("inference", inference))
            (steps, loss), fine_tuning = measure(lambda: _fine_tune(
                side, model, tokenizer, subject, recipe, train, evals, device.kind, dtype, Path(workdir)))
            _record(row, "finetune", fine_tuning)
            print(f"fine-tuning: {steps} steps, train loss {loss:.4f}")
            print(_describe("fine-tuning", fine_tuning))
        except Exception as error:
            row["status"] = f"failed: {error_line(error)}"
            append_result(options.results, row)
            print(f"{row['status']} (row appended to {repo_relative(options.results)})")
            hint = side.failure_hint(error)
            if hint:
                print(hint)
                print(hint, file=sys.stderr)
            if isinstance(error, torch.OutOfMemoryError):  # an expected outcome on a small GPU, not a bug
                return 1
            raise
        row["status"] = STATUS_OK
        append_result(options.results, row)
        print(f"row appended to {repo_relative(options.results)}: " + ", ".join(f"{key}={row[key]}" for key in RESULT_FIELDS))
        print(f"log: {log_path}")
    return 0


def record_unavailable(reason: str, options: UnslothTestOptions) -> int:
    """Where Unsloth cannot run: a row and a log saying why, the reason as one line on screen, exit code 3."""
    pick_examples(options, load_splits(options.dataset))  # bad input is reported as such, not as unavailable
    read_results(options.results)
    _, label, short = describe_model(options)
    status = f"unavailable: {reason}"
    row = new_row(options, options.side, label, detect()) | {"status": status}
    log_path = log_file_path(options.logs_dir, f"with_unsloth_{short}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(
        f"Oh-LoRA Unsloth test, WITH Unsloth: {label}\n"
        f"command: {_command()}\n"
        f"device: {row['device']}\n{status}\nnothing was measured; row appended to {repo_relative(options.results)}\n",
        encoding="utf-8",
    )
    append_result(options.results, row)
    print(status, file=sys.stderr)
    return UNAVAILABLE_EXIT
