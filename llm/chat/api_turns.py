"""The turns behind the API: each user's memory, and the model answering one turn at a time.

A turn is one of the chats' Chat (llm/chat/chat.py): the memory tag the model writes is stored and hidden, the most
relevant memory is put in front of the message. No FastAPI here; llm/chat/api.py puts it on HTTP.
"""

import hashlib
import math
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from llm.chat.api_requests import ApiError, Sampling, TurnRequest
from llm.chat.api_stream import Finished
from llm.chat.chat import MEMORY_OPTIONS, Chat, MessageTooLong
from llm.common.cli import error_line
from llm.memory.store import MemoryStore, MemoryUnavailable

ANONYMOUS_FILE = "anonymous.db"  # the user of requests that name none; never a hash's name


class Generated(Protocol):
    text: str  # what llm.common.inference.Answer holds: markers stripped, a leading memory tag kept
    output_tokens: int
    stopped: bool  # False: cut off by the length limit


Answerer = Callable[[str, Sampling, Callable[[str], None] | None], Generated]


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class ApiServices:
    """What the app needs from outside: the model and its limits, the users' memory folder, who may call."""

    answer: Answerer
    model_id: str
    too_long: Callable[[str], str | None] = lambda model_input: None
    prompt_tokens: Callable[[str], int] = lambda model_input: len(model_input.split())
    users_folder: Path | None = None  # None: no memory
    memory_off_reason: str = "memory is off (--no-memory)"
    api_key: str | None = None
    queue_limit: int = 8
    stand_in: str | None = None  # sent as a header on every response when the answers come from the stand-in
    log: Callable[[str], None] = field(default=_log)  # the server's console


def user_file(folder: Path, user: str | None) -> Path:
    """A user's memory file: named by a hash of the id, so no id names another path or another user's file."""
    if user is None:
        return folder / ANONYMOUS_FILE
    return folder / (hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest() + ".db")


def open_users_folder(folder: Path, warn: Callable[[str], None]) -> tuple[Path | None, str]:
    """(the folder, "") after a line naming it and one on the options; or (None, why memory is off) after a line
    saying so."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warn(f"memory is off: cannot create {folder} ({error.strerror or error})")
        return None, "memory is off: the server cannot keep memories"
    warn(f"memory: one file per user in {folder}")
    warn(MEMORY_OPTIONS)
    return folder, ""


class ModelGate:
    """One generation at a time (one worker thread, first come first served), at most `queue_limit` waiting."""

    def __init__(self, queue_limit: int) -> None:
        self.queue_limit = queue_limit
        self.admitted = 0  # generating and waiting
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ohlora-api-model")
        self._seconds = 1.0  # how long an answer takes, lately: for Retry-After

    def submit(self, work: Callable[[], Finished]) -> Future:
        with self._lock:
            if self.admitted > self.queue_limit:
                wait = max(1, math.ceil(self._seconds * self.admitted))
                raise ApiError(503, f"busy: one answer is being generated and {self.admitted - 1} wait, the most "
                               f"this server queues (--queue-limit {self.queue_limit}); retry in {wait} s",
                               kind="server_error", code="queue_full", headers={"Retry-After": str(wait)})
            self.admitted += 1
        future = self._worker.submit(self._timed, work)
        future.add_done_callback(self._release)
        return future

    def _timed(self, work: Callable[[], Finished]) -> Finished:
        started = time.monotonic()
        try:
            return work()
        finally:
            self._seconds = 0.7 * self._seconds + 0.3 * (time.monotonic() - started)

    def _release(self, _: Future) -> None:
        with self._lock:
            self.admitted -= 1


class Turns:
    """Answers turns as the chats do, each with the memory of its user."""

    def __init__(self, services: ApiServices) -> None:
        self.services = services

    def memory_of(self, user: str | None) -> tuple[MemoryStore | None, str | None]:
        """(the user's memory store, None), or (None, why there is none)."""
        folder = self.services.users_folder
        if folder is None:
            return None, self.services.memory_off_reason
        try:
            return MemoryStore(user_file(folder, user)), None
        except MemoryUnavailable as error:
            self.services.log(f"memory is off for one request: {error}")
            return None, "memory is off: this user's memory file cannot be used (the server's log says why)"

    def run(self, request: TurnRequest, on_text: Callable[[str], None] | None) -> Finished:
        """One turn (in the model's worker): recall, generate, store; MessageTooLong when the input does not fit."""
        memory, off = self.memory_of(request.user)
        generated: list[Generated] = []

        def answer(model_input: str) -> Generated:
            generated.append(self.services.answer(model_input, request.sampling, on_text))
            return generated[-1]

        chat = Chat(answer, memory, say=lambda text: None, warn=self.services.log, memory_off_reason=off or "",
                    too_long=self.services.too_long)
        turn = chat.turn(request.message)
        if chat.memory is None and memory is not None:  # it failed during the turn; the log has the file and why
            off = "memory is off: this user's memory file failed (the server's log says why)"
        last = generated[-1]
        return Finished(turn, self.services.prompt_tokens(turn.model_input), last.output_tokens, last.stopped, off)

    def outcome(self, future: Future) -> Finished:
        """The finished turn, or the ApiError that answers its failure (the server goes on either way)."""
        try:
            return future.result()
        except MessageTooLong as error:
            raise ApiError(400, str(error), param="messages", code="context_length_exceeded") from None
        except Exception as error:  # noqa: BLE001 (whatever the model does, the server answers and goes on)
            what = error_line(error)[:300]
            self.services.log(f"API: the model failed on a message: {what}")
            raise ApiError(500, f"she could not answer ({what}); nothing was stored, send it again",
                           kind="server_error", code="generation_failed") from None
