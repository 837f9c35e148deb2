"""The offline scorer (Kiwi words and meaning, a fitted logistic model): what it recalls, when it stays quiet, and
the scripts that fit and time it."""

import csv
import json
import re
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from helpers.data import write_csv
from helpers.scripts import REPO, run_in_process
from llm.common.tags import parse_memory_tag
from llm.memory import morphemes, offline_scorer
from llm.memory.morphemes import lemmas, space
from llm.memory.offline_scorer import FEATURES, MODEL_JSON, OfflineScorer, feature_rows
from llm.memory.relevance import MAX_MESSAGE_CHARS, ScorerError
from llm.memory.research.data import CASES_CSV, PAIRS_CSV, read_pairs

TRAIN, EVALUATE, BENCHMARK = (f"llm/memory/{name}.py" for name in ("train_retrieval", "evaluate_retrieval",
                                                                     "benchmark_retrieval"))

# Memories like a chat's: the dataset's keys and some a fine-tuned model invents.
STORED = ["[일정: 면접]", "[좋아하는 음식: 떡볶이]", "[반려동물: 강아지 초코]", "[전공: 경영학]",
          "[응원하는 팀: 두산]", "[자격증: 정보처리기사]", "[알레르기: 땅콩]"]


@pytest.fixture(scope="module")
def scorer() -> OfflineScorer:
    return OfflineScorer.load()


def best_of(scorer: OfflineScorer, tags: list[str], message: str) -> str:
    """The tag ranked first, whether or not it reaches the threshold."""
    scores = scorer.scores(tags, message)
    return tags[int(np.argmax(scores))]


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


def test_words_kiwi_does_not_know_have_no_vector():
    # every unknown Latin word is Kiwi's one SL placeholder: as vectors they would all be the same word
    ok, infp = (space().kiwi.tokenize(word)[0].id for word in ("ok", "INFP"))
    assert ok == infp and not space().has_vector(ok)


def test_the_model_is_a_small_json_matching_the_features():
    model = json.loads(MODEL_JSON.read_text(encoding="utf-8"))
    assert tuple(model["features"]) == FEATURES and len(model["coef"]) == len(FEATURES)
    assert 0.0 < model["threshold"] < 1.0
    assert f"kiwipiepy=={model['kiwipiepy']}" in (REPO / "requirements.txt").read_text()  # the version it was fit with


def test_a_key_never_seen_in_training_is_ranked_through_meaning(scorer: OfflineScorer):
    trained_keys = {parse_memory_tag(tag)[0] for tag, _, _ in read_pairs(PAIRS_CSV)}
    assert {"응원하는 팀", "자격증", "알레르기"}.isdisjoint(trained_keys)  # not in the in-repo pairs
    # no word of the memory is in the message: 야구 and 역전승 are what tie it to 두산
    assert best_of(scorer, STORED, "어제 야구 9회말 역전승 봤어?") == "[응원하는 팀: 두산]"
    assert best_of(scorer, STORED, "기사 시험 붙었어") == "[자격증: 정보처리기사]"
    assert scorer.relevance("[응원하는 팀: 두산]", "어제 야구 9회말 역전승 봤어?") > 3 * scorer.relevance(
        "[응원하는 팀: 두산]", "떡볶이 먹고 싶다")
    # 견과류 finds 땅콩 far above the unrelated memories (a known miss: 과자 makes the food memory rank first)
    nuts = dict(zip(STORED, scorer.scores(STORED, "이 과자 먹어도 될까? 견과류 들어갔나 봐")))
    assert nuts["[알레르기: 땅콩]"] > 2 * max(nuts[t] for t in ("[전공: 경영학]", "[응원하는 팀: 두산]", "[일정: 면접]"))


def test_the_value_mentioned_with_a_particle_is_recalled(scorer: OfflineScorer):
    assert scorer.most_relevant(STORED, "떡볶이를 세 번이나 먹었어")[0] == "[좋아하는 음식: 떡볶이]"
    assert scorer.most_relevant(STORED, "면접 때 자기소개 어떻게 하지?")[0] == "[일정: 면접]"
    # 강아지 without its name: ranked first, though not surely enough to be put in front of the message
    assert best_of(scorer, STORED, "우리 강아지가 산책 가자고 졸라") == "[반려동물: 강아지 초코]"


@pytest.mark.parametrize("message", ["안녕 로라!", "오늘 우산 챙겨야 할까?", "회사에서 혼났어", "?!", "   ", "ㅋㅋㅋ"])
def test_none_when_no_memory_fits(scorer: OfflineScorer, message):
    assert scorer.most_relevant(STORED, message) is None


@pytest.mark.parametrize("tag, message", [("[MBTI: INFP]", "ok"), ("[x: y]", "블루 레드 그린"),
                                          ("[좋아하는 가수: BTS]", "lol")])
def test_nothing_to_go_on_scores_zero(scorer: OfflineScorer, tag, message):
    # no word with a vector on either side, nothing shared: the model's intercept is not a guess to act on
    assert scorer.relevance(tag, message) == 0.0


def test_invisible_characters_and_decomposed_hangul_change_nothing(scorer: OfflineScorer):
    message = "떡볶이를 세 번이나 먹었어"
    plain = scorer.relevance("[좋아하는 음식: 떡볶이]", message)
    assert plain > scorer.threshold
    assert scorer.relevance("[\u202e좋아하는 음식: 떡볶이]", message) == plain  # a right-to-left override
    assert scorer.relevance("[좋아하는\u200b 음식: 떡\u200b볶이]", message) == plain  # zero-width spaces
    assert scorer.relevance("[좋아하는 음식: 떡볶이]", unicodedata.normalize("NFD", message)) == plain


def test_a_huge_message_is_read_only_up_to_the_bound(scorer: OfflineScorer):
    message = "우리 강아지 산책 " * (10 * MAX_MESSAGE_CHARS)
    start = time.perf_counter()
    score = scorer.relevance("[반려동물: 강아지 초코]", message)
    assert time.perf_counter() - start < 5.0
    assert score == scorer.relevance("[반려동물: 강아지 초코]", message[:MAX_MESSAGE_CHARS])


def test_at_most_one_memory_and_only_from_the_threshold(scorer: OfflineScorer):
    message = "떡볶이를 세 번이나 먹었어"
    tag, score = scorer.most_relevant(STORED, message)  # one tag and its score, not a list
    assert score == pytest.approx(scorer.relevance(tag, message))
    assert score == pytest.approx(max(scorer.relevance(t, message) for t in STORED))  # batch and alone agree
    # another threshold is another scorer, passed where it is wanted; the process's own is untouched
    stricter = OfflineScorer({**scorer.model, "threshold": score + 1e-6})
    assert stricter.most_relevant(STORED, message) is None
    assert OfflineScorer({**scorer.model, "threshold": score}).most_relevant(STORED, message) == (tag, score)
    assert OfflineScorer.load() is scorer and scorer.most_relevant([], message) is None


def test_ties_go_to_the_earlier_tag_and_malformed_tags_score_zero(scorer: OfflineScorer):
    class Tied(OfflineScorer):
        def score_memories(self, memories, message):
            return [0.2, 0.9, 0.9]

    assert Tied(scorer.model).most_relevant(["[가: 1]", "[나: 2]", "[다: 3]"], "아무 말") == ("[나: 2]", 0.9)
    assert scorer.relevance("[: 면접]", "면접 봐") == 0.0 and scorer.relevance("면접", "면접 봐") == 0.0
    assert scorer.most_relevant(["not a tag", "[일정: 면접]"], "면접 때 자기소개 어떻게 하지?")[0] == "[일정: 면접]"


def test_each_memory_is_analysed_once(scorer: OfflineScorer):
    offline_scorer.analyse_memory.cache_clear()
    scorer.scores(STORED, "떡볶이 먹고 싶다")
    scorer.scores(STORED, "어제 야구 봤어?")
    scorer.scores(STORED + ["[취미: 뜨개질]"], "목도리 떴어")  # a new memory: only it is analysed
    assert offline_scorer.analyse_memory.cache_info().misses == len(STORED) + 1


def test_one_memory_scores_the_same_alone_and_among_many():
    message = "시험 범위가 너무 넓어"
    memories = [parse_memory_tag(t) for t in STORED]
    together = feature_rows(memories, message)
    assert np.allclose(together, np.vstack([feature_rows([memory], message) for memory in memories]))


def test_a_broken_model_file_is_one_line(tmp_path: Path):
    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"features": ["other"], "coef": [1.0]}), encoding="utf-8")
    with pytest.raises(ScorerError) as error:
        OfflineScorer.load(bad)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


def _small_csvs(tmp_path: Path) -> tuple[Path, Path]:
    with PAIRS_CSV.open(encoding="utf-8", newline="") as f:
        pairs = list(csv.DictReader(f))[:48]
    with CASES_CSV.open(encoding="utf-8", newline="") as f:
        cases = list(csv.DictReader(f))[:12]
    return write_csv(tmp_path / "pairs.csv", pairs), write_csv(tmp_path / "cases.csv", cases)


def test_training_refits_and_the_evaluation_tries_the_refit_without_touching_the_chats(tmp_path, scorer):
    pairs, cases = _small_csvs(tmp_path)
    out = tmp_path / "model.json"
    result = run_in_process(TRAIN, "--pairs", str(pairs), "--rows", "0:32", "--eval", str(cases), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^pairs held out by --rows \(16\): MSE \d\.\d{3}  MAE \d\.\d{3}  corr -?\d\.\d{3}$",
                     result.stdout, re.M)
    threshold = float(re.search(r"^threshold (\d\.\d\d): ", result.stdout, re.M)[1])
    assert max(len(line) for line in result.stdout.splitlines()) <= 120, result.stdout  # whole lines in a terminal
    refit = json.loads(out.read_text(encoding="utf-8"))
    assert refit["fitted_on"] == "pairs.csv rows 0:32, threshold on cases.csv rows 0:12"
    assert refit["threshold"] == threshold

    result = run_in_process(EVALUATE, "--pairs", str(pairs), "--rows", "32:", "--model", str(out))
    assert result.returncode == 0, result.stderr
    assert "  offline: pairs.csv rows 0:32, threshold on cases.csv rows 0:12" in result.stdout.splitlines()
    # the refit was tried in this very process: the chats' scorer is still the committed one
    assert OfflineScorer.load() is scorer and scorer.threshold == json.loads(MODEL_JSON.read_text())["threshold"]

    result = run_in_process(EVALUATE, "--pairs", str(pairs), "--model", str(pairs))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not an offline model" in result.stderr


def test_the_documented_refit_writes_the_committed_model(tmp_path):
    out = tmp_path / "model.json"
    result = run_in_process(TRAIN, "--out", str(out))  # the default data, as llm/memory/README.md shows it
    assert result.returncode == 0, result.stderr
    refit, committed = (json.loads(path.read_text(encoding="utf-8")) for path in (out, MODEL_JSON))
    assert "relevance_pairs_dev2" not in refit["fitted_on"]  # its pairs train the encoder only (data.py)
    assert {k: v for k, v in refit.items() if k != "trained"} == {k: v for k, v in committed.items() if k != "trained"}


@pytest.mark.parametrize("args", [["--pairs", "llm/memory/research/blind/relevance_pairs_blind.csv"],
                                  ["--eval", "llm/memory/research/blind/retrieval_cases_blind2.csv"]])
def test_the_blind_sets_are_never_fitted_on(args):
    result = run_in_process(TRAIN, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the blind set only reports" in result.stderr


def test_benchmark_script_runs_and_prints_its_figures():
    # in this process Kiwi is loaded already, so the load it reports is near 0: only the figures' form is tested
    result = run_in_process(BENCHMARK, "--memories", "12", "--messages", "3", "--runs", "2")
    assert result.returncode == 0, result.stderr
    load = re.search(r"^offline scorer: load (\d+\.\d\d) s ", result.stdout, re.M)
    per_message = re.search(r"^offline scorer: ms per message against 12 stored memories: (\d+\.\d\d)\n  \(median of "
                            r"2 runs of 3 messages;", result.stdout, re.M)
    assert load and per_message, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 100  # whole lines in a terminal
    assert 0 < float(per_message[1]) < 1000


def test_benchmark_script_bad_option_is_one_line_and_exit_2():
    result = run_in_process(BENCHMARK, "--runs", "0")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "--runs" in result.stderr
