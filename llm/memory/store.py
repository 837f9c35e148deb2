"""The chat's memory: "[key: value]" tags kept in SQLite with the user's message and the time they came from.

One memory per key: storing a tag whose key is already known replaces the old memory (same value or not),
and the replacement becomes the newest. Keys and values are read by llm.common.tags, so two keys that look the
same are the same key. Memories expire as docs/dataset.md's table says (expiry.py): an expired memory is never
listed nor recalled, and is deleted at the next write (reads stay read-only, so that two chats sharing the file
never wait on each other to read). Every call opens its own short connection and writes in one IMMEDIATE
transaction with a busy timeout, so two chat processes can share one database file.

A file is checked before anything is written to it: another program's SQLite file, or one of a newer schema
than this code knows, is refused and left untouched; an older schema is migrated.
"""

import sqlite3
from collections.abc import Callable
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator, NamedTuple

from llm.common.tags import normalise_part, parse_memory_tag, parse_tag
from llm.memory.expiry import expires_at, is_expired
from llm.memory.chat_scorer import load_scorer
from llm.memory.relevance import Scorer

BUSY_TIMEOUT_S = 10.0  # how long a write waits for another process's transaction before giving up
# PRAGMA application_id of this project's memory files ("OhLR"): another program's SQLite file is left untouched.
APPLICATION_ID = 0x4F684C52
# 1: the memories table. 2: keys and tags normalised by llm.common.tags (NFC, no invisible format characters).
SCHEMA_VERSION = 2

_CREATE = """
CREATE TABLE memories (
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
    expires: datetime | None  # when it stops being recalled (expiry.py); None: never


def _now() -> datetime:
    return datetime.now().astimezone()


def _parse_time(text: object) -> datetime | None:
    try:
        stored = datetime.fromisoformat(str(text))
        # its own zone is kept: a day ends at the user's midnight; a time without one (a hand edit) is local
        return stored if stored.tzinfo is not None else stored.astimezone()
    except (ValueError, OverflowError):
        return None


def _normalise_keys(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: keys and tags as llm.common.tags reads them; of two keys that become one, the newer stays."""
    rows = conn.execute("SELECT id, tag, user_message, time FROM memories ORDER BY id DESC").fetchall()
    conn.execute("DELETE FROM memories")
    kept = set()
    for row_id, text, message, time in rows:
        tag = parse_tag(text)
        if tag is None or not tag.is_memory or tag.key in kept:
            continue
        kept.add(tag.key)
        conn.execute("INSERT INTO memories (id, key, tag, user_message, time) VALUES (?, ?, ?, ?, ?)",
                     (row_id, tag.key, str(tag), message, time))


# The step from each older version to the next; a new schema is one more entry and SCHEMA_VERSION + 1.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: lambda conn: conn.execute(_CREATE),
    1: _normalise_keys,
}


class MemoryStore:
    """Memory tags in a SQLite file; raises MemoryUnavailable (one line naming the file) if it is unusable.

    `scorer` ranks the memories for a message (default: the chat's, llm.memory.chat_scorer.load_scorer, which
    raises ScorerError for a broken encoder folder before the file is opened); `now` is the clock.
    """

    def __init__(self, path: str | Path, scorer: Scorer | None = None, now: Callable[[], datetime] = _now):
        self.path = Path(path)
        self.scorer = scorer if scorer is not None else load_scorer()
        self.now = now
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise self._unavailable(f"cannot create its folder: {err.strerror or err}") from None
        with self._connect() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")  # the checks and the migration see and change the file as one
            version = self._schema_version(conn)
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](conn)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")  # a write: a read-only file fails here
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._delete_expired(conn)

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        """The file's schema version (0 for a new file), after refusing, unwritten, what this code cannot use."""
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables - {"sqlite_sequence"}:
            return 0  # a new or empty file: it becomes ours
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        # Files written before application_id was set: only the memories table, at version 1.
        legacy = application_id == 0 and tables <= {"memories", "sqlite_sequence"} and version == 1
        if application_id != APPLICATION_ID and not legacy:
            raise self._unavailable("not an Oh-LoRA memory file (another program's database?); it was left "
                                    "untouched: give --memory-db a new file")
        if version > SCHEMA_VERSION:
            raise self._unavailable(f"written by a newer Oh-LoRA (memory schema {version}; this one knows up to "
                                    f"{SCHEMA_VERSION}); it was left untouched: update Oh-LoRA or give --memory-db "
                                    f"another file")
        return version

    def _rows(self, conn: sqlite3.Connection) -> list[tuple[int, Memory, bool]]:
        """(id, memory, expired) for every row, newest first."""
        now, found = self.now(), []
        for row_id, key, tag, message, time in conn.execute(
                "SELECT id, key, tag, user_message, time FROM memories ORDER BY id DESC"):
            value = (parse_memory_tag(tag) or ("", ""))[1]
            stored = _parse_time(time)
            ends = expires_at(key, value, stored) if stored is not None else None
            found.append((row_id, Memory(str(tag), str(message), stored, ends), is_expired(key, value, stored, now)))
        return found

    def _delete_expired(self, conn: sqlite3.Connection) -> None:
        expired = [(row_id,) for row_id, _, is_gone in self._rows(conn) if is_gone]
        conn.executemany("DELETE FROM memories WHERE id = ?", expired)

    def add(self, tag: str, user_message: str) -> bool:
        """Store a whole "[key: value]" tag; False (nothing stored) if it is not one, or holds U+FFFD: bytes a
        model wrote that decode to no character are no fact to remember."""
        parsed = parse_tag(tag)
        if parsed is None or not parsed.is_memory or "\ufffd" in str(parsed):
            return False
        with self._connect() as conn, conn:
            conn.execute("DELETE FROM memories WHERE key = ?", (parsed.key,))
            conn.execute("INSERT INTO memories (key, tag, user_message, time) VALUES (?, ?, ?, ?)",
                         (parsed.key, str(parsed), str(user_message or "").strip(),
                          self.now().isoformat(timespec="seconds")))
            self._delete_expired(conn)
        return True

    def memories(self) -> list[Memory]:
        """The memories that have not expired, newest first."""
        with self._connect() as conn:
            return [memory for _, memory, expired in self._rows(conn) if not expired]

    def forget(self, key: str) -> bool:
        """Delete the memory of one key (read as tags are read); False when there was none."""
        with self._connect() as conn, conn:
            deleted = conn.execute("DELETE FROM memories WHERE key = ?", (normalise_part(str(key)),)).rowcount
            self._delete_expired(conn)
        return deleted > 0

    def clear(self) -> None:
        """Forget everything."""
        with self._connect() as conn, conn:
            conn.execute("DELETE FROM memories")

    def most_relevant(self, message: str) -> tuple[str, float] | None:
        """The stored tag most relevant to the message and its score, if it reaches the scorer's threshold."""
        return self.scorer.most_relevant([memory.tag for memory in self.memories()], message)

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
