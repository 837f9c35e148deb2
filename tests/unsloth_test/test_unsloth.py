"""The Unsloth measurement scripts on the tiny stand-in: the rows they write, the unavailable path, compare.py."""

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers.data import write_csv
from helpers.scripts import run_in_process, run_script
from llm.unsloth_test import RESULT_FIELDS, WITH_NO_BLOCK_COMPILE, append_result, read_results, unsloth_missing

WITHOUT = "llm/unsloth_test/test_without_unsloth.py"
WITH = "llm/unsloth_test/test_with_unsloth.py"
COMPARE = "llm/unsloth_test/compare.py"
SMALL_COUNTS = ("--prompts", "3", "--train-pairs", "4", "--epochs", "1")
FIGURES = ("inference_s", "inference_peak_mb", "finetune_s", "finetune_peak_mb")


UNSLOTH_WHY_NOT = unsloth_missing()  # without importing unsloth: it would patch transformers for the session
UNSLOTH_CAN_RUN = UNSLOTH_WHY_NOT is None


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == RESULT_FIELDS
        return list(reader)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> dict:
    """Both scripts run once on the tiny Gemma-2 stand-in, into one results file and one logs folder."""
    root = tmp_path_factory.mktemp("unsloth-test")
    paths = {"results": root / "results.csv", "logs": root / "logs"}
    common = ("--dataset", str(small_dataset), "--model-dir", str(root / "no_weights"), *SMALL_COUNTS,
              "--results", str(paths["results"]), "--logs-dir", str(paths["logs"]))
    paths["without"] = run_in_process(WITHOUT, *common)
    # Where Unsloth can run, a process of its own: importing unsloth patches transformers for the process.
    # Without Unsloth's per-block compile, whose backward failed with torch 2.11 on the lent H200 (docs/gpu.md).
    paths["with"] = (run_script if UNSLOTH_CAN_RUN else run_in_process)(WITH, *common, "--no-block-compile")
    return paths


def test_without_unsloth_writes_a_complete_row_and_a_log(runs: dict) -> None:
    result = runs["without"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "TINY RANDOMLY INITIALISED gemma2 stand-in" in result.stderr
    row = read_rows(runs["results"])[0]
    assert row["status"] == "ok"
    assert (row["unsloth"], row["model"]) == ("without", "Gemma-2 2B tiny stand-in")
    assert (row["prompts"], row["train_pairs"], row["epochs"]) == ("3", "4", "1")
    assert all(float(row[name]) > 0 for name in FIGURES)
    assert row["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    assert row["peak_memory_kind"] == ("cuda max_memory_allocated" if torch.cuda.is_available()
                                       else "peak resident memory (CPU)")
    logs = list(runs["logs"].glob("*_without_unsloth_tiny.txt"))
    assert len(logs) == 1
    log = logs[0].read_text(encoding="utf-8")
    assert "[3/3] prompt:" in log  # the answers are logged
    assert f"inference: {float(row['inference_s']):.2f} s" in log
    assert f"fine-tuning: {float(row['finetune_s']):.2f} s" in log
    assert "fine-tuning: 1 steps" in log  # 4 pairs in batches of 4, 1 epoch


@pytest.mark.skipif(not UNSLOTH_CAN_RUN, reason=f"Unsloth cannot run here: {UNSLOTH_WHY_NOT}")
def test_with_unsloth_writes_a_complete_row_that_compare_pairs_with_without(runs: dict) -> None:
    result = runs["with"]
    assert result.returncode == 0, result.stderr[-3000:]
    without, with_row = read_rows(runs["results"])
    assert with_row["status"] == "ok", with_row["status"]
    assert (with_row["unsloth"], with_row["model"]) == (WITH_NO_BLOCK_COMPILE, "Gemma-2 2B tiny stand-in")
    assert (with_row["prompts"], with_row["train_pairs"], with_row["epochs"]) == ("3", "4", "1")
    assert all(float(with_row[name]) > 0 for name in FIGURES)
    assert with_row["device"] == without["device"] and with_row["device"].startswith("cuda: ")
    assert with_row["peak_memory_kind"] == "cuda max_memory_allocated"
    logs = list(runs["logs"].glob("*_with_unsloth_tiny.txt"))
    assert len(logs) == 1
    log = logs[0].read_text(encoding="utf-8")
    assert "[3/3] prompt:" in log and "fine-tuning: 1 steps" in log
    assert f"fine-tuning: {float(with_row['finetune_s']):.2f} s" in log
    table = run_script(COMPARE, "--results", str(runs["results"]))
    assert table.returncode == 0, table.stderr
    assert "| inference time (3 prompts) |" in table.stdout
    assert "| | with Unsloth (UNSLOTH_BLOCK_COMPILE=0) | without Unsloth | saving |" in table.stdout
    assert "| fine-tuning time (4 pairs x 1 epochs) |" in table.stdout


@pytest.mark.skipif(UNSLOTH_CAN_RUN, reason="Unsloth is installed on a GPU here: the unavailable path does not apply")
def test_with_unsloth_absent_exits_3_with_one_reason_and_an_unavailable_row(runs: dict) -> None:
    result = runs["with"]
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unavailable: "), result.stderr
    row = read_rows(runs["results"])[1]
    assert row["status"] == lines[0]
    assert (row["unsloth"], row["model"], row["prompts"]) == (WITH_NO_BLOCK_COMPILE, "Gemma-2 2B tiny stand-in", "3")
    assert all(row[name] == "" for name in FIGURES)
    logs = list(runs["logs"].glob("*_with_unsloth_tiny.txt"))
    assert len(logs) == 1 and lines[0] in logs[0].read_text(encoding="utf-8")


@pytest.mark.skipif(UNSLOTH_CAN_RUN, reason="Unsloth is installed on a GPU here: the runs do make a pair")
def test_compare_without_a_successful_pair_exits_2_saying_why(runs: dict) -> None:
    result = run_script(COMPARE, "--results", str(runs["results"]))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "no pair" in lines[0] and "unavailable: " in lines[0]


def result_row(unsloth: str, model: str, figures: tuple[float, float, float, float], prompts: str = "25",
               status: str = "ok", date: str = "2026-11-25 10:00") -> dict[str, object]:
    row: dict[str, object] = {name: "" for name in RESULT_FIELDS}
    row.update(date=date, machine="test machine", device="cuda: Quadro M6000 (compute capability 5.2), float32",
               model=model, unsloth=unsloth, prompts=prompts, train_pairs="20", epochs="3",
               peak_memory_kind="cuda max_memory_allocated", status=status)
    row.update(zip(FIGURES, figures))
    return row


def test_compare_prints_the_table_of_the_latest_matching_pair(tmp_path: Path) -> None:
    gemma = "Gemma-2 2B (llm/models/original)"
    rows = [
        result_row("without", gemma, (999, 9999, 99, 9999), date="2026-11-01 09:00"),  # older: replaced
        result_row("without", gemma, (158.2, 5013, 19.7, 5994), date="2026-11-25 09:00"),
        result_row("with", gemma, (100.0, 4000, 24.0, 2997), date="2026-11-25 10:00"),
        result_row("without", gemma, (1, 1, 1, 1), prompts="3", date="2026-11-25 11:00"),  # other counts
        result_row("with", "tiny", (1, 1, 1, 1), status="unavailable: no CUDA GPU", date="2026-11-25 12:00"),
    ]
    results = write_csv(tmp_path / "results.csv", rows, list(RESULT_FIELDS))
    result = run_script(COMPARE, "--results", str(results))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2:] == [
        "| | with Unsloth | without Unsloth | saving |",
        "|---|---:|---:|---:|",
        "| inference time (25 prompts) | 100.0 s | 158.2 s | 36.8 % |",
        "| inference peak memory | 4,000 MB | 5,013 MB | 20.2 % |",
        "| fine-tuning time (20 pairs x 3 epochs) | 24.0 s | 19.7 s | -21.8 % |",
        "| fine-tuning peak memory | 2,997 MB | 5,994 MB | 50.0 % |",
    ]
    heading = result.stdout.splitlines()[0]
    assert gemma in heading and "2026-11-25 10:00" in heading and "2026-11-25 09:00" in heading
    assert "cuda max_memory_allocated" in heading


def test_compare_pairs_a_run_without_the_block_compile_and_says_so(tmp_path: Path) -> None:
    shape = "gemma-2-2b (full size, random weights)"
    rows = [result_row("without", shape, (4.93, 5193, 6.72, 7097), date="2026-11-26 11:04"),
            result_row("with", shape, (30.69, 5576, 0, 0), status="failed: InductorError: AssertionError:",
                       date="2026-11-26 11:05"),
            result_row(WITH_NO_BLOCK_COMPILE, shape, (9.0, 5500, 5.0, 6000), date="2026-11-27 10:00")]
    result = run_script(COMPARE, "--results", str(write_csv(tmp_path / "results.csv", rows, list(RESULT_FIELDS))))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2] == "| | with Unsloth (UNSLOTH_BLOCK_COMPILE=0) | without Unsloth | saving |"
    assert "| fine-tuning time (20 pairs x 3 epochs) | 5.0 s | 6.7 s | 25.6 % |" in lines
    assert "2026-11-27 10:00" in lines[0] and "2026-11-26 11:04" in lines[0]


def test_the_block_compile_hint_answers_its_own_failure_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm.unsloth_test.unsloth_side import block_compile_hint

    InductorError = type("InductorError", (RuntimeError,), {})  # torch._inductor.exc's, by name
    monkeypatch.delenv("UNSLOTH_BLOCK_COMPILE", raising=False)
    assert "--no-block-compile" in block_compile_hint(InductorError("AssertionError:"))
    assert block_compile_hint(RuntimeError("CUDA out of memory")) is None
    monkeypatch.setenv("UNSLOTH_BLOCK_COMPILE", "0")  # already off: the hint would not help
    assert block_compile_hint(InductorError("AssertionError:")) is None


def test_a_row_is_appended_on_its_own_line_after_a_hand_edit(tmp_path: Path) -> None:
    """A results file whose last line lost its newline (an editor does that) gets the new row on a line of its own."""
    results = tmp_path / "results.csv"
    first = {field: "" for field in RESULT_FIELDS} | {"model": "edited by hand", "status": "ok"}
    append_result(results, first)
    results.write_bytes(results.read_bytes().rstrip(b"\r\n"))
    append_result(results, first | {"model": "appended"})
    assert [row["model"] for row in read_results(results)] == ["edited by hand", "appended"]


@pytest.mark.parametrize("shape, parameters", [("gemma-2-2b", 2_614_341_888), ("polyglot-ko-1.3b", 1_331_810_304)])
def test_full_size_config_has_the_real_models_parameter_count(shape: str, parameters: int) -> None:
    from transformers import AutoModelForCausalLM

    from llm.common.specs import SHAPES
    from llm.common.models import full_size_config

    spec = SHAPES[shape]
    tokenizer = SimpleNamespace(bos_token_id=2, eos_token_id=1, pad_token_id=0)  # ids of a small tokenizer
    with torch.device("meta"):  # shapes only: no memory
        model = AutoModelForCausalLM.from_config(full_size_config(spec, tokenizer), **spec.load_kwargs)
    assert sum(parameter.numel() for parameter in model.parameters()) == parameters
    assert model.config.eos_token_id == 1
