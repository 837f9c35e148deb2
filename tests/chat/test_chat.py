"""The chat: the loop and its memory with a stub model, the adapter checks, and run_chat.py end to end."""

import json
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from helpers.data import dataset_rows
from helpers.memory import ValueScorer
from helpers.scripts import heavy_modules_after, run_in_process
from llm.common.adapters import load_fine_tuned
from llm.common.folders import AdapterError, read_adapter
from llm.chat.chat import BOT_LABEL, EMPTY_ANSWER, HINT, MEMORY_OPTIONS, USER_LABEL, Chat, open_memory, run_interactive, run_prompts
from llm.common.inference import Answer
from llm.common.markers import ANSWER_END, ANSWER_START
from llm.common.models import save_in_hub_layout
from llm.memory.store import MemoryStore
from llm.common.specs import GEMMA, POLYGLOT

SCRIPT = "llm/run_chat.py"
MARKER_PIECES = (ANSWER_START, ANSWER_END, "(답변 시작)", "(답변 종료)", "### 답변:")


def answer(text: str) -> Answer:
    return Answer(user_input="", text=text, trials=1, output_tokens=len(text))


class StubModel:
    """Answers from a script (or with `default`), recording every model input it was given."""

    def __init__(self, *texts: str, default: str = "응응 😊") -> None:
        self.texts = list(texts)
        self.default = default
        self.inputs: list[str] = []

    def __call__(self, model_input: str) -> Answer:
        self.inputs.append(model_input)
        return answer(self.texts.pop(0) if self.texts else self.default)


class Transcript(list):
    def __call__(self, text: str) -> None:
        self.append(text)


@pytest.fixture
def memory(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path / "memory.db", scorer=ValueScorer())


def make_chat(model: StubModel, memory: MemoryStore | None) -> tuple[Chat, Transcript, Transcript]:
    said, warned = Transcript(), Transcript()
    return Chat(model, memory, say=said, warn=warned), said, warned


def assert_clean(shown: str) -> None:
    assert shown.strip() and not any(piece in shown for piece in MARKER_PIECES), shown
    assert not shown.lstrip().startswith("["), shown


# --- the chat loop, with a stub model ---

def test_tag_in_answer_is_stored_hidden_and_recalled_for_a_related_prompt(memory: MemoryStore):
    model = StubModel(f"[내일 일정: 면접] 면접 잘 보고 와! 응원할게 💪 {ANSWER_END}", "떨리는 게 당연해!", "나는 오로라야!")
    chat, said, _ = make_chat(model, memory)
    before = datetime.now().astimezone() - timedelta(seconds=2)

    chat.handle("나 내일 면접 봐")
    assert model.inputs == ["나 내일 면접 봐"]  # nothing stored yet, nothing prepended
    assert said == [f"{BOT_LABEL}면접 잘 보고 와! 응원할게 💪"]
    [stored] = memory.memories()
    assert (stored.tag, stored.user_message) == ("[내일 일정: 면접]", "나 내일 면접 봐")
    assert before <= stored.time <= datetime.now().astimezone()

    turn = chat.turn("면접 너무 떨려")  # related: the memory goes in front, as in the dataset
    assert model.inputs[-1] == "[내일 일정: 면접] 면접 너무 떨려"
    assert (turn.recalled, turn.stored, turn.shown) == ("[내일 일정: 면접]", None, "떨리는 게 당연해!")

    chat.turn("너 이름이 뭐야?")  # unrelated: below the threshold, nothing prepended
    assert model.inputs[-1] == "너 이름이 뭐야?"


def test_at_most_one_tag_is_prepended(memory: MemoryStore):
    memory.add("[내일 일정: 면접]", "나 내일 면접 봐")
    memory.add("[좋아하는 음식: 떡볶이]", "떡볶이 최고")
    model = StubModel()
    chat, _, _ = make_chat(model, memory)
    chat.turn("내일 면접 끝나고 떡볶이 먹을래")
    assert model.inputs[-1].count("[") == 1
    assert model.inputs[-1].endswith("] 내일 면접 끝나고 떡볶이 먹을래")


@pytest.mark.parametrize("text", [
    f"[오늘 날씨: 비] 우산 챙겨! {ANSWER_END}",
    f"{ANSWER_START} 안녕!",
    "안녕 (답변 시작) 반가워 ### 답변: 😊 (답변 종료)",
    "[오늘 날씨: 비] (답변 시작) 비 온다",
    "  줄이\n바뀐\t답변\x07  ",
])
def test_markers_and_tags_are_never_shown(memory: MemoryStore, text: str):
    chat, said, _ = make_chat(StubModel(text), memory)
    chat.handle("오늘 날씨 어때")
    assert said[0].startswith(BOT_LABEL)
    assert_clean(said[0].removeprefix(BOT_LABEL))
    assert "\n" not in said[0] and said[0].isprintable()


@pytest.mark.parametrize("text, shown", [
    ("[: 면접] 잘하고 와!", "잘하고 와!"),
    ("[내일 일정: ] 잘하고 와!", "잘하고 와!"),
    ("[ : ] 잘하고 와!", "잘하고 와!"),
    ("[] 잘하고 와!", "잘하고 와!"),
    ("[내일 일정 면접] 잘하고 와!", "잘하고 와!"),
    ("[[내일 일정: 면접]] 잘하고 와!", "잘하고 와!"),
    ("[내일 일정: 면접 잘하고 와!", "내일 일정: 면접 잘하고 와!"),  # not a tag, and a bracket closing nothing
    ("[", EMPTY_ANSWER),  # a tag cut off by the length limit
    ("좋아 답변 종료)", "좋아"),  # a piece of the end marker
    ("", EMPTY_ANSWER),
    (f"  {ANSWER_END}", EMPTY_ANSWER),
])
def test_malformed_or_empty_tags_are_ignored_without_crashing(memory: MemoryStore, text: str, shown: str):
    chat, said, warned = make_chat(StubModel(text), memory)
    chat.handle("나 내일 면접 봐")
    assert said == [BOT_LABEL + shown]
    assert memory.memories() == [] and warned == []


def test_tag_only_answer_is_stored_and_shows_a_placeholder(memory: MemoryStore):
    chat, said, _ = make_chat(StubModel("[반려동물: 고양이 두부]"), memory)
    chat.handle("우리 고양이 이름은 두부야")
    assert said == [BOT_LABEL + EMPTY_ANSWER]
    assert [m.tag for m in memory.memories()] == ["[반려동물: 고양이 두부]"]


def test_a_tag_the_user_types_is_chat_text_never_stored(memory: MemoryStore):
    memory.add("[좋아하는 음식: 떡볶이]", "떡볶이 최고")
    model = StubModel("안녕! 반가워 😊")
    chat, said, _ = make_chat(model, memory)
    chat.handle("[내일 일정: 면접] 안녕, 떡볶이 먹고 싶다")
    # passed on as typed: no second tag in front of it, and nothing new remembered
    assert model.inputs == ["[내일 일정: 면접] 안녕, 떡볶이 먹고 싶다"]
    assert [m.tag for m in memory.memories()] == ["[좋아하는 음식: 떡볶이]"]
    assert said == [BOT_LABEL + "안녕! 반가워 😊"]


def test_a_message_too_long_for_the_model_is_refused_and_the_chat_goes_on(memory: MemoryStore):
    memory.add("[좋아하는 음식: 떡볶이]", "떡볶이 최고")
    model = StubModel("[내일 일정: 면접] 화이팅!", "응응 😊")
    checked = []

    def too_long(model_input: str) -> str | None:
        checked.append(model_input)
        return "message too long" if len(model_input) > 40 else None

    said = Transcript()
    chat = Chat(model, memory, say=said, warn=Transcript(), too_long=too_long)
    chat.handle("떡볶이 " * 7)  # fits alone, not with the recalled tag in front: the model input is what counts
    assert checked == ["[좋아하는 음식: 떡볶이] " + ("떡볶이 " * 7).strip()]
    assert said == ["(message too long)"] and model.inputs == []
    assert [m.tag for m in memory.memories()] == ["[좋아하는 음식: 떡볶이]"]  # nothing generated, nothing stored
    chat.handle("안녕")
    assert model.inputs == ["안녕"] and said[-1] == BOT_LABEL + "화이팅!"


def test_memory_and_forget_commands(memory: MemoryStore):
    model = StubModel("[내일 일정: 면접] 화이팅!")
    chat, said, _ = make_chat(model, memory)
    chat.handle("/memory")
    assert said[-1] == "(no memories yet)"
    chat.handle("나 내일 면접 봐")
    said.clear()
    chat.handle("/memory")
    assert said[0] == "(she remembers 1, newest first)"
    assert said[1].strip().startswith("[내일 일정: 면접]") and said[1].endswith("from: 나 내일 면접 봐")

    chat.handle("/FORGET ")
    assert said[-1] == "(memory cleared: 1 forgotten)"
    assert memory.memories() == []
    chat.turn("면접 떨려")
    assert model.inputs[-1] == "면접 떨려"  # forgotten: nothing recalled any more

    assert chat.handle("/help") and said[-1] == f"({HINT})"
    assert chat.handle("/nope") and said[-1].startswith("(unknown command /nope;")
    assert chat.handle("   ") and len(model.inputs) == 2  # blank lines are skipped
    assert chat.handle("/quit") is False


def test_without_memory_nothing_is_stored_or_recalled(tmp_path: Path):
    model = StubModel("[내일 일정: 면접] 화이팅!")
    said = Transcript()
    chat = Chat(model, None, say=said, warn=Transcript(), memory_off_reason="memory is off (--no-memory)")
    chat.handle("나 내일 면접 봐")
    chat.handle("/memory")
    chat.handle("/forget")
    assert said == [BOT_LABEL + "화이팅!", "(memory is off (--no-memory))", "(memory is off (--no-memory))"]


def test_the_chats_own_lines_fit_a_120_column_terminal(tmp_path: Path):
    """The file's path may be long, so the options come on a line of their own; nothing of the chat's wraps in
    120 columns."""
    warned = Transcript()
    store, _ = open_memory(tmp_path / "m.db", warned)
    assert store is not None and warned[0] == f"memory: {tmp_path / 'm.db'} (0 remembered)"
    assert warned[1:] == [MEMORY_OPTIONS] and "--no-memory" in MEMORY_OPTIONS
    assert len(MEMORY_OPTIONS) <= 120 and len(f"({HINT})") <= 120


def test_unusable_database_means_no_memory_in_one_line(tmp_path: Path):
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a sqlite database " * 200)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    for path in (corrupt, not_a_folder / "memory.db", tmp_path):  # tmp_path: a folder, not a file
        warned = Transcript()
        assert open_memory(path, warned) == (None, warned[0])
        assert len(warned) == 1 and warned[0].startswith("memory is off: ") and "\n" not in warned[0]
    assert corrupt.read_bytes() == b"not a sqlite database " * 200  # the user's file is left alone


def test_database_failing_mid_chat_turns_memory_off_once(tmp_path: Path):
    path = tmp_path / "memory.db"
    memory = MemoryStore(path)
    memory.add("[내일 일정: 면접]", "나 내일 면접 봐")
    chat, said, warned = make_chat(StubModel("[오늘 날씨: 비] 우산 챙겨!", "응!", "응!"), memory)
    path.write_bytes(b"garbage " * 500)  # e.g. overwritten by another program while chatting
    assert chat.turn("면접 떨려").shown == "우산 챙겨!"
    chat.handle("면접 끝!")
    chat.handle("/memory")
    assert len(warned) == 1 and warned[0].startswith("memory is off: ")
    assert said[-1] == f"({warned[0]})"


def test_interactive_loop_reads_until_quit_or_end_of_input(memory: MemoryStore):
    chat, said, _ = make_chat(StubModel("반가워!"), memory)
    lines = iter(["안녕", "/quit", "never read"])
    run_interactive(chat, read=lambda prompt: next(lines), echo=True)
    assert said == [f"({HINT})", USER_LABEL + "안녕", BOT_LABEL + "반가워!", USER_LABEL + "/quit"]
    assert next(lines) == "never read"

    def ctrl_d(prompt: str) -> str:
        raise EOFError

    chat, said, _ = make_chat(StubModel(), memory)
    run_interactive(chat, read=ctrl_d, echo=False)  # a terminal: leaves on a fresh line
    assert said == [f"({HINT})", ""]


def test_scripted_prompts_answer_in_order_and_run_commands(memory: MemoryStore):
    chat, said, _ = make_chat(StubModel("[취미: 사진] 멋지다!", "하나 둘"), memory)
    run_prompts(chat, ["나 사진 찍는 거 좋아해", "/memory", "/quit", "안 읽힘"])
    assert said[:3] == [USER_LABEL + "나 사진 찍는 거 좋아해", BOT_LABEL + "멋지다!", USER_LABEL + "/memory"]
    assert said[4].strip().startswith("[취미: 사진]") and said[-1] == USER_LABEL + "/quit"


# --- loading the adapter ---

def copy_adapter(trained: dict, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained["adapter_dir"], tmp_path / "adapter"))


def polyglot_base(trained: dict) -> Path:
    return Path(json.loads((trained["adapter_dir"] / "adapter_config.json").read_text())["base_model_name_or_path"])


def test_load_fine_tuned_attaches_the_adapter_to_its_tiny_base(trained_polyglot: dict, tmp_path: Path):
    said = Transcript()
    loaded = load_fine_tuned(POLYGLOT, trained_polyglot["model_dir"], trained_polyglot["adapter_dir"], "cpu",
                             torch.float32, say=said)
    assert loaded.is_tiny and loaded.model_dir == polyglot_base(trained_polyglot)
    assert not loaded.model.training and type(loaded.model).__name__ == "PeftModelForCausalLM"
    assert len(said) == 1 and "TINY RANDOMLY INITIALISED" in said[0]


def test_no_adapter_names_how_to_make_one(tmp_path: Path):
    with pytest.raises(AdapterError, match=r"no fine-tuned adapter in .*: make one with "
                                           r"`python llm/run_fine_tuning_polyglot.py --output-dir "):
        read_adapter(POLYGLOT, tmp_path / "missing")
    (tmp_path / "gemma_checkpoints").mkdir()
    (tmp_path / "gemma_checkpoints" / "run_settings.json").write_text("{}")  # killed before its first checkpoint
    with pytest.raises(AdapterError, match=r"no fine-tuned adapter in .*: make one with"):
        read_adapter(GEMMA, tmp_path / "gemma")
    (tmp_path / "gemma_checkpoints" / "checkpoint-4").mkdir()
    with pytest.raises(AdapterError, match=r"unfinished run .*`python llm/run_fine_tuning.py --output-dir .*--resume`"):
        read_adapter(GEMMA, tmp_path / "gemma")


@pytest.mark.parametrize("script, output_option", [
    ("llm/run_chat.py", "--memory-db"), ("llm/run_chat_web.py", "--memory-db"), ("llm/export_model.py", "--output-dir"),
])
def test_a_missing_or_corrupt_adapter_is_refused_before_torch_loads(trained_polyglot: dict, tmp_path: Path,
                                                                    script: str, output_option: str):
    corrupt = copy_adapter(trained_polyglot, tmp_path)
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    for adapter in (tmp_path / "missing", corrupt):
        assert heavy_modules_after(script, "--adapter-dir", str(adapter), output_option, str(tmp_path / "out")) \
            == (2, [])


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "adapter_config.json: not a valid JSON object"),
    (lambda d: (d / "adapter_config.json").write_text("[1, 2]"), "adapter_config.json: not a valid JSON object"),
    (lambda d: (d / "adapter_config.json").write_text('{"r": 8}'), "no peft_type or target_modules"),
    (lambda d: (d / "adapter_config.json").unlink(), "adapter_config.json is missing"),
    (lambda d: (d / "adapter_model.safetensors").unlink(), "adapter_model.safetensors: missing"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(
        (d / "adapter_model.safetensors").read_bytes()[:5000]), "corrupt safetensors file"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x00" * 64), "corrupt safetensors file"),
])
def test_corrupt_adapter_is_one_clear_error(trained_polyglot: dict, tmp_path: Path, damage, message: str):
    adapter = copy_adapter(trained_polyglot, tmp_path)
    damage(adapter)
    with pytest.raises(AdapterError, match=message) as caught:
        load_fine_tuned(POLYGLOT, trained_polyglot["model_dir"], adapter, "cpu", torch.float32, say=None)
    assert "\n" not in str(caught.value) and "run_fine_tuning_polyglot.py --output-dir" in str(caught.value)


def test_adapter_of_the_other_base_model_names_the_right_one(trained_polyglot: dict, gemma_adapter: Path,
                                                             tmp_path: Path):
    with pytest.raises(AdapterError, match=r"trained on a gemma2 model .*not Polyglot-Ko 1.3B .*use --model gemma"):
        load_fine_tuned(POLYGLOT, tmp_path / "no_weights", gemma_adapter, "cpu", torch.float32, say=None)
    with pytest.raises(AdapterError, match=r"trained on a gpt_neox model .*use --model polyglot"):
        load_fine_tuned(GEMMA, tmp_path / "no_weights", trained_polyglot["adapter_dir"], "cpu", torch.float32,
                        say=None)


def test_foreign_adapter_is_caught_even_when_its_base_is_gone(trained_polyglot: dict, gemma_adapter: Path,
                                                              tmp_path: Path):
    adapter = Path(shutil.copytree(gemma_adapter, tmp_path / "adapter"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": "/gone"}))
    weights = polyglot_base(trained_polyglot)  # Polyglot weights in --model-dir: the recorded base can't help
    with pytest.raises(AdapterError, match="trained on another base model; its tokenizer differs"):
        load_fine_tuned(POLYGLOT, weights, adapter, "cpu", torch.float32, say=None)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (adapter / name).unlink()
    with pytest.raises(AdapterError, match="does not fit Polyglot-Ko 1.3B"):
        load_fine_tuned(POLYGLOT, weights, adapter, "cpu", torch.float32, say=None)
    with pytest.raises(AdapterError, match=r"base it was trained on \(/gone\) is gone"):
        load_fine_tuned(GEMMA, tmp_path / "no_weights", adapter, "cpu", torch.float32, say=None)


def test_adapter_that_only_partly_fits_is_refused(trained_polyglot: dict, tmp_path: Path):
    # Same tokenizer and layer shapes, one layer more: peft would load it silently with layer 2 untrained.
    base = polyglot_base(trained_polyglot)
    config = AutoConfig.from_pretrained(base)
    config.num_hidden_layers += 1
    deeper = tmp_path / "deeper"
    save_in_hub_layout(AutoModelForCausalLM.from_config(config), AutoTokenizer.from_pretrained(base), deeper)
    with pytest.raises(AdapterError, match=r"made for another base model: 0 saved weights .* and 2 are missing"):
        load_fine_tuned(POLYGLOT, deeper, trained_polyglot["adapter_dir"], "cpu", torch.float32,
                        say=None)


# --- run_chat.py end to end, on the tiny stand-in ---

def chat_args(trained: dict, db: Path, *args: str) -> list[str]:
    return ["--model-dir", str(trained["model_dir"]), "--adapter-dir", str(trained["adapter_dir"]),
            "--memory-db", str(db), "--seed", "7", *args]


def answers_in(stdout: str) -> list[str]:
    return [line.removeprefix(BOT_LABEL) for line in stdout.splitlines() if line.startswith(BOT_LABEL)]


def test_interactive_session_on_stdin(trained_polyglot: dict, tmp_path: Path):
    """One terminal session: a message, bytes that are not UTF-8, one too long for the context, commands."""
    db = tmp_path / "memory.db"
    MemoryStore(db).add("[내일 일정: 면접]", "나 내일 면접 봐")
    # under the 2,000 characters a message may have, but hundreds of tokens where the stand-in reads 256
    long_message = " ".join(row["input_data"] for row in dataset_rows())[:1900]
    typed = "\n".join(["안녕", "\udcff\udcfe", long_message, "/memory", "/forget", "/quit", "남은 줄"]) + "\n"
    result = run_in_process(SCRIPT, *chat_args(trained_polyglot, db), stdin=typed.encode("utf-8", "surrogateescape"))
    stdout, stderr = result.stdout, result.stderr
    assert result.returncode == 0, stderr[-3000:]
    lines = stdout.splitlines()
    assert lines[0] == f"({HINT})"
    assert lines[1:3] == [USER_LABEL + "안녕", lines[2]] and lines[2].startswith(BOT_LABEL)
    assert_clean(lines[2].removeprefix(BOT_LABEL))
    assert lines[3:5] == [USER_LABEL + "\ufffd\ufffd",
                          "(that message holds bytes or characters that are not valid text, so it was not sent; type it again)"]
    assert lines[5].startswith(USER_LABEL) and re.fullmatch(
        r"\(message too long: \d{4} tokens with the prompt markers, she reads at most 248; say it in fewer words\)",
        lines[6]), lines[6]
    assert lines[7:] == [USER_LABEL + "/memory", "(she remembers 1, newest first)", lines[9],
                         USER_LABEL + "/forget", "(memory cleared: 1 forgotten)", USER_LABEL + "/quit"]
    assert lines[9].strip().startswith("[내일 일정: 면접]") and "남은 줄" not in stdout
    assert "Traceback" not in stderr and "[transformers]" not in stderr  # no library length warning either
    assert MemoryStore(db).memories() == []


def test_corrupt_database_chat_still_answers(trained_polyglot: dict, tmp_path: Path):
    db = tmp_path / "memory.db"
    db.write_bytes(b"not a database " * 300)
    result = run_in_process(SCRIPT, *chat_args(trained_polyglot, db, "--prompt", "안녕", "--prompt", "/memory"))
    assert result.returncode == 0, result.stderr[-3000:]
    [notice] = [line for line in result.stderr.splitlines() if "memory is off" in line]
    assert notice.startswith(f"memory is off: memory database {db} is unavailable")
    assert len(answers_in(result.stdout)) == 1
    assert result.stdout.splitlines()[-1] == f"({notice})"
    assert db.read_bytes() == b"not a database " * 300


def test_why_and_show_recall_say_which_memory_went_in_front(memory: MemoryStore):
    memory.add("[내일 일정: 면접]", "나 내일 면접 봐")
    said: list[str] = []
    chat = Chat(StubModel("떨리지? 잘할 거야"), memory, say=said.append, show_recall=True)
    chat.handle("/why")
    assert said[-1] == "(no message yet)"
    chat.handle("면접 너무 떨려")
    assert re.fullmatch(r"\(recalled \[내일 일정: 면접\], relevance [01]\.\d\d\)", said[-2])
    chat.handle("/why")
    assert said[-1] == said[-3]  # /why says it again
    chat.handle("너 이름이 뭐야?")
    assert said[-2] == "(no memory recalled: none was relevant enough)"  # --show-recall says so on every turn
    chat.handle("/why")
    assert said[-1] == said[-3]
    off = Chat(StubModel("응"), None, say=said.append, show_recall=True, memory_off_reason="memory is off (--no-memory)")
    off.handle("면접 너무 떨려")
    assert said[-2] == "(nothing recalled: memory is off (--no-memory))"


def test_bytes_that_are_not_utf8_are_a_notice_and_the_chat_goes_on(memory: MemoryStore):
    model = StubModel("응!")
    chat, said, _ = make_chat(model, memory)
    chat.handle(b"\xff\xfe \xec\x95\x88".decode("utf-8", "surrogateescape"))
    assert said == ["(that message holds bytes or characters that are not valid text, so it was not sent; type it again)"]
    chat.handle("안녕")
    assert said[-1] == BOT_LABEL + "응!" and model.inputs == ["안녕"]


def test_a_bare_warning_tag_is_neither_shown_nor_stored(memory: MemoryStore):
    chat, said, _ = make_chat(StubModel("[경고] 가족을 두고 하는 모욕은 하지 말아 줘."), memory)
    chat.handle("엄마 없냐?")
    assert said == [BOT_LABEL + "가족을 두고 하는 모욕은 하지 말아 줘."]
    assert memory.memories() == []


# --- marks, and messages that must cost nothing ---

def test_forget_deletes_the_memory_that_was_recalled_and_says_so(memory: MemoryStore):
    memory.add("[직업: 콜센터 상담원]", "나 콜센터에서 일해")
    model = StubModel("[잊기] 알겠어, 그 얘기는 지울게.")
    chat, said, _ = make_chat(model, memory)
    chat.handle("콜센터 상담원 일 얘기는 잊어 줘, 떠올리기도 싫어")
    assert model.inputs == ["[직업: 콜센터 상담원] 콜센터 상담원 일 얘기는 잊어 줘, 떠올리기도 싫어"]
    assert said[-2:] == ["오로라: 알겠어, 그 얘기는 지울게.", "(forgotten: [직업: 콜센터 상담원])"]
    assert memory.memories() == [] and chat.last_turn.mark == "잊기"


def test_marks_are_never_shown_nor_stored_and_a_forget_without_a_recall_forgets_nothing(memory: MemoryStore):
    memory.add("[취미: 뜨개질]", "나 뜨개질 해")
    chat, said, _ = make_chat(StubModel("[위기] 지금 안전한 곳에 있어? 109에 전화하면 24시간 들어 줘.",
                                        "[잊기] 응, 잊을게."), memory)
    chat.handle("다 그만하고 싶어")
    assert said[-1] == "오로라: 지금 안전한 곳에 있어? 109에 전화하면 24시간 들어 줘." and chat.last_turn.mark == "위기"
    chat.handle("ㅋㅋ 아무거나 잊어 줘")  # nothing recalled for it: the stored memory stays
    assert [m.tag for m in memory.memories()] == ["[취미: 뜨개질]"] and chat.last_turn.forgot is None


def test_a_huge_message_is_refused_before_anything_reads_it(memory: MemoryStore):
    """150,000 spaces after "[" once froze the web server for a minute and a half: now one line, at once."""
    model = StubModel()
    chat, said, _ = make_chat(model, memory)
    chat.handle("[a" + " " * 150_000 + "b")
    assert said == ["(message too long: 150,003 characters, she reads at most 2,000; say it in fewer words)"]
    assert model.inputs == []


def test_text_that_is_not_valid_unicode_is_not_sent(memory: MemoryStore):
    for message in ("\udcff\udcfe 안녕", "브라우저가 보낸 \ud800 반쪽"):  # bytes not UTF-8; a lone surrogate
        model = StubModel()
        chat, said, _ = make_chat(model, memory)
        chat.handle(message)
        assert said == ["(that message holds bytes or characters that are not valid text, so it was not sent; "
                        "type it again)"] and model.inputs == []
