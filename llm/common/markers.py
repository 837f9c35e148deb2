"""The prompt template's markers: building prompts and completions, and stripping marker pieces from answers."""

import re

ANSWER_START = "(답변 시작) ### 답변:"
ANSWER_END = "(답변 종료)"

# A marker's pieces: a half-trained model emits them in any order and number ("(답변 종료)", "종료)",
# "### 답변:", "(답변"); a run of them counts as a marker fragment when it holds a word and a symbol.
_MARKER_PIECE = r"(?:\(|\)|답변|시작|종료|#{2,}|:)"
_MARKER_RUN = re.compile(rf"(?<![0-9A-Za-z가-힣]){_MARKER_PIECE}(?:\s*{_MARKER_PIECE})+(?![0-9A-Za-z가-힣])")
_MARKER_WORDS = ("답변", "시작", "종료")
_CUT_OFF_MARKER = re.compile(r"\((?:답(?:변(?:\s*(?:시작?|종료?))?)?)?\s*$")  # the length limit hit mid-marker


def _marker_fragment(match: re.Match) -> str:
    run = match.group()
    is_fragment = any(word in run for word in _MARKER_WORDS) and any(ch in run for ch in "()#")
    return " " if is_fragment else run


def _without_bare_brackets(text: str) -> str:
    """Drop brackets that pair with nothing ("좋아 )", "오늘 [", a tag cut off by the length limit) and empty pairs."""
    opened: list[int] = []
    drop: set[int] = set()
    for index, ch in enumerate(text):
        if ch in "([":
            opened.append(index)
        elif ch in ")]":
            if opened and text[opened[-1]] == {")": "(", "]": "["}[ch]:
                start = opened.pop()
                if not text[start + 1:index].strip():
                    drop.update((start, index))
            else:
                drop.add(index)
    drop.update(opened)
    return "".join(ch for index, ch in enumerate(text) if index not in drop)


def strip_markers(text: str) -> str:
    """The text with every marker, piece of one, and bare bracket removed wherever it appears."""
    text = _MARKER_RUN.sub(_marker_fragment, _CUT_OFF_MARKER.sub("", text))
    return " ".join(_without_bare_brackets(text).split())


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

