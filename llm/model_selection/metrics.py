"""Answer-quality metrics that compare candidate base models: pure functions on generated answers.

Conventions: an answer's *body* is its text with the prompt markers removed, whitespace stripped and
a leading memory tag split off. A metric whose denominator is zero (no rows to measure) returns NaN,
so "not measured" is never mistaken for 0 % or 100 %. Lists that pair up must have equal lengths
(ValueError otherwise).
"""

import math
from difflib import SequenceMatcher

from llm.common.korean import hangul_ratio
from llm.common.markers import strip_markers
from llm.common.tags import Tag, leading_tag, parse_tag

REPETITION_THRESHOLD = 0.9  # SequenceMatcher ratio at or above which two samples count as the same answer


def _share(hits: int, total: int) -> float:
    """hits / total, or NaN when there is nothing to count."""
    return hits / total if total else math.nan


def _normalise(text: str) -> str:
    """Collapse every run of whitespace into one space and strip the ends."""
    return " ".join(text.split())


def answer_body(answer: str) -> str:
    """The answer without markers, surrounding whitespace and a leading tag."""
    return leading_tag(strip_markers(answer))[1]


def answer_tag(answer: str) -> Tag | None:
    """The answer's leading tag (a memory or a bare mark such as "[경고]"), normalised; None if it has none."""
    return leading_tag(strip_markers(answer))[0]


def empty_answer_rate(answers: list[str]) -> float:
    """Share of answers whose body is empty (a tag-only answer is empty); NaN for no answers."""
    return _share(sum(not answer_body(a) for a in answers), len(answers))


def stop_rate(stopped: list[bool]) -> float:
    """Share of samples that ended at the end marker or EOS rather than the token cap; NaN for none."""
    return _share(sum(bool(s) for s in stopped), len(stopped))


def is_repeated(first: str, second: str, threshold: float = REPETITION_THRESHOLD) -> bool:
    """True if the whitespace-normalised bodies have a SequenceMatcher ratio >= threshold."""
    a, b = _normalise(answer_body(first)), _normalise(answer_body(second))
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= threshold


def self_repetition_rate(sample_pairs: list[tuple[str, str]], threshold: float = REPETITION_THRESHOLD) -> float:
    """Share of prompts whose two samples are near-identical (see is_repeated), over pairs where at
    least one body is non-empty (both empty is counted by empty_answer_rate); NaN if no such pair."""
    pairs = [(a, b) for a, b in sample_pairs if answer_body(a) or answer_body(b)]
    return _share(sum(is_repeated(a, b, threshold) for a, b in pairs), len(pairs))


def answer_hangul_ratio(answers: list[str]) -> float:
    """Mean hangul_ratio of the bodies that contain at least one letter (emoji-, digit- or
    punctuation-only bodies say nothing about language and are left out); NaN if there are none."""
    bodies = [b for b in map(answer_body, answers) if any(ch.isalpha() for ch in b)]
    return sum(map(hangul_ratio, bodies)) / len(bodies) if bodies else math.nan


def _expected_tags(expected_tags: list[str]) -> list[Tag | None]:
    """Parse expected tags, memories or bare marks ("" or None: no tag expected); ValueError on a malformed tag."""
    parsed = []
    for text in expected_tags:
        if not text or not text.strip():
            parsed.append(None)
            continue
        tag = parse_tag(text)
        if tag is None:
            raise ValueError(f"not a tag: {text!r}")
        parsed.append(tag)
    return parsed


def memory_tag_accuracy(expected_tags: list[str], answers: list[str]) -> float:
    """Over rows that expect a tag, share of answers whose leading tag is that tag (same key and value, or the
    same bare mark; normalised); rows expecting none are ignored; NaN if no row expects a tag."""
    rows = [(e, answer_tag(a)) for e, a in zip(_expected_tags(expected_tags), answers, strict=True) if e]
    return _share(sum(e == got for e, got in rows), len(rows))


def memory_tag_key_accuracy(expected_tags: list[str], answers: list[str]) -> float:
    """Like memory_tag_accuracy, but only the tag's key has to match; NaN if no row expects a tag."""
    rows = [(e, answer_tag(a)) for e, a in zip(_expected_tags(expected_tags), answers, strict=True) if e]
    return _share(sum(got is not None and e.key == got.key for e, got in rows), len(rows))


def summarise(
    sample_pairs: list[tuple[str, str]],
    stopped: list[tuple[bool, bool]],
    expected_tags: list[str] | None = None,
) -> dict[str, float]:
    """All metrics of one candidate: one (first, second) sample pair, stop flag pair and expected
    tag ("" for none) per prompt; every sample of a prompt is checked against that prompt's tag."""
    if len(stopped) != len(sample_pairs):
        raise ValueError(f"{len(sample_pairs)} sample pairs but {len(stopped)} stop-flag pairs")
    answers = [a for pair in sample_pairs for a in pair]
    tags = [t for t in (expected_tags or [""] * len(sample_pairs)) for _ in range(2)]
    return {
        "prompts": len(sample_pairs),
        "samples": len(answers),
        "empty_answer_rate": empty_answer_rate(answers),
        "stop_rate": stop_rate([s for pair in stopped for s in pair]),
        "self_repetition_rate": self_repetition_rate(sample_pairs),
        "answer_hangul_ratio": answer_hangul_ratio(answers),
        "memory_tag_accuracy": memory_tag_accuracy(tags, answers),
        "memory_tag_key_accuracy": memory_tag_key_accuracy(tags, answers),
    }
