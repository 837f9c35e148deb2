"""The candidates table: what the selection reads from it, and its agreement with the project's model registry."""

import pytest

from llm.model_selection.candidates import CANDIDATES_CSV, COLUMNS, load_candidates
from llm.common.specs import SPECS


def test_every_candidate_has_its_own_folder_and_a_plausible_leaderboard_figure():
    candidates = load_candidates()
    assert len({c.name for c in candidates}) == len({c.folder for c in candidates}) == len(candidates)
    assert all(c.ko_leaderboard_avg is None or 0 < c.ko_leaderboard_avg < 100 for c in candidates)


def test_the_models_the_project_trains_are_candidates_of_their_architecture():
    """Model selection runs each registered model's stand-in beside the candidate whose folder it shares."""
    by_folder = {c.folder: c for c in load_candidates()}
    for spec in SPECS.values():
        assert by_folder[spec.model_dir.name].architecture == spec.architecture, spec.name


def test_an_empty_leaderboard_cell_is_none_and_a_missing_column_is_refused(tmp_path):
    rows = CANDIDATES_CSV.read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",") == COLUMNS
    blank = tmp_path / "blank.csv"
    values = dict.fromkeys(COLUMNS, "x") | {"ko_leaderboard_avg": ""}
    blank.write_text(",".join(COLUMNS) + "\n" + ",".join(values.values()) + "\n", encoding="utf-8")
    assert load_candidates(blank)[0].ko_leaderboard_avg is None
    bad = tmp_path / "bad.csv"
    bad.write_text("name,folder\npolyglot-ko-1.3b,polyglot_original\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing columns"):
        load_candidates(bad)
