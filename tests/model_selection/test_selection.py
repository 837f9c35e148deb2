"""run_model_selection.py end to end: a short run over the tiny stand-ins writes every result file."""

import csv
import math
from pathlib import Path

import pytest

from helpers.scripts import run_in_process
from llm.common.data import load_splits
from llm.model_selection.candidates import load_candidates
from llm.model_selection.selection import (
    FINE_TUNING_COLUMNS, INFERENCE_COLUMNS, METRIC_COLUMNS, SUMMARY_COLUMNS, SUMMARY_CSV, SUMMARY_MD,
)

SCRIPT = "llm/model_selection/run_model_selection.py"
TINY = {"polyglot-ko-1.3b (tiny stand-in)": "polyglot-ko-1.3b_tiny_stand-in",
        "gemma-2-2b-it (tiny stand-in)": "gemma-2-2b-it_tiny_stand-in"}
BROKEN = "llama1B"  # its folder gets a config.json that is not JSON


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


@pytest.fixture(scope="module")
def selection_run(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> dict:
    root = tmp_path_factory.mktemp("selection")
    models_dir, output_dir = root / "models", root / "results"
    broken = next(c for c in load_candidates() if c.name == BROKEN)
    (models_dir / broken.folder).mkdir(parents=True)
    (models_dir / broken.folder / "config.json").write_text("{not json", encoding="utf-8")
    result = run_in_process(SCRIPT, "--dataset", str(small_dataset), "--models-dir", str(models_dir),
                        "--output-dir", str(output_dir), "--train-pairs", "8", "--epochs", "1")
    # The comparison runs to its end, then the exit code says a candidate failed.
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == f"error: 1 candidate(s) failed: {BROKEN} (their rows say why)"
    return {"output_dir": output_dir, "models_dir": models_dir, "dataset": small_dataset, "stdout": result.stdout}


def test_summary_has_a_row_per_candidate_and_stand_in(selection_run):
    columns, rows = read_csv(selection_run["output_dir"] / SUMMARY_CSV)
    assert columns == SUMMARY_COLUMNS
    candidates = load_candidates()
    assert [row["name"] for row in rows] == [c.name for c in candidates] + list(TINY)
    by_name = {row["name"]: row for row in rows}
    for candidate in candidates:
        row = by_name[candidate.name]
        assert row["is_tiny"] == "False"
        if candidate.name == BROKEN:
            assert row["status"].startswith("failed: ") and "config.json" in row["status"]
        else:
            assert row["status"] == f"skipped: no weights in {selection_run['models_dir'] / candidate.folder}"
        assert all(row[column] == "" for column in METRIC_COLUMNS)  # nothing measured, not 0


def test_stand_in_rows_are_measured_and_metrics_in_range(selection_run):
    rows = {row["name"]: row for row in read_csv(selection_run["output_dir"] / SUMMARY_CSV)[1]}
    valid = load_splits(selection_run["dataset"]).valid
    for name in TINY:
        row = rows[name]
        assert row["status"] == "ok" and row["is_tiny"] == "True"
        assert (row["train_pairs"], row["epochs"]) == ("8", "1")
        for column in ("fine_tuning_time_s", "fine_tuning_peak_mb", "inference_time_s", "inference_peak_mb"):
            assert float(row[column]) > 0, column
        assert row["peak_kind"]
        assert math.isfinite(float(row["final_train_loss"])) and math.isfinite(float(row["final_eval_loss"]))
        assert (int(row["prompts"]), int(row["samples"])) == (len(valid), 2 * len(valid))
        for column in METRIC_COLUMNS[2:]:
            value = float(row[column])
            assert math.isnan(value) or 0.0 <= value <= 1.0, (name, column, value)
        # The stand-in's tokenizer is trained on the Korean dataset, so even its random text has Hangul.
        assert float(row["answer_hangul_ratio"]) > 0


def test_per_candidate_files(selection_run):
    output_dir = selection_run["output_dir"]
    valid = load_splits(selection_run["dataset"]).valid
    expected_files = {SUMMARY_CSV, SUMMARY_MD} | {
        f"{kind}_test_result_{stem}.csv" for stem in TINY.values() for kind in ("fine_tuning", "inference")
    }
    assert {path.name for path in output_dir.iterdir()} == expected_files  # none for skipped or failed rows
    for stem in TINY.values():
        columns, epochs = read_csv(output_dir / f"fine_tuning_test_result_{stem}.csv")
        assert columns == FINE_TUNING_COLUMNS
        assert [row["epoch"] for row in epochs] == ["1"]
        assert float(epochs[0]["train_loss"]) > 0 and float(epochs[0]["eval_loss"]) > 0

        columns, answers = read_csv(output_dir / f"inference_test_result_{stem}.csv")
        assert columns == INFERENCE_COLUMNS
        assert [(row["prompt"], row["expected_memory_tag"]) for row in answers] == \
            [(example.input_data, example.memory) for example in valid]
        for row in answers:
            assert {row["stopped_1"], row["stopped_2"]} <= {"True", "False"}
            assert int(row["output_tokens_1"]) >= 0 and int(row["output_tokens_2"]) >= 0


def test_markdown_table(selection_run):
    text = (selection_run["output_dir"] / SUMMARY_MD).read_text(encoding="utf-8")
    assert "random-init" in text and "max_trials 1" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + len(load_candidates()) + len(TINY)
    assert sum("| ok |" in line for line in table) == len(TINY)
    assert sum("| skipped: no weights in " in line for line in table) == len(load_candidates()) - 1
    assert sum("| failed: " in line for line in table) == 1


def test_the_terminal_shows_the_candidates_that_ran_in_a_narrow_table(selection_run):
    table = selection_run["stdout"].split("\nresults: ")[0].splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("candidate "))
    ran = table[header + 1:]
    assert [line.split("  ")[0] for line in ran] == list(TINY)  # the skipped and failed rows said so as they came
    assert all(len(line.split()) >= 8 for line in ran)  # a name of a few words, then the seven figures
    assert max(len(line) for line in table[header:]) < 120
    assert "| failed: " not in selection_run["stdout"]  # the markdown table stays in its file
