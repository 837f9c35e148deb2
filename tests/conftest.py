"""Shared fixtures: a small dataset cut from the real one, and a LoRA adapter trained on it."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "llm" / "OhLoRA_fine_tuning.csv"
SMALL_TRAIN_ROWS = 24
SMALL_VALID_ROWS = 6


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


def run_script(script: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts as a user would, from the repo root."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, **kwargs,
    )


@pytest.fixture(scope="session")
def trained_polyglot(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> dict:
    """A tiny GPT-NeoX stand-in with a LoRA adapter trained for 2 epochs by the real script."""
    root = tmp_path_factory.mktemp("polyglot-run")
    paths = {"model_dir": root / "no_weights", "adapter_dir": root / "adapter", "logs_dir": root / "logs",
             "dataset": small_dataset}
    result = run_script(
        "llm/run_fine_tuning_polyglot.py", "--dataset", str(small_dataset), "--model-dir", str(paths["model_dir"]),
        "--output-dir", str(paths["adapter_dir"]), "--logs-dir", str(paths["logs_dir"]), "--epochs", "2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    paths["stdout"] = result.stdout
    paths["stderr"] = result.stderr
    return paths
