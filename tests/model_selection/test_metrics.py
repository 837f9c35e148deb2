"""Model-selection metrics on hand-made answers."""

import math

import pytest

from llm.model_selection.metrics import (
    answer_body,
    answer_hangul_ratio,
    empty_answer_rate,
    memory_tag_accuracy,
    memory_tag_key_accuracy,
    self_repetition_rate,
    stop_rate,
    summarise,
)


# --- answer_body / empty_answer_rate ---

def test_answer_body_strips_markers_and_tag():
    assert answer_body(" [내일 일정: 면접] 화이팅! 😊 (답변 종료) ") == "화이팅! 😊"
    assert answer_body("(답변 시작) ### 답변: 안녕") == "안녕"


def test_empty_answer_rate_counts_blank_marker_only_and_tag_only():
    answers = ["", "   ", "(답변 종료)", "[오늘 날씨: 비]", "안녕! 반가워 😊"]
    assert empty_answer_rate(answers) == pytest.approx(4 / 5)


def test_empty_answer_rate_all_empty_and_none_empty():
    assert empty_answer_rate(["", " \n", "[기분: 좋음]  (답변 종료)"]) == 1.0
    assert empty_answer_rate(["응!", "😊", "hello"]) == 0.0


def test_empty_answer_rate_no_answers_is_nan():
    assert math.isnan(empty_answer_rate([]))


# --- stop_rate ---

def test_stop_rate():
    assert stop_rate([True, False, True, True]) == 0.75
    assert stop_rate([False, False]) == 0.0
    assert math.isnan(stop_rate([]))


# --- self_repetition_rate ---

def test_identical_and_whitespace_only_differences_are_repeated():
    pairs = [("안녕! 반가워 😊", "안녕!  반가워 😊\n"), ("[기분: 좋음] 좋아!", "좋아! (답변 종료)")]
    assert self_repetition_rate(pairs) == 1.0


def test_near_identical_vs_different_pairs():
    near = ("오늘 떡볶이 먹으러 가자! 너무 맛있겠다 😊", "오늘 떡볶이 먹으러 가자! 너무 맛있겠다 ✨")
    different = ("나는 밤하늘 사진 찍는 걸 좋아해!", "응, 내일 시험 잘 봐! 화이팅!")
    assert self_repetition_rate([near, different]) == 0.5


def test_both_empty_pairs_are_excluded_one_empty_is_not_repeated():
    assert self_repetition_rate([("", "(답변 종료)"), ("안녕!", "")]) == 0.0
    assert math.isnan(self_repetition_rate([("", " "), ("[기분: 좋음]", "")]))
    assert math.isnan(self_repetition_rate([]))


# --- answer_hangul_ratio ---

def test_hangul_ratio_pure_korean_and_no_hangul():
    assert answer_hangul_ratio(["안녕 반가워!"]) == 1.0
    assert answer_hangul_ratio(["Hello there!"]) == 0.0


def test_hangul_ratio_mixed_korean_english_is_mean_over_answers():
    # "AI 좋아" -> 2 Hangul of 4 letters = 0.5; "좋아" -> 1.0
    assert answer_hangul_ratio(["AI 좋아", "좋아"]) == pytest.approx(0.75)


def test_hangul_ratio_skips_empty_and_emoji_only_and_ignores_tag():
    assert answer_hangul_ratio(["", "😊✨", "[기분: 좋음] ok", "응"]) == pytest.approx(0.5)


def test_hangul_ratio_nothing_to_measure_is_nan():
    assert math.isnan(answer_hangul_ratio([]))
    assert math.isnan(answer_hangul_ratio(["", "🌌🍓", "123 !!"]))


# --- memory tags ---

def test_memory_tag_matched_mismatched_missing():
    expected = ["[내일 일정: 면접]", "[내일 일정: 면접]", "[내일 일정: 면접]", "[오늘 날씨: 비]"]
    answers = [
        "[내일  일정 :  면접 ] 화이팅!",  # matched after whitespace normalising
        "[내일 일정: 시험] 잘 봐!",      # key right, value wrong
        "면접 화이팅!",                  # tag missing
        "[기분: 좋음] 우산 챙겨!",        # other key
    ]
    assert memory_tag_accuracy(expected, answers) == 0.25
    assert memory_tag_key_accuracy(expected, answers) == 0.5


def test_rows_expecting_no_tag_are_ignored():
    expected = ["", "[기분: 좋음]", "  "]
    answers = ["[오늘 날씨: 비] 비 온다", "[기분: 좋음] 다행이다!", "안녕"]
    assert memory_tag_accuracy(expected, answers) == 1.0


def test_no_row_expects_a_tag_is_nan():
    assert math.isnan(memory_tag_accuracy(["", ""], ["[기분: 좋음] 응", "안녕"]))
    assert math.isnan(memory_tag_accuracy([], []))
    assert math.isnan(memory_tag_key_accuracy([], []))


def test_memory_tag_errors():
    with pytest.raises(ValueError):
        memory_tag_accuracy(["[기분: 좋음]"], ["응", "응"])
    with pytest.raises(ValueError):
        memory_tag_accuracy(["기분 좋음"], ["응"])


# --- summarise ---

def test_summarise():
    pairs = [("[내일 일정: 면접] 화이팅!", "[내일 일정: 면접] 화이팅!"), ("", "hello")]
    result = summarise(pairs, [(True, True), (False, True)], ["[내일 일정: 면접]", ""])
    assert result == {
        "prompts": 2,
        "samples": 4,
        "empty_answer_rate": 0.25,
        "stop_rate": 0.75,
        "self_repetition_rate": 0.5,
        "answer_hangul_ratio": pytest.approx(2 / 3),
        "memory_tag_accuracy": 1.0,
        "memory_tag_key_accuracy": 1.0,
    }


def test_summarise_empty_inputs_do_not_crash():
    result = summarise([], [])
    assert result["prompts"] == 0
    assert all(math.isnan(v) for k, v in result.items() if k not in ("prompts", "samples"))
