"""The tag grammar (llm/common/tags.py): every module reads "[key: value]" memories and bare "[key]" marks the same
way, and no text, however long or odd, makes reading one slow."""

import pytest

from llm.common.tags import Tag, leading_tag, parse_memory_tag, parse_tag, split_memory_tag


@pytest.mark.parametrize("text, tag, rest", [
    ("[일정: 12월 10일 회사 면접] 잘 보고 와!", Tag("일정", "12월 10일 회사 면접"), "잘 보고 와!"),
    ("  [ 기분 :  피곤함 ]   푹 쉬어", Tag("기분", "피곤함"), "푹 쉬어"),
    ("[경고] 그런 말은 하지 마.", Tag("경고"), "그런 말은 하지 마."),
    ("[시간: 10:30 회의] 곧이네", Tag("시간", "10:30 회의"), "곧이네"),  # a value may hold ':'
    ("[ : 면접] 응", None, "[ : 면접] 응"), ("[일정:] 응", None, "[일정:] 응"), ("[[a: b]] 응", None, "[[a: b]] 응"),
    ("[a: b", None, "[a: b"), ("응 [a: b]", None, "응 [a: b]"), ("", None, ""),
])
def test_a_leading_tag_is_a_memory_a_mark_or_nothing(text, tag, rest):
    assert leading_tag(text) == (tag, rest)


def test_invisible_characters_cannot_make_two_keys_or_hide_a_key():
    assert parse_tag("[반려\u200b동물: 강아지]") == parse_tag("[반려동물: 강아지]")
    assert parse_memory_tag("[\u202e좋아하는 음식: 떡볶이]") == ("좋아하는 음식", "떡볶이")
    assert parse_memory_tag("[\u1100\u1161: b]") == parse_memory_tag("[가: b]")  # the same syllable, NFC


def test_whole_tags_memories_and_marks():
    assert parse_memory_tag("[취미: 뜨개질]") == ("취미", "뜨개질")
    assert parse_memory_tag("[경고]") is None and parse_tag("[경고]") == Tag("경고")
    assert parse_tag("[취미: 뜨개질] 그리고") is None and parse_tag(None) is None and parse_tag(3) is None
    assert split_memory_tag("[ 취미 : 뜨개질 ]  응") == ("[취미: 뜨개질]", "응")


@pytest.mark.parametrize("text", ["[a" + " " * 300_000 + "b", "[" * 300_000, "[a:" + " :" * 150_000 + "]"])
def test_a_huge_message_is_read_in_one_pass(text):
    """Such a message once froze the web chat for everyone (a backtracking regex took 94 s on 150,000 spaces);
    read in one pass, these take milliseconds."""
    tag, rest = leading_tag(text)
    assert rest == text.strip() if tag is None else len(rest) < len(text)
