"""Prompt markers and memory tags: the text conventions every script shares."""

import re

ANSWER_START = "(답변 시작) ### 답변:"
ANSWER_END = "(답변 종료)"

# A memory tag is "[key: value]" at the very start of a text, e.g. "[내일 일정: 면접]".
MEMORY_TAG = re.compile(r"^\s*\[\s*(?P<key>[^\[\]:\s][^\[\]:]*?)\s*:\s*(?P<value>[^\[\]\s][^\[\]]*?)\s*\]\s*")


# The markers whole and in the pieces a half-trained model emits on their own ("(답변 시작)", "### 답변:").
MARKER_PIECES = (ANSWER_START, ANSWER_END, *re.split(r"(?<=\)) ", ANSWER_START))


def strip_markers(text: str) -> str:
    """The text with every marker, or piece of one, removed wherever it appears."""
    for marker in MARKER_PIECES:
        text = text.replace(marker, " ")
    return text.strip()


def printable_line(text: str) -> str:
    """One line with no control characters: an untrained model emits raw bytes and newlines."""
    text = "".join(ch if ch.isprintable() else " " if ch in "\r\n\t" else "\ufffd" for ch in text)
    return " ".join(text.split())


def build_prompt(user_input: str) -> str:
    """The text the model sees before it answers."""
    return f"{user_input.strip()} {ANSWER_START}"


def build_completion(output_data: str) -> str:
    """The target the loss is computed on (the trainer appends the EOS token)."""
    return f" {output_data.strip()} {ANSWER_END}"


def split_memory_tag(text: str) -> tuple[str | None, str]:
    """Split a leading "[key: value]" tag off a text: (tag or None, rest of the text)."""
    match = MEMORY_TAG.match(text)
    if match is None:
        return None, text.strip()
    tag = f"[{match['key'].strip()}: {match['value'].strip()}]"
    return tag, text[match.end():].strip()


def parse_memory_tag(tag: str) -> tuple[str, str] | None:
    """(key, value) of a whole tag like "[오늘 날씨: 비]", or None if it is not one."""
    match = MEMORY_TAG.fullmatch(tag.strip())
    if match is None:
        return None
    return match["key"].strip(), match["value"].strip()
