"""The chat memory's store: SQLite, one memory per key, expiry, forgetting, schema versions, shared by processes."""

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.memory import ValueScorer
from helpers.scripts import REPO
from llm.chat.chat import Chat
from llm.memory.store import SCHEMA_VERSION, MemoryStore, MemoryUnavailable

SEOUL = timezone(timedelta(hours=9))
LEGACY_SCHEMA = ("CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, "
                 "tag TEXT NOT NULL, user_message TEXT NOT NULL, time TEXT NOT NULL)")


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 12, 6, 14, 30, tzinfo=SEOUL))


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> MemoryStore:
    return MemoryStore(tmp_path / "nested" / "memory.db", scorer=ValueScorer(), now=clock)


def tags_of(store: MemoryStore) -> list[str]:
    return [memory.tag for memory in store.memories()]


def other_programs_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.execute("PRAGMA user_version = 7")
    conn.close()


def version_1_file(path: Path, rows: list[tuple[str, str, str]], application_id: int | None) -> None:
    """A memory file as the code of schema 1 wrote it (with or without an application_id), keys as given."""
    with sqlite3.connect(path) as conn:
        conn.execute(LEGACY_SCHEMA)
        conn.executemany("INSERT INTO memories (key, tag, user_message, time) VALUES (?, ?, ?, ?)",
                         [(tag[1:].split(":")[0], tag, message, when) for tag, message, when in rows])
        conn.execute("PRAGMA user_version = 1")
        if application_id is not None:
            conn.execute(f"PRAGMA application_id = {application_id}")
    conn.close()


@pytest.mark.parametrize("bad", ["", "   ", "[]", "[: 면접]", "[ : 면접]", "[일정: ]", "[일정 면접]", "[경고]",
                                 "일정: 면접", "[일정: 면접] 붙은 글", "[[일정: 면접]]", None,
                                 "[기분: 좋아 오늘\ufffd 안]"])  # half a character a half-trained model wrote
def test_malformed_or_empty_tags_are_ignored(store: MemoryStore, bad):
    assert store.add(bad, "나 내일 면접 봐") is False
    assert store.memories() == []


def test_add_list_replace_clear(store: MemoryStore, clock: Clock):
    assert store.add("[일정: 면접]", "나 내일 면접 봐")
    clock.now += timedelta(minutes=1)
    assert store.add(" [ 좋아하는 음식 :  떡볶이 ] ", "떡볶이 최고")  # stored in the canonical form
    assert tags_of(store) == ["[좋아하는 음식: 떡볶이]", "[일정: 면접]"]  # newest first
    newest = store.memories()[0]
    assert (newest.user_message, newest.time) == ("떡볶이 최고", clock.now)

    assert store.add("[일정: 면접]", "면접 준비 중")  # same key and value: not duplicated, now the newest
    assert tags_of(store) == ["[일정: 면접]", "[좋아하는 음식: 떡볶이]"]
    assert store.add("[좋아하는 음식: 마라탕]", "요즘은 마라탕")  # a new value replaces the old one
    assert tags_of(store) == ["[좋아하는 음식: 마라탕]", "[일정: 면접]"]
    assert store.memories()[0].user_message == "요즘은 마라탕"
    store.clear()
    assert store.memories() == []


def test_keys_that_look_the_same_are_one_key(store: MemoryStore):
    assert store.add("[호\u200b칭: 민지]", "민지라고 불러줘")  # a zero-width space inside the key
    assert store.add("[호칭: 감자]", "아니다 감자라고 불러")
    assert store.add("[\u202e반려동물: 고양이]", "고양이 키워")  # a right-to-left override before it
    assert tags_of(store) == ["[반려동물: 고양이]", "[호칭: 감자]"]
    nfd = "[좋아하는 음식: 떡볶이]".replace("떡", "\u1104\u1165\u11a8")  # 떡 decomposed into jamo
    store.add(nfd, "떡볶이")
    assert tags_of(store)[0] == "[좋아하는 음식: 떡볶이]"


def test_forget_deletes_one_memory_by_key(store: MemoryStore):
    store.add("[일정: 면접]", "면접 봐")
    store.add("[호칭: 민지]", "민지라고 불러줘")
    assert store.forget("일\u200b정") is True  # read as a tag's key is read
    assert tags_of(store) == ["[호칭: 민지]"]
    assert store.forget("일정") is False and store.forget("없는 키") is False
    assert tags_of(store) == ["[호칭: 민지]"]


def test_memories_survive_a_new_store_on_the_same_file(tmp_path: Path):
    MemoryStore(tmp_path / "m.db", scorer=ValueScorer()).add("[반려동물: 고양이 두부]", "우리 고양이 이름은 두부야")
    assert tags_of(MemoryStore(tmp_path / "m.db", scorer=ValueScorer())) == ["[반려동물: 고양이 두부]"]


def test_most_relevant_asks_the_scorer_about_the_live_memories(store: MemoryStore, clock: Clock):
    assert store.most_relevant("떡볶이 먹을래") is None  # nothing stored yet
    store.add("[기분: 우울함]", "우울해")
    store.add("[좋아하는 음식: 떡볶이]", "떡볶이 최고")
    assert store.most_relevant("떡볶이 먹을래") == ("[좋아하는 음식: 떡볶이]", 1.0)
    assert store.most_relevant("안녕") is None  # below the scorer's threshold
    clock.now += timedelta(days=1)
    store.most_relevant("우울함이 가시질 않아")
    assert store.scorer.offered[-1] == [("좋아하는 음식", "떡볶이")]  # yesterday's mood is never offered


def _stored_on(store: MemoryStore, clock: Clock, tag: str, when: datetime) -> None:
    clock.now = when
    store.add(tag, "")


@pytest.mark.parametrize("tag, stored, expires", [
    ("[기분: 우울함]", datetime(2026, 12, 6, 23, 0), datetime(2026, 12, 7)),  # the end of the day
    ("[날씨: 비]", datetime(2026, 12, 6, 0, 5), datetime(2026, 12, 7)),
    ("[일정: 치과 진료]", datetime(2026, 12, 6, 9, 0), datetime(2026, 12, 13, 9, 0)),  # no date: 7 days
    ("[일정: 12월 10일 회사 면접]", datetime(2026, 12, 6, 9, 0), datetime(2026, 12, 11)),  # the day after
    ("[시험 일정: 1월 5일 토익]", datetime(2026, 12, 20, 9, 0), datetime(2027, 1, 6)),  # next year's 1월 5일
    ("[시험 일정: 6월 말 정보처리기사 실기]", datetime(2026, 5, 2, 9, 0), datetime(2026, 7, 1)),
    ("[여행 계획: 10월 제주도]", datetime(2026, 8, 1, 9, 0), datetime(2026, 11, 1)),  # a month: once it ends
    ("[여행 계획: 2월 삿포로]", datetime(2026, 12, 28, 9, 0), datetime(2027, 3, 1)),
    ("[시험 일정: 중간고사]", datetime(2026, 12, 6, 9, 0), datetime(2027, 1, 5, 9, 0)),  # no date: 30 days
    ("[여행 계획: 일본 여행]", datetime(2026, 12, 6, 9, 0), datetime(2027, 2, 4, 9, 0)),  # no date: 60 days
    ("[목표: 금연]", datetime(2026, 12, 6, 9, 0), datetime(2027, 3, 6, 9, 0)),  # 90 days, dated or not
    ("[일정: 12월 6일 송년회]", datetime(2026, 12, 6, 21, 0), datetime(2026, 12, 7)),  # today's: until midnight
])
def test_short_lived_memories_expire_as_the_dataset_says(store, clock, tag, stored, expires):
    store.add("[반려동물: 고양이 나비]", "")  # never expires
    _stored_on(store, clock, tag, stored.replace(tzinfo=SEOUL))
    clock.now = expires.replace(tzinfo=SEOUL) - timedelta(seconds=1)
    assert [(m.tag, m.expires) for m in store.memories()] == [(tag, expires.replace(tzinfo=SEOUL)),
                                                              ("[반려동물: 고양이 나비]", None)]
    clock.now += timedelta(seconds=1)
    assert tags_of(store) == ["[반려동물: 고양이 나비]"]
    assert store.most_relevant(tag[1:-1].split(": ")[1]) is None  # the message names its value: not recalled


def test_a_date_is_the_next_one_on_or_after_the_day_it_was_stored(store, clock):
    _stored_on(store, clock, "[일정: 12월 28일 송년회]", datetime(2027, 1, 10, 9, 0, tzinfo=SEOUL))
    assert store.memories()[0].expires == datetime(2027, 12, 29, tzinfo=SEOUL)  # a plan is ahead: this December's
    _stored_on(store, clock, "[생일: 2월 29일]", datetime(2027, 1, 10, 9, 0, tzinfo=SEOUL))
    _stored_on(store, clock, "[일정: 2월 29일 파티]", datetime(2027, 1, 10, 9, 0, tzinfo=SEOUL))
    assert store.memories()[0].expires == datetime(2028, 3, 1, tzinfo=SEOUL)  # the next leap year's
    _stored_on(store, clock, "[일정: 2월 30일 약속]", datetime(2027, 1, 10, 9, 0, tzinfo=SEOUL))
    assert store.memories()[0].expires == datetime(2027, 1, 17, 9, 0, tzinfo=SEOUL)  # no such date: undated


def test_expired_memories_are_deleted_at_the_next_write_not_by_reads(store, clock):
    store.add("[기분: 설렘]", "설레")
    clock.now += timedelta(days=1)
    assert store.memories() == []
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM memories").fetchone() == (1,)  # reads never write
    conn.close()
    store.add("[취미: 뜨개질]", "뜨개질 시작했어")
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT tag FROM memories").fetchall() == [("[취미: 뜨개질]",)]
    conn.close()


def test_a_malformed_time_does_not_stop_the_chat(store: MemoryStore):
    store.add("[반려동물: 고양이]", "고양이 키워")
    store.add("[기분: 우울함]", "우울해")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE memories SET time = 'last tuesday'")
    conn.close()
    # its time unknown, a mood cannot be known to hold still; a pet still does
    assert [(m.tag, m.time) for m in store.memories()] == [("[반려동물: 고양이]", None)]
    shown = []
    chat = Chat(lambda model_input: SimpleNamespace(text=f"[기분: 좋음] {model_input}"), store, say=shown.append)
    chat.handle("/memory")
    assert any("[반려동물: 고양이]" in line and "time unknown" in line for line in shown)
    chat.handle("오늘 좋은 일 있었어")
    assert shown[-1].startswith("오로라: ")


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llm.memory.relevance import Scorer
    from llm.memory.store import MemoryStore
    db, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = MemoryStore(db, scorer=Scorer(0.5, "none"))
    while not go.exists():
        time.sleep(0.01)
    for i in range(150):
        assert store.add(f"[{name} {i}: 값 {i}]", f"{name}의 메시지 {i}")
        assert store.add(f"[공유 {i % 10}: {name} {i}]", "둘 다 쓰는 키")
""")


def test_two_processes_writing_at_once_leave_a_consistent_database(tmp_path: Path):
    db, go = tmp_path / "shared.db", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(db), name, str(go)], env=env,
                                stderr=subprocess.PIPE, text=True) for name in ("가", "나")]
    time.sleep(0.5)  # both open the store, then start writing together
    go.touch()
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err

    tags = tags_of(MemoryStore(db, scorer=ValueScorer()))
    assert len(tags) == 2 * 150 + 10  # every own key once, each shared key once (the last writer's value)
    assert {f"[{name} {i}: 값 {i}]" for name in ("가", "나") for i in range(150)} <= set(tags)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(DISTINCT key) = COUNT(*) FROM memories").fetchone() == (1,)


def test_a_file_that_is_not_sqlite_raises_memory_unavailable(tmp_path: Path):
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not a database, just some text\n" * 50)
    with pytest.raises(MemoryUnavailable) as error:
        MemoryStore(path, scorer=ValueScorer())
    message = str(error.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_path_that_cannot_be_opened_raises_memory_unavailable(tmp_path: Path, where):
    (tmp_path / "file").write_text("x")
    path = tmp_path if where == "a folder" else tmp_path / "file" / "memory.db"
    with pytest.raises(MemoryUnavailable, match=re.escape(str(path))):
        MemoryStore(path, scorer=ValueScorer())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write read-only files")
def test_a_read_only_file_raises_memory_unavailable(tmp_path: Path):
    path = tmp_path / "memory.db"
    MemoryStore(path, scorer=ValueScorer()).add("[기분: 설렘]", "설레")
    path.chmod(0o444)
    with pytest.raises(MemoryUnavailable, match=re.escape(str(path))):
        MemoryStore(path, scorer=ValueScorer())


def test_another_programs_database_is_refused_untouched(tmp_path):
    path = tmp_path / "accounts.db"
    other_programs_database(path)
    before = path.read_bytes()
    with pytest.raises(MemoryUnavailable, match="not an Oh-LoRA memory file"):
        MemoryStore(path, scorer=ValueScorer())
    assert path.read_bytes() == before


def test_a_file_of_a_newer_schema_is_refused_untouched(tmp_path, store: MemoryStore):
    store.add("[취미: 뜨개질]", "뜨개질 시작했어")
    with sqlite3.connect(store.path) as conn:
        conn.execute("ALTER TABLE memories ADD COLUMN source TEXT")  # what a newer version might have added
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = store.path.read_bytes()
    with pytest.raises(MemoryUnavailable) as error:
        MemoryStore(store.path, scorer=ValueScorer())
    assert f"memory schema {SCHEMA_VERSION + 1}" in str(error.value) and "\n" not in str(error.value)
    assert store.path.read_bytes() == before


@pytest.mark.parametrize("application_id", [None, 0x4F684C52], ids=["before application ids", "with one"])
def test_a_version_1_file_is_migrated(tmp_path, application_id):
    path = tmp_path / "old.db"
    version_1_file(path, [("[호칭: 민지]", "민지라고 불러", "2026-01-02T03:04:05+09:00"),
                          ("[취미: 뜨개질]", "뜨개질 시작했어", "2026-01-02T03:05:00+09:00"),
                          ("[호\u200b칭: 감자]", "감자라고 불러", "2026-01-03T09:00:00+09:00")], application_id)
    store = MemoryStore(path, scorer=ValueScorer())
    # the two spellings of 호칭 are one key now; the newer one stays
    assert [(m.tag, m.user_message) for m in store.memories()] == [("[호칭: 감자]", "감자라고 불러"),
                                                                  ("[취미: 뜨개질]", "뜨개질 시작했어")]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("SELECT key FROM memories ORDER BY id").fetchall() == [("취미",), ("호칭",)]
    conn.close()
    assert store.forget("호칭") and [m.tag for m in store.memories()] == ["[취미: 뜨개질]"]
