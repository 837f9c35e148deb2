"""The evaluation script, the sets it measures on, the old cue lists kept as its baseline, and the threshold rule."""

import re
from pathlib import Path

import pytest

from helpers.scripts import heavy_modules_after_help, run_in_process
from llm.memory.offline_scorer import OfflineScorer
from llm.memory.research.cue_scorer import CueScorer
from llm.memory.research.data import BLIND_SETS, CASES_CSV, FIT_CASES, PAIRS_CSV, read_cases, read_pairs
from llm.memory.research.metrics import NONE_RECALL_TARGET, best_picks, case_metrics, choose_threshold

SCRIPT = "llm/memory/evaluate_retrieval.py"
NUMBER = r"-?\d\.\d{3}"


def test_evaluate_prints_the_scorers_side_by_side_on_every_blind_set_by_default():
    result = run_in_process(SCRIPT, "--rows", "0:30")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    headings = re.findall(r"^(retrieval_cases_blind\d?\.csv: 30 cases, rows 0:30, \d+ of them none"
                          r"|relevance_pairs_blind\d?\.csv: 30 pairs, rows 0:30)$", out, re.M)
    assert [h.split(":")[0] for h in headings] == [path.name for pair in BLIND_SETS for path in pair]
    sets = len(BLIND_SETS)
    assert len(re.findall(r"^ +lists +offline$", out, re.M)) == 2 * sets  # no encoder folder in a checkout
    assert len(re.findall(rf"^top-1 accuracy +{NUMBER} +{NUMBER}$", out, re.M)) == sets
    assert len(re.findall(rf"^none recall +{NUMBER} \(\d+/\d+\) +{NUMBER} \(\d+/\d+\)$", out, re.M)) == sets
    for label in ("MSE", "MAE", "corr"):
        assert len(re.findall(rf"^{label} +{NUMBER} +{NUMBER}$", out, re.M)) == sets
    fitted_on = out.split("\nfitted on:\n")[1].splitlines()
    assert max(len(line) for line in out.splitlines()) <= 100  # whole lines in a terminal of 100 columns or more
    assert " ".join(line.strip() for line in fitted_on) == (f"lists: {CueScorer().fitted_on} "
                                                            f"offline: {OfflineScorer.load().fitted_on}")
    assert "blind" not in OfflineScorer.load().fitted_on


@pytest.mark.parametrize("args", [["--pairs", "no_such_pairs.csv"], ["--eval", "no_such_cases.csv"]])
def test_evaluate_script_missing_file_is_one_line_and_exit_2(args):
    result = run_in_process(SCRIPT, *args)
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and args[1] in lines[0]


def test_evaluate_script_bad_file_is_one_line_and_exit_2(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("memory_0,user_prompt_1,similarity_score\n[기분: 설렘],설레,1.7\n", encoding="utf-8")
    result = run_in_process(SCRIPT, "--pairs", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(bad) in result.stderr


def test_the_sets_are_large_enough():
    for cases_path, pairs_path in ((CASES_CSV, PAIRS_CSV), *BLIND_SETS):
        cases = read_cases(cases_path)
        none_share = sum(relevant is None for _, _, relevant in cases) / len(cases)
        assert len(cases) >= 100 and 0.25 <= none_share <= 0.4
        assert len(read_pairs(pairs_path)) >= 300


def test_the_old_cue_lists_still_score_as_a_baseline():
    lists = CueScorer()
    weather, food = "[오늘 날씨: 비]", "[좋아하는 음식: 떡볶이]"
    assert lists.most_relevant([food, weather], "오늘 우산 챙겨야 할까?")[0] == weather  # a cue of its key
    assert lists.most_relevant([food, weather], "떡볶이 먹으러 갈래")[0] == food  # its value written
    assert lists.most_relevant([food, weather], "내 이름 기억해?") is None
    assert lists.relevance("[일정: 면접]", "우산 챙겨야 할까?") == 0.0  # the dataset's new keys are not its lists'


def test_the_threshold_rule_keeps_the_none_answers_then_maximises_top_1():
    a, b = "[가: 1]", "[나: 2]"
    cases = [("m1", [a, b], a), ("m2", [a, b], b), ("m3", [a, b], None), ("m4", [a, b], None)]
    picks = [(a, 0.9), (b, 0.6), (a, 0.7), (b, 0.3)]
    # 0.61..0.70 would be right three times out of four, but recall on m3: only above 0.7 are the nones kept
    threshold = choose_threshold([(cases, picks)])
    assert 0.7 < threshold <= 0.9
    assert case_metrics(cases, picks, threshold)["none_recall"] >= NONE_RECALL_TARGET
    louder = [(a, 0.9), (b, 0.6), (a, 0.95), (b, 0.3)]  # a file that must stay quiet too
    assert choose_threshold([(cases, picks)], also_quiet_on=[(cases, louder)]) > 0.95


def test_the_committed_offline_threshold_keeps_the_development_none_cases_quiet():
    scorer = OfflineScorer.load()
    for path in FIT_CASES:
        cases = read_cases(path)
        assert case_metrics(cases, best_picks(scorer, cases), scorer.threshold)["none_recall"] >= NONE_RECALL_TARGET


@pytest.mark.parametrize("script", ["evaluate_retrieval", "train_retrieval", "benchmark_retrieval", "extract_e5"])
def test_the_entry_scripts_answer_help_before_the_heavy_imports(script):
    assert heavy_modules_after_help(f"llm/memory/{script}.py") == []
