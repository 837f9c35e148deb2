"""Shared fixtures: a small dataset cut from the real one, tiny models saved like downloads, trained adapters.

What tests share besides fixtures lives in tests/helpers/.
"""

import gc
import os
import sys
import warnings
from pathlib import Path

import pytest

try:
    from llm.common.cli import ignore_library_notices

    ignore_library_notices()  # as every script does first
    import peft  # noqa: F401 (the first of the project's libraries this file needs)
except ModuleNotFoundError as missing:  # pytest started outside the README's virtualenv
    print(f"error: {missing}; run the tests in the project's virtualenv, as the README says: "
          f". .venv/bin/activate && python -m pytest -q", file=sys.stderr)
    sys.exit(2)
from peft import get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.data import dataset_rows, write_csv
from helpers.models import hub_folder, tiny_model
from helpers.scripts import run_in_process
from llm.common.data import load_splits
from llm.common.models import save_in_hub_layout
from llm.common.specs import GEMMA, POLYGLOT, Recipe
from llm.common.training import lora_config, save_adapter_atomically

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


@pytest.fixture(scope="session", autouse=True)
def no_trained_encoder(tmp_path_factory: pytest.TempPathFactory):
    """The chats' encoder folder absent, as in a fresh clone, whatever a user has trained into llm/models/ (tests
    that want one point chat_scorer.ENCODER_DIR at it)."""
    from llm.memory import chat_scorer
    trained = chat_scorer.ENCODER_DIR
    chat_scorer.ENCODER_DIR = tmp_path_factory.mktemp("no-encoder") / "retrieval_encoder"
    yield
    chat_scorer.ENCODER_DIR = trained


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train rows with and without memory tags, and a few valid rows: trains in seconds."""
    rows = dataset_rows()
    train = [row for row in rows if row["data_type"] == "train"]
    tagged = [row for row in train if row["memory"]][:6]
    plain = [row for row in train if not row["memory"]][: SMALL_TRAIN_ROWS - len(tagged)]
    valid = [row for row in rows if row["data_type"] == "valid"][:SMALL_VALID_ROWS]
    return write_csv(tmp_path_factory.mktemp("data") / "small.csv", plain + tagged + valid)


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


@pytest.fixture(scope="session")
def small_splits(small_dataset):
    return load_splits(small_dataset)


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

