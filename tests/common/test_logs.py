"""What a program's lines look like in a terminal: whole, broken between words, as wide as the terminal shows them."""

import io
import sys

import pytest
from wcwidth import wcswidth  # pyte's own measure of terminal columns, independent of the product's

from llm.common.logs import lines_above_bars


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def shown(monkeypatch: pytest.MonkeyPatch, *lines: str) -> list[str]:
    """The rows a terminal of 41 columns shows when a program prints `lines` (the last column stays free)."""
    monkeypatch.setenv("COLUMNS", "41")
    screen = Terminal()
    with monkeypatch.context() as patch:  # set here, in the test's own phase: pytest swaps stdout between phases
        patch.setattr(sys, "stdout", screen)
        with lines_above_bars():
            for line in lines:
                print(line)
    return screen.getvalue().splitlines()


def test_hangul_counts_two_columns_and_lines_break_between_words(monkeypatch: pytest.MonkeyPatch):
    answer = "    answer: " + " ".join(["과목"] * 12)  # 12 + 12 x 4 + 11 = 71 columns, but only 47 characters
    rows = shown(monkeypatch, answer)
    assert len(rows) == 2 and all(wcswidth(row) <= 40 for row in rows), rows
    assert rows[0].startswith("    answer: 과목") and rows[1].startswith("  과목")  # its indent kept, the rest under it
    assert " ".join(row.strip() for row in rows) == answer.strip()


def test_a_word_wider_than_the_row_is_left_whole_and_a_narrow_line_untouched(monkeypatch: pytest.MonkeyPatch):
    path = "/home/someone/projects/oh-lora/llm/models/polyglot_original"
    rows = shown(monkeypatch, f"weights in {path} missing", "짧은 줄")
    assert rows == ["weights in", f"  {path}", "  missing", "짧은 줄"]
