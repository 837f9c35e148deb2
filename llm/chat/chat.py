"""The chat with Oh-LoRA: turns, commands and the memory around the model (which is passed in as a function).

No torch here: the model comes in as `answer(model_input) -> Answer`, so tests drive the loop with a stub.
"""

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from llm.common.markers import printable_line, strip_markers
from llm.common.tags import FORGET_MARK, leading_tag, parse_memory_tag, split_memory_tag
from llm.memory.store import MemoryStore, MemoryUnavailable

MEMORY_FOLDER = Path(__file__).resolve().parents[1] / "memory"
DEFAULT_MEMORY_DB = MEMORY_FOLDER / "ohlora_memory.db"
# The stand-in's noise ("[좋아하는 가수: � 너무]") must never become what the real model's chats recall.
STAND_IN_MEMORY_DB = MEMORY_FOLDER / "ohlora_memory_stand_in.db"
USER_LABEL = "나: "
BOT_LABEL = "오로라: "
EMPTY_ANSWER = "…"  # shown when nothing is left of an answer once its tag and markers are gone
NOT_TEXT = "(that message holds bytes or characters that are not valid text, so it was not sent; type it again)"
MAX_MESSAGE_CHARS = 2000  # far more than a chat message; the model's own limit (in tokens) is checked after
# Each fits one line of a 120-column terminal; the memory's place has a line of its own, a path being any length.
MEMORY_OPTIONS = "(--memory-db chooses where the memory is kept, --no-memory turns it off)"
HINT = "commands: /memory what she remembers, /why what she recalled, /forget clears it, /quit (or Ctrl-D)"

# Bracketed text at the start of an answer: a memory tag, well-formed or not ("[: 면접]", "[[a: b]]").
_LEADING_BRACKETS = re.compile(r"^(?:\s*\[+[^\[\]]*\]+)+\s*")

T = TypeVar("T")


class HasText(Protocol):
    text: str  # what llm.common.inference.Answer holds: markers stripped, a leading memory tag kept


@dataclass(frozen=True)
class Turn:
    message: str  # what the user typed
    model_input: str  # what the model got: the message, with a recalled memory tag in front if one was relevant
    recalled: str | None
    recall_score: float | None  # the recalled memory's relevance to the message
    stored: str | None  # the tag from the answer that went into the memory
    shown: str  # the answer the user sees
    mark: str | None = None  # a bare mark the answer began with: "경고", "잊기" or "위기" (docs/dataset.md)
    forgot: str | None = None  # the recalled memory that "[잊기]" deleted


def not_utf8(text: str) -> bool:
    """True for text that is not valid Unicode: bytes that were not UTF-8 (Python keeps them as lone surrogates),
    or lone surrogates a browser sent."""
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def readable(text: str) -> str:
    """The text with bytes that were not UTF-8 shown as \ufffd, so that it can be printed."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def visible_text(answer_text: str) -> str:
    """The answer as shown: no markers, no leading memory tag (well-formed or not), one printable line."""
    return printable_line(_LEADING_BRACKETS.sub("", strip_markers(answer_text))) or EMPTY_ANSWER


def memory_file(chosen: Path | None, stand_in: bool) -> Path:
    """The memory file: --memory-db when given, else the real model's, or the stand-in's own."""
    return chosen if chosen is not None else STAND_IN_MEMORY_DB if stand_in else DEFAULT_MEMORY_DB


def open_memory(path: Path, warn: Callable[[str], None]) -> tuple[MemoryStore | None, str]:
    """(the memory store, "") after a line to `warn` naming the file, and one on the options; or, after one line
    saying why the chat goes on without it, (None, that line)."""
    try:
        store = MemoryStore(path)
    except MemoryUnavailable as error:
        warn(f"memory is off: {error}")
        return None, f"memory is off: {error}"
    warn(f"memory: {path} ({len(store.memories())} remembered)")
    warn(MEMORY_OPTIONS)
    return store, ""


class MessageTooLong(Exception):
    """The model input does not fit the model's context; the message says by how much."""


class Chat:
    """One conversation: answers messages and the /commands, storing and recalling memory tags."""

    def __init__(self, answer: Callable[[str], HasText], memory: MemoryStore | None,
                 say: Callable[[str], None] = print, warn: Callable[[str], None] | None = None,
                 memory_off_reason: str = "memory is off",
                 too_long: Callable[[str], str | None] = lambda model_input: None, show_recall: bool = False) -> None:
        self.answer = answer
        self.show_recall = show_recall
        self.last_turn: Turn | None = None
        self.too_long = too_long
        self.memory = memory
        self.say = say
        self.warn = warn if warn is not None else (lambda text: print(text, file=sys.stderr))
        self.memory_off_reason = memory_off_reason

    def _with_memory(self, use: Callable[[MemoryStore], T]) -> T | None:
        """Run one memory operation; if the database fails now, say so once and go on without memory."""
        if self.memory is None:
            return None
        try:
            return use(self.memory)
        except MemoryUnavailable as error:
            self.memory = None
            self.memory_off_reason = f"memory is off: {error}"
            self.warn(self.memory_off_reason)
            return None

    def turn(self, message: str) -> Turn:
        """Answer one message: recall the most relevant memory, generate, store the answer's tag."""
        if len(message) > MAX_MESSAGE_CHARS:  # before anything reads it: a huge message must cost nothing
            raise MessageTooLong(f"message too long: {len(message):,} characters, she reads at most "
                                 f"{MAX_MESSAGE_CHARS:,}; say it in fewer words")
        message = message.strip()
        # A tag the user typed is chat text: never stored, and no second tag is put before it.
        user_typed_tag = split_memory_tag(message)[0] is not None
        found = None if user_typed_tag else self._with_memory(lambda memory: memory.most_relevant(message))
        recalled, score = found if found else (None, None)
        model_input = f"{recalled} {message}" if recalled else message
        reason = self.too_long(model_input)
        if reason is not None:
            raise MessageTooLong(reason)
        answer_text = self.answer(model_input).text
        tag = leading_tag(answer_text)[0]
        stored = forgot = None
        if tag is not None and tag.is_memory:
            stored = str(tag) if self._with_memory(lambda memory: memory.add(str(tag), message)) else None
        elif tag is not None and tag.key == FORGET_MARK and recalled:  # she was asked to forget what was recalled
            key = parse_memory_tag(recalled)[0]
            forgot = recalled if self._with_memory(lambda memory: memory.forget(key)) else None
        mark = tag.key if tag is not None and not tag.is_memory else None
        return Turn(message, model_input, recalled, score, stored, visible_text(answer_text), mark, forgot)

    def show_memories(self) -> None:
        memories = self._with_memory(lambda memory: memory.memories())
        if memories is None:
            self.say(f"({self.memory_off_reason})")
        elif not memories:
            self.say("(no memories yet)")
        else:
            self.say(f"(she remembers {len(memories)}, newest first)")
            for memory in memories:
                when = f"{memory.time:%Y-%m-%d %H:%M}" if memory.time else "time unknown"
                self.say(f"  {memory.tag}  {when}  from: {memory.user_message}")

    def recall_note(self, turn: Turn) -> str:
        """Which memory went in front of a message, or why none did."""
        if turn.recalled is not None:
            return f"(recalled {turn.recalled}, relevance {turn.recall_score:.2f})"
        if self.memory is None:
            return f"(nothing recalled: {self.memory_off_reason})"
        return "(no memory recalled: none was relevant enough)"

    def why(self) -> None:
        """Which memory was put in front of the last message, and why."""
        self.say("(no message yet)" if self.last_turn is None else self.recall_note(self.last_turn))

    def forget(self) -> None:
        def clear(memory: MemoryStore) -> int:
            count = len(memory.memories())
            memory.clear()
            return count

        count = self._with_memory(clear)
        self.say(f"({self.memory_off_reason})" if count is None else f"(memory cleared: {count} forgotten)")

    def handle(self, line: str) -> bool:
        """Act on one input line (a command or a message); False when the user leaves."""
        text = line.strip()
        command = text.lower()
        if not text:
            return True
        if not_utf8(text):
            self.say(NOT_TEXT)
            return True
        if command in ("/quit", "/exit"):
            return False
        if command == "/memory":
            self.show_memories()
        elif command == "/forget":
            self.forget()
        elif command == "/why":
            self.why()
        elif command == "/help":
            self.say(f"({HINT})")
        elif re.fullmatch(r"/[a-z]+", command):
            self.say(f"(unknown command {text}; {HINT})")
        else:
            try:
                self.last_turn = self.turn(text)
                if self.show_recall:
                    self.say(self.recall_note(self.last_turn))
                self.say(BOT_LABEL + self.last_turn.shown)
                if self.last_turn.forgot:
                    self.say(f"(forgotten: {self.last_turn.forgot})")
            except MessageTooLong as error:
                self.say(f"({error})")  # the chat goes on; nothing was generated or stored
        return True


def run_prompts(chat: Chat, prompts: Iterable[str]) -> None:
    """Scripted use: each prompt (or command) in order, echoed like a typed line."""
    for prompt in prompts:
        chat.say(USER_LABEL + readable(prompt))
        if not chat.handle(prompt):
            return


def run_interactive(chat: Chat, read: Callable[[str], str] = input, echo: bool | None = None) -> None:
    """Read lines until /quit or end of input (Ctrl-D); piped input is echoed so the transcript reads as a chat."""
    echo = not sys.stdin.isatty() if echo is None else echo
    if not echo:
        try:
            import readline  # noqa: F401 (line editing in input(): wide Hangul characters erase cleanly)
        except ImportError:  # not on Windows
            pass
    chat.say(f"({HINT})")
    while True:
        try:
            line = read("" if echo else USER_LABEL)
        except EOFError:
            if not echo:
                chat.say("")  # end the "나: " line Ctrl-D left open
            return
        if echo:
            chat.say(USER_LABEL + readable(line))
        if not chat.handle(line):
            return
