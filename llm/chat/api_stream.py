"""The API's wire format: a turn as a chat.completion, or as the chat.completion.chunk events of a stream.

A stream can only append. The web page may redraw the whole answer as each token comes (llm/chat/web.py); an SSE
client only adds what it receives. So `streamable` sends the part of the answer that no later token can change,
and the last chunk carries the rest: what the client assembles is the answer the chats show.
"""

import json
import re
import time
import uuid
from dataclasses import dataclass

from llm.chat.chat import EMPTY_ANSWER, Turn, visible_text

# Bracket groups at the start of an answer (a memory tag, well-formed or not), as visible_text drops them.
_LEADING_GROUPS = re.compile(r"^(?:\s*\[+[^\[\]]*\]+)+")
_TAG_BEING_WRITTEN = re.compile(r"^\s*\[")
# Where the cleaning reaches back: brackets pair up with later ones, and a marker run ("(답변 종료)", "### 답변:")
# is only known once its symbol comes. Text is held from the first of these characters.
_REACHES_BACK = re.compile(r"[()\[\]#]")
# Marker words at the end of the text sent so far: a ")" or "##" coming next would make them a marker to remove.
_TRAILING_MARKER_WORDS = re.compile(r"(?<![0-9A-Za-z가-힣])(?:(?:답변|시작|종료|:)\s*)+$")


def _settled(tags: str) -> bool:
    """True when the leading tags can no longer change: every "[" closed, no "(", ")" or "#" (a marker piece
    inside would be rewritten first, and its brackets could pair with later ones)."""
    depth = 0
    for ch in tags:
        if ch in "()#":
            return False
        if ch == "[":
            depth += 1
        elif ch == "]" and depth:
            depth -= 1  # a stray "]" is dropped by the cleaning for good
    return depth == 0


def streamable(raw: str) -> str:
    """The beginning of the answer that the chats will show whatever tokens follow `raw` (the text generated so
    far): whole words only, nothing of a tag being written, nothing from a bracket or "#" on."""
    groups = _LEADING_GROUPS.match(raw)
    start = groups.end() if groups else 0
    body = raw[start:]
    if _TAG_BEING_WRITTEN.match(body) or not _settled(raw[:start]):
        return ""  # a tag is being written (or one may still change): hidden, as the web page hides it
    special = _REACHES_BACK.search(body)
    head = body[:special.start()] if special else body
    cut = next((index + 1 for index in range(len(head) - 1, -1, -1) if head[index].isspace()), 0)
    words = _TRAILING_MARKER_WORDS.search(head[:cut])
    if words:
        cut = words.start()
    shown = visible_text(raw[:start + cut])
    return "" if shown == EMPTY_ANSWER else shown


@dataclass(frozen=True)
class Finished:
    """A turn once generated, as the API reports it."""

    turn: Turn
    prompt_tokens: int
    completion_tokens: int
    stopped: bool  # False: cut off by the length limit (finish_reason "length")
    memory_off: str | None  # why no memory was used, if none was

    @property
    def finish_reason(self) -> str:
        return "stop" if self.stopped else "length"

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def memory_note(self, ignored_messages: int) -> dict:
        """This server's addition to the answer (clients ignore unknown fields): what memory did, like /why."""
        turn = self.turn
        return {"recalled": turn.recalled, "relevance": turn.recall_score, "stored": turn.stored,
                "memory_off": self.memory_off, "ignored_messages": ignored_messages}


class Completion:
    """One completion's id, time and model, shared by its body or by every chunk of its stream."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None}

    def body(self, finished: Finished, ignored_messages: int) -> dict:
        message = {"role": "assistant", "content": finished.turn.shown, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finished.finish_reason}
        return {**self._head("chat.completion"), "choices": [choice], "usage": finished.usage(),
                "ohlora": finished.memory_note(ignored_messages)}

    def chunk(self, delta: dict, finish_reason: str | None = None, **extra) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return event({**self._head("chat.completion.chunk"), "choices": [choice], **extra})

    def usage_chunk(self, finished: Finished) -> str:
        """The extra last chunk that stream_options.include_usage asks for: no choices, the usage."""
        return event({**self._head("chat.completion.chunk"), "choices": [], "usage": finished.usage()})


def event(data: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
