"""The chat's memory: "[key: value]" tags kept in SQLite with the user's message and the time they came from.

One memory per key: storing a tag whose key is already known replaces the old memory (same value or not),
and the replacement becomes the newest. Every call opens its own short connection and writes in one
IMMEDIATE transaction with a busy timeout, so two chat processes can share one database file.
"""

import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple

from llm.common.tags import parse_memory_tag
from llm.memory.retrieval import most_relevant

BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's transaction before giving up
# PRAGMA application_id of this project's memory files ("OhLR"): another program's SQLite file is left untouched.
APPLICATION_ID = 0x4F684C52
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    tag TEXT NOT NULL,
    user_message TEXT NOT NULL,
    time TEXT NOT NULL
)
"""


class MemoryUnavailable(Exception):
    """The memory database cannot be used (not a SQLite file, not writable, ...); the chat goes on without it."""


class Memory(NamedTuple):
    tag: str
    user_message: str
    time: datetime | None  # None when the stored time is not ISO 8601 (a hand edit): shown as unknown


def _parse_time(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


class MemoryStore:
    """Memory tags in a SQLite file; raises MemoryUnavailable (one line naming the file) if it is unusable."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._unavailable(f"cannot create its folder: {err.strerror or err}") from None
        with self._connect() as conn, conn:
            self._check_is_ours(conn)
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # a write now: a read-only file fails here
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_is_ours(self, conn: sqlite3.Connection) -> None:
        """Refuse, before writing anything, a database that another program made."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables - {"sqlite_sequence"}:
            return  # a new or empty file: it becomes ours
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        # Files written before application_id was set: only the memories table, at version 1.
        legacy = application_id == 0 and tables <= {"memories", "sqlite_sequence"} and user_version == SCHEMA_VERSION
        if application_id != APPLICATION_ID and not legacy:
            raise self._unavailable("not an Oh-LoRA memory file (another program's database?); it was left "
                                    "untouched: give --memory-db a new file")

    def add(self, tag: str, user_message: str) -> bool:
        """Store a whole "[key: value]" tag; False (nothing stored) if it is not one."""
        parsed = parse_memory_tag(tag)
        if parsed is None:
            return False
        key, value = parsed
        now = datetime.now().astimezone().isoformat(timespec="seconds")
        with self._connect() as conn, conn:
            conn.execute("DELETE FROM memories WHERE key = ?", (key,))
            conn.execute("INSERT INTO memories (key, tag, user_message, time) VALUES (?, ?, ?, ?)",
                         (key, f"[{key}: {value}]", str(user_message or "").strip(), now))
        return True

    def memories(self) -> list[Memory]:
        """All stored memories, newest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT tag, user_message, time FROM memories ORDER BY id DESC").fetchall()
        return [Memory(str(tag), str(message), _parse_time(time)) for tag, message, time in rows]

    def clear(self) -> None:
        """Forget everything."""
        with self._connect() as conn, conn:
            conn.execute("DELETE FROM memories")

    def most_relevant(self, prompt: str) -> tuple[str, float] | None:
        """The stored tag most relevant to the prompt and its score, if it reaches RELEVANCE_THRESHOLD."""
        return most_relevant([memory.tag for memory in self.memories()], prompt)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection (implicit transactions are BEGIN IMMEDIATE); sqlite3 errors become MemoryUnavailable."""
        try:
            with closing(sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level="IMMEDIATE")) as conn:
                yield conn
        except sqlite3.Error as err:
            raise self._unavailable(err) from None

    def _unavailable(self, reason: object) -> MemoryUnavailable:
        reason = " ".join(str(reason).split())
        return MemoryUnavailable(f"memory database {self.path} is unavailable: {reason}")
