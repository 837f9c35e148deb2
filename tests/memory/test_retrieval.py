"""The memory scorer built on Kiwi: lemmas, meaning vectors, unseen keys, the threshold, its scripts."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from helpers.scripts import REPO, run_in_process, run_script
from llm.common.tags import parse_memory_tag
from llm.memory import morphemes, retrieval
from llm.memory.evaluate_retrieval import read_pairs
from llm.memory.morphemes import lemmas, space
from llm.memory.retrieval import RELEVANCE_THRESHOLD, most_relevant, relevance

MEMORY = REPO / "llm" / "memory"
PAIRS_CSV = MEMORY / "relevance_pairs.csv"
TRAIN, EVALUATE, BENCHMARK = (f"llm/memory/{name}.py" for name in ("train_retrieval", "evaluate_retrieval",
                                                                     "benchmark_retrieval"))

# Memories like a chat's: the fine-tuned model's usual keys and some it invents.
STORED = ["[내일 일정: 면접]", "[좋아하는 음식: 떡볶이]", "[반려동물: 강아지 초코]", "[전공: 경영학]",
          "[응원하는 팀: 두산]", "[자격증: 정보처리기사]", "[알레르기: 땅콩]"]


def test_lemmas_undo_conjugation_and_particles():
    assert lemmas("떨려") == ["떨리다"]
    assert lemmas("떡볶이를") == ["떡볶이"]
    assert lemmas("어제 떡볶이를 먹었어") == ["어제", "떡볶이", "먹다"]
    assert lemmas("?!") == []


def test_kiwi_loads_once_and_vectors_reproduce_its_similarities():
    first = space()
    assert space() is first and morphemes.load_seconds is not None
    assert first.kiwi.model_type == "cong"
    puppy, pet = (first.kiwi.tokenize(word)[0].id for word in ("강아지", "반려동물"))
    # the vectors rebuilt from the anchors are Kiwi's own embeddings: the same cosine
    assert float(first.vector(puppy) @ first.vector(pet)) == pytest.approx(
        first.kiwi.morpheme_similarity(puppy, pet), abs=1e-3)


def test_the_model_is_a_small_json_matching_the_features():
    model = json.loads(retrieval.MODEL_JSON.read_text(encoding="utf-8"))
    assert tuple(model["features"]) == retrieval.FEATURES
    assert np.array(model["coef"]).shape == (len(model["grades"]), len(retrieval.FEATURES))
    assert model["threshold"] == RELEVANCE_THRESHOLD and 0.0 < RELEVANCE_THRESHOLD < 1.0
    assert model["kiwipiepy"] in (REPO / "requirements.txt").read_text()  # pinned to the version it was fit with


def test_a_key_never_seen_in_training_is_recalled_through_meaning():
    trained_keys = {parse_memory_tag(tag)[0] for tag, _, _ in read_pairs(PAIRS_CSV)}
    # absent from relevance_pairs.csv; since the refit on the dev pairs (dev/) those keys are in training too
    assert {"응원하는 팀", "자격증", "알레르기"}.isdisjoint(trained_keys)
    # no word of the memory is in the message: 야구 and 역전승 are what tie it to 두산
    assert most_relevant(STORED, "어제 야구 9회말 역전승 봤어?")[0] == "[응원하는 팀: 두산]"
    assert most_relevant(STORED, "이 과자 먹어도 될까? 견과류 들어갔나 봐")[0] == "[알레르기: 땅콩]"
    assert most_relevant(STORED, "기사 시험 붙었어")[0] == "[자격증: 정보처리기사]"  # 기사: a word of the value
    assert relevance("[응원하는 팀: 두산]", "어제 야구 9회말 역전승 봤어?") > 3 * relevance(
        "[응원하는 팀: 두산]", "떡볶이 먹고 싶다")
    # weaker, but still far above an unrelated message (here [내일 일정: 면접] scores a little higher: known miss)
    assert relevance("[자격증: 정보처리기사]", "실기 시험 접수했어") > 2 * relevance(
        "[자격증: 정보처리기사]", "강아지 산책 다녀왔어")


def test_the_value_mentioned_with_a_particle_is_recalled():
    assert most_relevant(STORED, "떡볶이를 세 번이나 먹었어")[0] == "[좋아하는 음식: 떡볶이]"
    assert most_relevant(STORED, "우리 강아지가 산책 가자고 졸라")[0] == "[반려동물: 강아지 초코]"
    assert most_relevant(STORED, "면접에서 떨려서 말을 더듬었어")[0] == "[내일 일정: 면접]"


@pytest.mark.parametrize("message", ["안녕 로라!", "오늘 우산 챙겨야 할까?", "?!", "   "])
def test_none_when_no_memory_fits(message):
    assert most_relevant(STORED, message) is None


def test_at_most_one_memory_and_only_from_the_threshold(monkeypatch):
    message = "어제 야구 9회말 역전승 봤어?"
    found = most_relevant(STORED, message)
    tag, score = found  # one tag and its score, not a list
    assert tag in STORED and RELEVANCE_THRESHOLD <= score <= 1.0
    assert score == pytest.approx(relevance(tag, message))
    assert score == pytest.approx(max(relevance(t, message) for t in STORED))  # scored in a batch: float order
    monkeypatch.setattr(retrieval, "RELEVANCE_THRESHOLD", score + 1e-6)
    assert most_relevant(STORED, message) is None  # the best memory just below the threshold: none
    monkeypatch.setattr(retrieval, "RELEVANCE_THRESHOLD", score)
    assert most_relevant(STORED, message) == found
    assert most_relevant([], message) is None


def test_ties_go_to_the_earlier_tag_and_malformed_tags_score_zero(monkeypatch):
    monkeypatch.setattr(retrieval, "_scores", lambda parsed, message: [0.2, 0.9, 0.9])
    assert most_relevant(["[가: 1]", "[나: 2]", "[다: 3]"], "아무 말") == ("[나: 2]", 0.9)
    monkeypatch.undo()
    assert relevance("[: 면접]", "면접 봐") == 0.0 and relevance("면접", "면접 봐") == 0.0
    assert most_relevant(["not a tag", "[내일 일정: 면접]"], "면접 때 자기소개 어떻게 하지?")[0] == "[내일 일정: 면접]"


def test_each_memory_is_analysed_once():
    retrieval.analyse_memory.cache_clear()
    most_relevant(STORED, "떡볶이 먹고 싶다")
    most_relevant(STORED, "어제 야구 봤어?")
    most_relevant(STORED + ["[취미: 뜨개질]"], "목도리 떴어")  # a new memory: only it is analysed
    info = retrieval.analyse_memory.cache_info()
    assert info.misses == len(STORED) + 1


def test_one_memory_scores_the_same_alone_and_among_many():
    message = "시험 범위가 너무 넓어"
    together = [retrieval.features(*parse_memory_tag(t), message) for t in STORED]
    bank = retrieval.memory_bank(tuple(parse_memory_tag(t) for t in STORED))
    assert np.allclose(bank.features(message, space().analyse(message)), together)


def _small_csvs(tmp_path: Path) -> tuple[Path, Path]:
    pairs = list(csv.DictReader(PAIRS_CSV.open(encoding="utf-8", newline="")))[:48]
    cases = list(csv.DictReader((MEMORY / "retrieval_eval.csv").open(encoding="utf-8", newline="")))[:12]
    paths = tmp_path / "pairs.csv", tmp_path / "cases.csv"
    for path, rows in zip(paths, (pairs, cases)):
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return paths


def test_training_script_refits_and_reports_the_rows_it_did_not_see(tmp_path: Path):
    pairs, cases = _small_csvs(tmp_path)
    out = tmp_path / "model.json"
    result = run_in_process(TRAIN, "--pairs", str(pairs), "--rows", "0:32", "--eval", str(cases), "--case-rows", "0:8",
                            "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^pairs held out \(16\): MSE \d\.\d{3}  MAE \d\.\d{3}  corr -?\d\.\d{3}$", result.stdout, re.M)
    assert re.search(r"^cases held out \(4\): top-1 accuracy \d\.\d{3}$", result.stdout, re.M)
    model = json.loads(out.read_text(encoding="utf-8"))
    assert model["fitted_on"] == "pairs.csv rows 0:32, threshold on cases.csv rows 0:8"
    rows = np.array([retrieval.features(*parse_memory_tag(tag), prompt)
                     for tag, prompt, _ in read_pairs(pairs)])
    scores = retrieval.predict(rows, model)
    assert ((0.0 <= scores) & (scores <= 1.0)).all()

    # the evaluation can try the refit before it replaces the committed model
    evaluate = [EVALUATE, "--pairs", str(pairs), "--rows", "32:"]
    result = run_in_process(*evaluate, "--model", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "NEW was fitted on pairs.csv rows 0:32, threshold on cases.csv rows 0:8"
    result = run_in_process(*evaluate, "--model", str(pairs))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not a model written by train_retrieval.py" in result.stderr


def test_benchmark_script_runs_and_prints_its_figures():
    # a process of its own: the model load it times happens once per process
    result = run_script(BENCHMARK, "--memories", "12", "--messages", "3", "--runs", "2")
    assert result.returncode == 0, result.stderr
    load = re.search(r"^model load (\d+\.\d\d) s ", result.stdout, re.M)
    per_message = re.search(r"^ms per message against 12 stored memories: (\d+\.\d\d) \(median of 2 runs of 3 "
                            r"messages;", result.stdout, re.M)
    assert load and per_message, result.stdout
    assert 0 < float(load[1]) < 60 and 0 < float(per_message[1]) < 1000


def test_benchmark_script_bad_option_is_one_line_and_exit_2():
    result = run_script(BENCHMARK, "--runs", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "--runs" in result.stderr
