"""The chat memory's store: SQLite, one memory per key, shared by processes, never another program's file."""

import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from helpers.scripts import REPO
from llm.memory.evaluate_retrieval import read_pairs
from llm.memory.retrieval import RELEVANCE_THRESHOLD, relevance
from llm.chat.chat import Chat
from llm.memory.store import MemoryStore, MemoryUnavailable

PAIRS_CSV = REPO / "llm" / "memory" / "relevance_pairs.csv"
SCRIPT = "llm/memory/evaluate_retrieval.py"


def other_programs_database(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.execute("PRAGMA user_version = 7")
    conn.close()


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path / "nested" / "memory.db")


@pytest.mark.parametrize("bad", ["", "   ", "[]", "[: 면접]", "[ : 면접]", "[내일 일정: ]", "[내일 일정 면접]",
                                 "내일 일정: 면접", "[내일 일정: 면접] 붙은 글", "[[내일 일정: 면접]]", None])
def test_malformed_or_empty_tags_are_ignored(store: MemoryStore, bad):
    assert store.add(bad, "나 내일 면접 봐") is False
    assert store.memories() == []


def test_add_list_replace_clear(store: MemoryStore):
    before = datetime.now().astimezone() - timedelta(seconds=2)
    assert store.add("[내일 일정: 면접]", "나 내일 면접 봐")
    assert store.add(" [ 좋아하는 음식 :  떡볶이 ] ", "떡볶이 최고")  # stored in the canonical form
    tags = [m.tag for m in store.memories()]
    assert tags == ["[좋아하는 음식: 떡볶이]", "[내일 일정: 면접]"]  # newest first
    newest = store.memories()[0]
    assert newest.user_message == "떡볶이 최고" and before <= newest.time <= datetime.now().astimezone()

    assert store.add("[내일 일정: 면접]", "면접 준비 중")  # same key and value: not duplicated, now the newest
    assert [m.tag for m in store.memories()] == ["[내일 일정: 면접]", "[좋아하는 음식: 떡볶이]"]
    assert store.add("[좋아하는 음식: 마라탕]", "요즘은 마라탕")  # a new value replaces the old one
    memories = store.memories()
    assert [m.tag for m in memories] == ["[좋아하는 음식: 마라탕]", "[내일 일정: 면접]"]
    assert memories[0].user_message == "요즘은 마라탕"

    assert store.add("[좋아하는 색: 보라색]", "보라색 좋아")  # keys outside the dataset are fine too
    assert len(store.memories()) == 3
    store.clear()
    assert store.memories() == []


def test_memories_survive_a_new_store_on_the_same_file(tmp_path: Path):
    MemoryStore(tmp_path / "m.db").add("[반려동물: 고양이 두부]", "우리 고양이 이름은 두부야")
    assert [m.tag for m in MemoryStore(tmp_path / "m.db").memories()] == ["[반려동물: 고양이 두부]"]


def test_most_relevant_picks_the_related_memory(store: MemoryStore):
    assert store.most_relevant("면접 때 뭐 입지?") is None  # nothing stored yet
    for tag in ["[내일 일정: 면접]", "[좋아하는 음식: 떡볶이]", "[반려동물: 고양이 두부]", "[좋아하는 색: 보라색]"]:
        store.add(tag, "")
    tag, score = store.most_relevant("면접 때 자기소개 어떻게 하지?")
    assert tag == "[내일 일정: 면접]" and RELEVANCE_THRESHOLD <= score <= 1.0
    # (Kiwi does not know the slang "냥이" (it reads 냥 as a unit, like 원): the standard word is used here)
    assert store.most_relevant("우리 고양이가 자꾸 밤에 울어")[0] == "[반려동물: 고양이 두부]"
    assert store.most_relevant("배고파, 맛있는 거 먹고 싶어")[0] == "[좋아하는 음식: 떡볶이]"
    assert store.most_relevant("보라색 원피스 샀어")[0] == "[좋아하는 색: 보라색]"
    assert store.most_relevant("오늘 우산 챙겨야 할까?") is None  # about the weather: nothing stored on it
    assert store.most_relevant("안녕 로라!") is None


def test_relevance_is_in_range_and_follows_meaning():
    same_topic = relevance("[좋아하는 음식: 초밥]", "나 떡볶이 진짜 좋아해")
    related = relevance("[싫어하는 음식: 오이]", "나 떡볶이 진짜 좋아해")  # also about food
    unrelated = relevance("[전공: 경영학]", "나 떡볶이 진짜 좋아해")
    assert same_topic >= RELEVANCE_THRESHOLD and unrelated < 0.3
    assert unrelated < related < same_topic
    assert relevance("not a tag", "나 떡볶이 진짜 좋아해") == 0.0
    assert relevance("[전공: 경영학]", "   ") == 0.0
    for tag, prompt, _ in read_pairs(PAIRS_CSV):
        assert 0.0 <= relevance(tag, prompt) <= 1.0


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from llm.memory.store import MemoryStore
    db, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = MemoryStore(db)
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

    tags = [m.tag for m in MemoryStore(db).memories()]
    assert len(tags) == 2 * 150 + 10  # every own key once, each shared key once (the last writer's value)
    assert {f"[{name} {i}: 값 {i}]" for name in ("가", "나") for i in range(150)} <= set(tags)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(DISTINCT key) = COUNT(*) FROM memories").fetchone() == (1,)


def test_a_file_that_is_not_sqlite_raises_memory_unavailable(tmp_path: Path):
    path = tmp_path / "memory.db"
    path.write_bytes(b"this is not a database, just some text\n" * 50)
    with pytest.raises(MemoryUnavailable) as error:
        MemoryStore(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message


@pytest.mark.parametrize("where", ["a folder", "under a file"])
def test_a_path_that_cannot_be_opened_raises_memory_unavailable(tmp_path: Path, where):
    (tmp_path / "file").write_text("x")
    path = tmp_path if where == "a folder" else tmp_path / "file" / "memory.db"
    with pytest.raises(MemoryUnavailable, match=re.escape(str(path))):
        MemoryStore(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write read-only files")
def test_a_read_only_file_raises_memory_unavailable(tmp_path: Path):
    path = tmp_path / "memory.db"
    MemoryStore(path).add("[기분: 설렘]", "설레")
    path.chmod(0o444)
    with pytest.raises(MemoryUnavailable, match=re.escape(str(path))):
        MemoryStore(path)














def test_another_programs_database_is_refused_untouched(tmp_path):
    path = tmp_path / "accounts.db"
    other_programs_database(path)
    before = path.read_bytes()
    with pytest.raises(MemoryUnavailable, match="not an Oh-LoRA memory file"):
        MemoryStore(path)
    assert path.read_bytes() == before


def test_a_memory_file_from_before_application_ids_still_opens(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE memories (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, "
                     "tag TEXT NOT NULL, user_message TEXT NOT NULL, time TEXT NOT NULL)")
        conn.execute("INSERT INTO memories (key, tag, user_message, time) VALUES "
                     "('취미', '[취미: 뜨개질]', '뜨개질 시작했어', '2026-01-02T03:04:05+09:00')")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    assert [memory.tag for memory in MemoryStore(path).memories()] == ["[취미: 뜨개질]"]


def test_a_malformed_time_does_not_stop_the_chat(tmp_path):
    store = MemoryStore(tmp_path / "memory.db")
    store.add("[반려동물: 고양이]", "고양이 키워")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE memories SET time = 'last tuesday'")
    conn.close()
    assert store.memories()[0].time is None
    shown = []
    chat = Chat(lambda model_input: SimpleNamespace(text=f"[기분: 좋음] {model_input}"), store, say=shown.append)
    chat.handle("/memory")
    assert any("[반려동물: 고양이]" in line and "time unknown" in line for line in shown)
    chat.handle("오늘 좋은 일 있었어")
    assert shown[-1].startswith("오로라: ")
