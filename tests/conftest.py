"""Shared fixtures: a small dataset cut from the real one, tiny models saved like downloads, trained adapters."""

import ast
import contextlib
import csv
import gc
import io
import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import pytest

try:
    import peft  # noqa: F401 (the first of the project's libraries this file needs)
except ModuleNotFoundError as missing:  # pytest started outside the README's virtualenv
    print(f"error: {missing}; run the tests in the project's virtualenv, as the README says: "
          f". .venv/bin/activate && python -m pytest -q", file=sys.stderr)
    sys.exit(2)
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm.common.data import load_splits
from llm.common.models import build_tiny_model, build_tiny_tokenizer, prepare_tokenizer, save_in_hub_layout
from llm.common.specs import GEMMA, POLYGLOT, Recipe
from llm.common.training import lora_config, save_adapter_atomically

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "llm" / "OhLoRA_fine_tuning.csv"
SMALL_TRAIN_ROWS = 24
SMALL_VALID_ROWS = 6


def pytest_collection_finish(session: pytest.Session) -> None:
    """What the imports made (torch, transformers, peft...: ~0.4 million objects) lives as long as the session:
    frozen, it is no longer walked by each full garbage collection (0.25 s apiece; accelerate asks for one after
    every training, and the scripts run in this process train a few dozen times)."""
    gc.freeze()


@pytest.fixture(scope="session", autouse=True)
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny stand-ins are built in a temporary folder, never in llm/models/."""
    folder = tmp_path_factory.mktemp("tiny-cache")
    os.environ["OHLORA_TINY_CACHE"] = str(folder)
    return folder


def write_csv(path: Path, rows: list[dict[str, str]], fieldnames: list[str] | None = None) -> Path:
    fieldnames = fieldnames or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def dataset_rows() -> list[dict[str, str]]:
    with DATASET.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train rows with and without memory tags, and a few valid rows: trains in seconds."""
    rows = dataset_rows()
    train = [row for row in rows if row["data_type"] == "train"]
    tagged = [row for row in train if row["memory"]][:6]
    plain = [row for row in train if not row["memory"]][: SMALL_TRAIN_ROWS - len(tagged)]
    valid = [row for row in rows if row["data_type"] == "valid"][:SMALL_VALID_ROWS]
    return write_csv(tmp_path_factory.mktemp("data") / "small.csv", plain + tagged + valid)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _script_process(script: str, *args: str) -> dict:
    return dict(args=[sys.executable, str(REPO / script), *args], cwd=REPO, text=True,
                env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def run_script(script: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts as a user would, from the repo root."""
    return subprocess.run(**_script_process(script, *args), capture_output=True, timeout=timeout, **kwargs)


def start_script(script: str, *args: str) -> subprocess.Popen:
    """run_script's process, started and left running (its output piped)."""
    return subprocess.Popen(**_script_process(script, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


PYTHON_DEFAULT_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                          ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                          ("ignore", ResourceWarning, "")]


class _WarningRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def run_in_process(script: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`python script args` run inside this test process: the same code from the same entry point, without
    paying again for the imports that cost a real process 4-5 s. What only a real process shows (signals,
    kill -9, the imports at start, the virtualenv guard, a server) stays with run_script.

    stderr holds what the script printed there, then each Python warning (as Python prints it) and library log
    record of WARNING and above: a real process prints those too, but in this one pytest has taken their streams.
    """
    out, err = io.StringIO(), io.StringIO()
    records = _WarningRecords()
    loggers = [logging.getLogger(), logging.getLogger("transformers")]  # transformers' does not propagate
    saved = (sys.argv, sys.stdin, os.getcwd(), dict(os.environ),
             {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)})
    code: int = 0
    for logger in loggers:
        logger.addHandler(records)
    try:
        sys.argv = [str(REPO / script), *args]
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        os.chdir(REPO)
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # pytest's filters out, a fresh interpreter's in (Python 3.11, no -W)
            for action, category, module in PYTHON_DEFAULT_FILTERS:
                warnings.filterwarnings(action, category=category, module=module, append=True)
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:  # sys.exit("message"): Python prints it and exits 1
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        for logger in loggers:
            logger.removeHandler(records)
        sys.argv, sys.stdin, cwd, environment, handlers = saved
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)
        for number, handler in handlers.items():
            signal.signal(number, handler)
    stderr = err.getvalue() + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                                      for w in caught) + "".join(line + "\n" for line in records.lines)
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), stderr)


def heavy_modules_after(script: str, *args: str) -> tuple[int, list[str]]:
    """(exit code, the heavy libraries imported) once a script with these arguments has ended: none when it
    answered at once."""
    code = ("import runpy, sys\n"
            f"sys.argv = {[str(REPO / script), *args]!r}\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as end:\n    code = end.code\n"
            "else:\n    code = 0\n"
            "print((code, sorted(name for name in ('torch', 'transformers', 'gradio', 'trl') if name in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])  # printed last, after the script's output


def heavy_modules_after_help(script: str) -> list[str]:
    """The heavy libraries a script has imported once it has printed --help (none: it answers at once)."""
    code, modules = heavy_modules_after(script, "--help")
    assert code == 0
    return modules


@pytest.fixture(scope="session")
def trained_polyglot(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> dict:
    """A tiny GPT-NeoX stand-in with a LoRA adapter trained for 2 epochs by the script (as a real process in
    tests/test_pipeline.py's data-parallel run)."""
    root = tmp_path_factory.mktemp("polyglot-run")
    paths = {"model_dir": root / "no_weights", "adapter_dir": root / "adapter", "logs_dir": root / "logs",
             "dataset": small_dataset}
    result = run_in_process(
        "llm/run_fine_tuning_polyglot.py", "--dataset", str(small_dataset), "--model-dir", str(paths["model_dir"]),
        "--output-dir", str(paths["adapter_dir"]), "--logs-dir", str(paths["logs_dir"]), "--epochs", "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths["stdout"] = result.stdout
    paths["stderr"] = result.stderr
    return paths


def tiny_model(spec, splits):
    """A tiny stand-in and its tokenizer built in memory from the splits (not cached)."""
    tokenizer = build_tiny_tokenizer(spec, [e.prompt + e.completion for e in splits.train + splits.valid])
    prepare_tokenizer(tokenizer)
    return build_tiny_model(spec, tokenizer), tokenizer


@pytest.fixture(scope="session")
def small_splits(small_dataset):
    return load_splits(small_dataset)


def hub_folder(spec, splits, folder: Path, max_shard_size="300KB") -> Path:
    """A stand-in saved exactly like a downloaded Hugging Face repo (sharded when small shards are asked for)."""
    model, tokenizer = tiny_model(spec, splits)
    save_in_hub_layout(model, tokenizer, folder, max_shard_size=max_shard_size)
    return folder


def break_folder(folder: Path, how: str) -> str:
    index_path = folder / "model.safetensors.index.json"
    first_shard = sorted(folder.glob("model-*.safetensors"))[0]
    if how == "no config":
        (folder / "config.json").unlink()
        return r"config\.json is missing"
    if how == "other architecture":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
        return r"model_type 'llama', but Polyglot-Ko 1\.3B needs 'gpt_neox'"
    if how == "shard missing":
        first_shard.unlink()
        return rf"{first_shard.name}: listed in model\.safetensors\.index\.json but missing"
    if how == "corrupt shard":
        first_shard.write_bytes(first_shard.read_bytes()[:100])
        return rf"{first_shard.name}: corrupt safetensors file"
    if how == "no weights":
        index_path.unlink()
        for shard in folder.glob("model-*.safetensors"):
            shard.unlink()
        return r"no model\.safetensors or model\.safetensors\.index\.json"
    if how == "only pickled weights":
        index_path.unlink()
        for shard in folder.glob("model-*.safetensors"):
            shard.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"not loaded")
        return r"only pickled \.bin weights"
    if how == "no tokenizer":
        (folder / "tokenizer.json").unlink()
        return r"tokenizer\.json \(or tokenizer\.model\) is missing"
    raise AssertionError(how)


BREAKAGES = ["no config", "other architecture", "shard missing", "corrupt shard", "no weights",
             "only pickled weights", "no tokenizer"]


@pytest.fixture(scope="session")
def good_polyglot_folder(tmp_path_factory, small_splits):
    return hub_folder(POLYGLOT, small_splits, tmp_path_factory.mktemp("good") / "polyglot_original")


@pytest.fixture(scope="session")
def gemma_adapter(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> Path:
    """A LoRA adapter saved (untrained) on a tiny Gemma-2 built in a temp folder, as the pipeline saves one."""
    root = tmp_path_factory.mktemp("gemma")
    save_in_hub_layout(*tiny_model(GEMMA, load_splits(small_dataset)), root / "base")
    base = AutoModelForCausalLM.from_pretrained(root / "base", **GEMMA.load_kwargs)
    with warnings.catch_warnings():  # a transformers deprecation notice raised inside peft
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(base, lora_config(GEMMA, Recipe(lora_rank=4)))
    save_adapter_atomically(peft_model, AutoTokenizer.from_pretrained(root / "base"), root / "adapter")
    return root / "adapter"


def _rows_with(rows, line, **changes):
    """The first 6 train and 2 valid rows, with `changes` applied to the row on CSV line `line`."""
    picked = [row for row in rows if row["data_type"] == "train"][:6] + \
             [row for row in rows if row["data_type"] == "valid"][:2]
    picked = [dict(row) for row in picked]
    picked[line - 2].update(changes)
    return picked


# Each bad dataset: how to write it from the real rows, and what the error says (a regex).
BAD_DATASETS = {
    "unknown data_type": (lambda rows, path: write_csv(path, _rows_with(rows, 4, data_type="test")),
                          r"row 4: data_type 'test' is not 'train' or 'valid'"),
    "train row without answer": (lambda rows, path: write_csv(path, _rows_with(rows, 3, output_data="", output_message="")),
                                 r"row 3: a train row needs output_data"),
    "memory not the answer's prefix": (
        lambda rows, path: write_csv(path, _rows_with(rows, 5, memory="[내일 일정: 면접]")),
        r"row 5: memory '\[내일 일정: 면접\]' is not the leading tag of output_data"),
    "missing column": (lambda rows, path: write_csv(path, [{k: v for k, v in row.items() if k != "memory"}
                                                           for row in _rows_with(rows, 2)]),
                       r"missing column\(s\) memory"),
    "no train rows": (lambda rows, path: write_csv(path, [row for row in _rows_with(rows, 2) if row["data_type"] == "valid"]),
                      r"no 'train' rows"),
    "no valid rows": (lambda rows, path: write_csv(path, [row for row in _rows_with(rows, 2) if row["data_type"] == "train"]),
                      r"no 'valid' rows"),
    "not UTF-8": (lambda rows, path: path.write_bytes("data_type,input_data\ntrain,안녕\n".encode("cp949")),
                  r"not UTF-8 text"),
    "NaN cell": (lambda rows, path: write_csv(path, _rows_with(rows, 3, output_data="NaN", output_message="NaN")),
                 r"row 3: output_data is 'NaN', a missing value as pandas writes it"),
    "empty file": (lambda rows, path: path.write_bytes(b""), r"the file is empty"),
    # A cell over three lines (quoted, as spreadsheets write it) shifts the next records' line numbers.
    "multi-line cell, then a bad row": (
        lambda rows, path: write_csv(path, _rows_with(_rows_with(rows, 2, output_data="첫 줄\n둘째 줄\n셋째 줄",
                                                                 output_message="첫 줄\n둘째 줄\n셋째 줄"),
                                                      4, data_type="test")),
        r"row 8: data_type 'test' is not 'train' or 'valid'"),  # lines 2-6 hold the first record
    "duplicate column": (lambda rows, path: path.write_text(
        "data_type,input_data,output_data,output_message,memory,output_data\ntrain,안녕,응,응,,응\n", encoding="utf-8"),
        r"column\(s\) output_data appear more than once"),
    "unterminated quote": (lambda rows, path: path.write_text(
        'data_type,input_data,output_data,output_message,memory\ntrain,안녕,응,응,\ntrain,"뭐해,응,응,\n',
        encoding="utf-8"), r"line 3: not readable as CSV \(a quote opened there is never closed\)"),
    "missing file": (lambda rows, path: None, r"dataset file not found"),
}
