"""The tag grammar: the one reader of "[key: value]" memory tags and bare "[key]" marks such as "[경고]".

An answer may begin with a tag; a prompt may begin with a recalled one. Every module that reads a tag (the
dataset loader, the chat, the memory store, model selection's metrics) reads it here. Parsing is a scan, not a
backtracking regex: its cost is linear in the text, whatever the text holds (a message of 150,000 spaces
after "[" included).
"""

import unicodedata
from dataclasses import dataclass


# The bare marks an answer may begin with (never stored, never shown): a warning on an abusive message; a request
# to forget the memory that was recalled for it; a crisis the service flags (docs/dataset.md).
WARNING_MARK, FORGET_MARK, CRISIS_MARK = "경고", "잊기", "위기"


@dataclass(frozen=True)
class Tag:
    """A tag's parts, normalised: `value` is None for a bare mark ("[경고]"), which is shown to no one and
    never stored."""

    key: str
    value: str | None = None

    @property
    def is_memory(self) -> bool:
        return self.value is not None

    def __str__(self) -> str:
        return f"[{self.key}: {self.value}]" if self.value is not None else f"[{self.key}]"


def normalise_part(text: str) -> str:
    """NFC, without invisible format characters (bidi overrides, zero-width spaces), whitespace collapsed: two
    keys that look the same are the same key, and a U+202E cannot reverse what a key shows."""
    text = unicodedata.normalize("NFC", text)
    return " ".join("".join(ch for ch in text if unicodedata.category(ch) != "Cf").split())


def _leading(text: str) -> tuple[Tag | None, int]:
    """The tag at the start of `text` (after whitespace) and the index just past its "]"; (None, 0) if none."""
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        return None, 0
    close = text.find("]", start + 1)
    if close < 0:
        return None, 0
    inner = text[start + 1:close]
    if "[" in inner:
        return None, 0
    key, colon, value = inner.partition(":")
    key, value = normalise_part(key), normalise_part(value)
    if not key or (colon and not value):
        return None, 0
    return Tag(key, value if colon else None), close + 1


def leading_tag(text: str) -> tuple[Tag | None, str]:
    """(the tag at the start of the text or None, the rest of the text stripped)."""
    tag, end = _leading(text)
    return tag, text[end:].strip()


def parse_tag(text: object) -> Tag | None:
    """The tag when the whole text is one tag (memory or bare mark), else None (also for non-strings)."""
    if not isinstance(text, str):
        return None
    tag, end = _leading(text)
    return tag if tag is not None and not text[end:].strip() else None


def split_memory_tag(text: str) -> tuple[str | None, str]:
    """Split a leading tag off a text: (the tag as text, normalised, or None; the rest of the text)."""
    tag, rest = leading_tag(text)
    return (str(tag) if tag else None), rest


def parse_memory_tag(text: object) -> tuple[str, str] | None:
    """(key, value) of a whole "[key: value]" memory tag, neither part empty; None for anything else (a bare
    mark, a malformed tag, a non-string)."""
    tag = parse_tag(text)
    return (tag.key, tag.value) if tag is not None and tag.is_memory else None
