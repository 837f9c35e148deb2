"""The model-selection run: per candidate, a short LoRA fine-tuning test and a two-sample inference test.

Everything heavy is the shared pipeline's (llm.common); this module only decides what runs, measures
it with llm.common.measure, and writes the per-candidate and summary files.
"""

import csv
import dataclasses
import gc
import io
import math
import re
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, set_seed
from trl import SFTTrainer

from llm.common.cli import UserError
from llm.common.data import Example, Splits, check_fits_context, load_splits
from llm.common.inference import Answer, generate_answers
from llm.common.measure import Measurement, measure
from llm.common.outputs import check_not_busy, check_writable_folder, output_lock, write_text_atomically
from llm.common.folders import folder_is_empty, folder_model_type
from llm.common.device import Device, detect, host_description
from llm.common.models import LoadedModel, ensure_tiny_model, load_local
from llm.common.logs import epoch_losses, lines_above_bars
from llm.common.training import build_trainer, lora_config
from llm.model_selection.candidates import Candidate
from llm.model_selection.metrics import summarise
from llm.common.specs import SPECS, ModelSpec, Recipe, recipe_for, repo_relative, spec_for_architecture
from llm.model_selection.options import SelectionOptions

SAMPLES_PER_PROMPT = 2  # self-repetition compares two samples of the same prompt
INFERENCE_MAX_TRIALS = 1  # an empty answer is counted, not generated again
TINY_SUFFIX = " (tiny stand-in)"
MAX_FAILURE_CHARS = 200  # a failed row's status stays one readable line
SUMMARY_CSV = "model_selection_result.csv"
SUMMARY_MD = "model_selection_result.md"
METRIC_COLUMNS = list(summarise([], []))  # the keys summarise returns, in its order
SUMMARY_COLUMNS = [
    "name", "is_tiny", "status", "architecture", "train_pairs", "epochs", "learning_rate",
    "fine_tuning_time_s", "fine_tuning_peak_mb", "inference_time_s", "inference_peak_mb", "peak_kind",
    "final_train_loss", "final_eval_loss", *METRIC_COLUMNS,
]
FINE_TUNING_COLUMNS = ["epoch", "train_loss", "eval_loss"]
INFERENCE_COLUMNS = [
    "prompt", "expected_memory_tag", "sample_1", "sample_2", "stopped_1", "stopped_2",
    "output_tokens_1", "output_tokens_2",
]
# Markdown table: (column, header, digits); digits None = text.
MD_COLUMNS = [
    ("name", "Candidate", None), ("is_tiny", "Tiny", None), ("status", "Status", None),
    ("fine_tuning_time_s", "FT time (s)", 1), ("fine_tuning_peak_mb", "FT peak (MB)", 0),
    ("inference_time_s", "Inference time (s)", 1), ("inference_peak_mb", "Inference peak (MB)", 0),
    ("peak_kind", "Peak kind", None), ("final_eval_loss", "Eval loss", 3),
    ("empty_answer_rate", "Empty", 3), ("stop_rate", "Stop", 3), ("self_repetition_rate", "Self-rep.", 3),
    ("answer_hangul_ratio", "Hangul", 3), ("memory_tag_accuracy", "Tag acc.", 3),
    ("memory_tag_key_accuracy", "Tag key acc.", 3),
]

# What the terminal shows of the candidates that ran (the markdown file has every column): fits 120 columns.
TERMINAL_COLUMNS = [("fine_tuning_time_s", "FT s", 1), ("inference_time_s", "infer s", 1),
                    ("inference_peak_mb", "peak MB", 0), ("final_eval_loss", "eval loss", 3), ("stop_rate", "stop", 3),
                    ("answer_hangul_ratio", "Hangul", 3), ("memory_tag_accuracy", "tag acc.", 3)]


@dataclass
class Job:
    """One summary row: a candidate to test (spec set) or one already decided (status set)."""

    name: str
    is_tiny: bool
    model_dir: Path | None = None
    spec: ModelSpec | None = None
    status: str = ""


def file_stem(name: str) -> str:
    """A candidate name as a file-name part: 'polyglot-ko-1.3b (tiny stand-in)' -> 'polyglot-ko-1.3b_tiny_stand-in'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def train_subset(train: list[Example], size: int) -> list[Example]:
    """`size` train pairs spread evenly over the file, so tagged and plain rows both appear."""
    return train[:: max(1, len(train) // size)][:size]


def spec_for(candidate: Candidate, model_dir: Path) -> ModelSpec:
    """The project's spec for the two known architectures; a generic one (peft's default LoRA targets) else."""
    # An unreadable config falls back to the listed architecture; check_model_folder then says what is wrong.
    architecture = folder_model_type(model_dir) or candidate.architecture
    known = spec_for_architecture(architecture)
    if known is not None:
        return dataclasses.replace(known, display_name=candidate.name, model_dir=model_dir)
    # Untested beyond the two known architectures: empty lora_targets means "let peft choose".
    return ModelSpec(
        name=file_stem(candidate.name), display_name=candidate.name, shape="", architecture=architecture,
        model_dir=model_dir, adapter_dir=model_dir, logs_dir=model_dir, lora_targets=(),
        full_config={}, tiny_config={}, special_tokens={}, training_script="llm/model_selection/run_model_selection.py",
    )


def plan_jobs(candidates: list[Candidate], models_dir: Path, tiny: bool) -> list[Job]:
    """A job per candidate (skipped when its folder has no weights), then the tiny stand-ins."""
    jobs = []
    for candidate in candidates:
        model_dir = models_dir / candidate.folder
        if folder_is_empty(model_dir):
            jobs.append(Job(candidate.name, False, status=f"skipped: no weights in {repo_relative(model_dir)}"))
        else:
            jobs.append(Job(candidate.name, False, model_dir, spec_for(candidate, model_dir)))
    if tiny:
        for candidate in candidates:
            for spec in SPECS.values():
                if candidate.folder == spec.model_dir.name:
                    jobs.append(Job(candidate.name + TINY_SUFFIX, True, spec=spec))
    return jobs


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({column: _csv_value(row.get(column)) for column in columns} for row in rows)
    write_text_atomically(path, text.getvalue())


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def context_length(model: PreTrainedModel) -> int:
    """Tokens the model reads at most; 2048 for a generic architecture whose config does not say."""
    return getattr(model.config, "max_position_embeddings", None) or 2048


def fine_tuning_test(loaded: LoadedModel, spec: ModelSpec, splits: Splits, train: list[Example], recipe: Recipe,
                     device: str, dtype: torch.dtype) -> tuple[SFTTrainer, Measurement]:
    """LoRA SFT with the recipe on `train` (eval loss on the valid rows with answers each epoch), measured."""
    set_seed(recipe.seed)
    with tempfile.TemporaryDirectory(prefix="ohlora-selection-") as scratch:  # nothing is saved there
        trainer = build_trainer(loaded.model, loaded.tokenizer, recipe, lora_config(spec, recipe), train,
                                splits.valid_with_answers, Path(scratch), device, dtype,
                                save_strategy="no", logging_strategy="epoch")
        _, measurement = measure(trainer.train)
    return trainer, measurement


def inference_test(trainer: SFTTrainer, tokenizer: PreTrainedTokenizerBase, inputs: list[str], recipe: Recipe,
                   name: str) -> tuple[list[list[Answer]], Measurement]:
    """Every input answered SAMPLES_PER_PROMPT times at the recipe temperature, one trial each, measured."""
    set_seed(recipe.seed)
    return measure(lambda: [
        generate_answers(trainer.model, tokenizer, inputs, temperature=recipe.temperature,
                         max_trials=INFERENCE_MAX_TRIALS, progress=f"{name}: sample {k}/{SAMPLES_PER_PROMPT}")
        for k in range(1, SAMPLES_PER_PROMPT + 1)
    ])


def run_job(job: Job, splits: Splits, train: list[Example], options: SelectionOptions, device: str,
            dtype: torch.dtype) -> dict:
    """Fine-tune and test one candidate; write its two files; return its summary row."""
    spec = job.spec
    if job.is_tiny:
        tiny_dir = ensure_tiny_model(spec, splits)
        print(f"{job.name}: TINY RANDOMLY INITIALISED {spec.architecture} model built by this project "
              f"({repo_relative(tiny_dir)}); its numbers only show that the pipeline works")
        loaded = load_local(spec, tiny_dir, device, dtype)
    else:
        loaded = load_local(spec, job.model_dir, device, dtype)
    check_fits_context(splits, loaded.tokenizer, context_length(loaded.model))
    recipe = recipe_for(job.is_tiny, epochs=options.epochs, seed=options.seed)

    trainer, fine_tuning = fine_tuning_test(loaded, spec, splits, train, recipe, device, dtype)
    losses = [dataclasses.asdict(row) for row in epoch_losses(trainer.state.log_history)]
    _write_csv(options.output_dir / f"fine_tuning_test_result_{file_stem(job.name)}.csv", FINE_TUNING_COLUMNS, losses)

    valid = splits.valid
    samples, inference = inference_test(trainer, loaded.tokenizer, [e.input_data for e in valid], recipe, job.name)
    first, second = samples
    _write_csv(options.output_dir / f"inference_test_result_{file_stem(job.name)}.csv", INFERENCE_COLUMNS, [
        {"prompt": example.input_data, "expected_memory_tag": example.memory, "sample_1": a.text, "sample_2": b.text,
         "stopped_1": a.stopped, "stopped_2": b.stopped, "output_tokens_1": a.output_tokens,
         "output_tokens_2": b.output_tokens}
        for example, a, b in zip(valid, first, second)
    ])
    metrics = summarise([(a.text, b.text) for a, b in zip(first, second)],
                        [(a.stopped, b.stopped) for a, b in zip(first, second)],
                        [example.memory for example in valid])
    return {
        "architecture": spec.architecture, "train_pairs": len(train), "epochs": recipe.epochs,
        "learning_rate": recipe.learning_rate,
        "fine_tuning_time_s": fine_tuning.seconds, "fine_tuning_peak_mb": fine_tuning.peak_mb,
        "inference_time_s": inference.seconds, "inference_peak_mb": inference.peak_mb,
        "peak_kind": fine_tuning.peak_kind if fine_tuning.peak_kind == inference.peak_kind
        else f"{fine_tuning.peak_kind} / {inference.peak_kind}",
        "final_train_loss": next((row["train_loss"] for row in reversed(losses) if row["train_loss"] is not None), None),
        "final_eval_loss": next((row["eval_loss"] for row in reversed(losses) if row["eval_loss"] is not None), None),
        **metrics,
    }


def _md_value(row: dict, column: str, digits: int | None) -> str:
    value = row.get(column)
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if digits is None:
        return str(value).replace("|", "\\|")
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(rows: list[dict]) -> str:
    """The summary as a markdown table: '–' where a candidate did not run, 'n/a' where nothing was measured."""
    lines = ["| " + " | ".join(header for _, header, _ in MD_COLUMNS) + " |",
             "|" + "|".join("---" if digits is None else "---:" for _, _, digits in MD_COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_md_value(row, column, digits) for column, _, digits in MD_COLUMNS) + " |")
    return "\n".join(lines)


def terminal_table(rows: list[dict]) -> str:
    """The candidates that ran, a few columns wide; the others' status lines were printed as they came."""
    ran = [row for row in rows if row["status"] == "ok"]
    width = max(len("candidate"), *(len(row["name"]) for row in ran))
    lines = [f"{'candidate':<{width}}" + "".join(f"  {header:>9}" for _, header, _ in TERMINAL_COLUMNS)]
    lines += [f"{row['name']:<{width}}" + "".join(f"  {_md_value(row, column, digits):>9}"
                                                  for column, _, digits in TERMINAL_COLUMNS) for row in ran]
    return "\n".join(lines)


def write_summary(output_dir: Path, rows: list[dict], header: str) -> None:
    _write_csv(output_dir / SUMMARY_CSV, SUMMARY_COLUMNS, rows)
    write_text_atomically(output_dir / SUMMARY_MD, f"{header}\n\n{markdown_table(rows)}\n")


def run_header(argv: list[str], options: SelectionOptions, splits: Splits, train_pairs: int,
               device: Device) -> str:
    """What the markdown result says about its run: date, machine, command and the test's settings."""
    return "\n".join([
        "# Model selection result",
        "",
        f"- date: {time.strftime('%Y-%m-%d')}; machine: {host_description()}; device {device.describe()}, "
        f"dtype {device.dtype_name}",
        f"- command: `{shlex.join(['python', 'llm/model_selection/run_model_selection.py', *argv])}`",
        f"- dataset: {repo_relative(splits.path)}; {train_pairs} train pairs x {options.epochs} epochs of LoRA fine-tuning "
        f"(eval loss on {len(splits.valid_with_answers)} valid rows after each epoch, included in the time); "
        f"{len(splits.valid)} valid prompts x {SAMPLES_PER_PROMPT} samples at temperature {Recipe.temperature}, "
        f"max_trials {INFERENCE_MAX_TRIALS} (empty answers counted, not retried)",
        "- tiny stand-ins are random-init models built by the project: their numbers show that the pipeline "
        "works, nothing about the real models",
    ])


def main(options: SelectionOptions, candidates: list[Candidate], argv: list[str]) -> int:
    """Check every input, then run every planned candidate and write the files, the output folder locked against
    a second run; returns an exit code."""
    splits = load_splits(options.dataset)
    check_writable_folder(options.output_dir, "--output-dir")
    check_not_busy(options.output_dir, "--output-dir")
    if options.candidates:
        candidates = [c for c in candidates if c.name in options.candidates]
    jobs = plan_jobs(candidates, options.models_dir, tiny=not options.no_tiny)
    if all(job.status for job in jobs):  # only skipped rows: a table of them would replace a real comparison
        raise UserError(f"no candidate has weights under {options.models_dir}"
                        + (" and --no-tiny leaves out the stand-ins" if options.no_tiny else "")
                        + ": nothing to compare (see llm/models/README.md for where the weights go)")
    with output_lock(options.output_dir, "--output-dir"), lines_above_bars():  # long lines break between words
        return _run_jobs(jobs, splits, options, argv)


def _run_jobs(jobs: list[Job], splits: Splits, options: SelectionOptions, argv: list[str]) -> int:
    train = train_subset(splits.train, options.train_pairs)
    device = detect()
    header = run_header(argv, options, splits, len(train), device)
    options.output_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict] = []
    for number, job in enumerate(jobs, start=1):
        row = {"name": job.name, "is_tiny": job.is_tiny, "status": job.status}
        if not job.status:
            where = repo_relative(job.model_dir) if job.model_dir else "tiny stand-in"
            print(f"[{number}/{len(jobs)}] {job.name}: testing ({where})", flush=True)
            try:
                row |= run_job(job, splits, train, options, device.kind, device.dtype)
                row["status"] = "ok"
            except Exception as error:  # one candidate failing must not stop the comparison
                if not isinstance(error, UserError):
                    traceback.print_exc()
                message = " ".join(str(error).split()) or type(error).__name__
                message = message if len(message) <= MAX_FAILURE_CHARS else message[:MAX_FAILURE_CHARS - 1] + "…"
                row["status"] = f"failed: {message}"
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        print(f"[{number}/{len(jobs)}] {job.name}: {row['status']}", flush=True)
        rows.append(row)
        write_summary(options.output_dir, rows, header)  # after every row, so an interrupted run keeps its results
    if any(row["status"] == "ok" for row in rows):
        print(terminal_table(rows))
    print(f"results: {options.output_dir / SUMMARY_CSV}\n"
          f"         {options.output_dir / SUMMARY_MD} (every column, with the run's date, machine and command)")
    failed = [row["name"] for row in rows if row["status"].startswith("failed")]
    if failed:
        print(f"error: {len(failed)} candidate(s) failed: {', '.join(failed)} (their rows say why)", file=sys.stderr)
        return 1
    return 0
