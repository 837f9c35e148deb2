"""A scripted model for the chats' servers: answers by the message, streaming its raw text in pieces as the real
model does. A message with "boom" fails as a model error does; one with "wait" blocks until `release` is set."""

import re
import threading
import time
from collections.abc import Callable

from llm.common.inference import Answer
from llm.common.markers import ANSWER_END, strip_markers

STUB_TIMEOUT_S = 60


class ScriptedModel:
    def __init__(self, replies: dict[str, str], default: str, pause_s: float = 0.0) -> None:
        self.replies, self.default, self.pause_s = replies, default, pause_s
        self.inputs: list[str] = []  # what it was given: the message, with a recalled tag in front if any
        self.waiting = threading.Event()
        self.release = threading.Event()

    def answer(self, model_input: str, on_text: Callable[[str], None] | None = None) -> Answer:
        self.inputs.append(model_input)
        message = re.sub(r"^\[[^\]]*\]\s*", "", model_input)  # a recalled tag in front
        if "boom" in message:
            raise RuntimeError("CUDA out of memory (stub)")
        if "wait" in message:
            self.waiting.set()
            self.release.wait(STUB_TIMEOUT_S)
        raw = self.replies.get(message, self.default)
        for end in range(1, len(raw) + 1, 3) if on_text is not None else ():
            on_text(raw[:end])
            time.sleep(self.pause_s)
        at = raw.find(ANSWER_END)
        return Answer(model_input, strip_markers(raw if at < 0 else raw[:at]), 1, len(raw))
