"""User journeys: the README's and the docs' commands, exactly as written there, run as real processes in a git clone
of the code under test, and what a user then sees and does with the outputs.

The clone holds the working tree as committed, plus what is not committed yet (a snapshot made with a temporary
index), so that the journeys test the code beside them. Every process runs this virtualenv's Python with the
clone first on the path, from the clone's root, with the environment a user has (no test settings).
One fine-tuning run (2 epochs on the stand-in, in a 120-column terminal) makes the adapter every later journey
uses; the last test checks that all of them left `git status` clean.
"""

import fcntl
import itertools
import json
import os
import pty
import re
import select
import shlex
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
import urllib.request
from pathlib import Path

import pyte
import pytest
from wcwidth import wcswidth  # the columns a row fills: Hangul takes two

from helpers.scripts import REPO, free_port, stop, wait_for
from llm.common.markers import ANSWER_END, build_prompt
from llm.memory.research.data import BLIND_SETS
from llm.memory.research.tiny_encoder import ensure_tiny_encoder

COLUMNS = 120
FINE_TUNING_EPOCHS = "2"


def documented(doc: str, prefix: str) -> list[str]:
    """The first command in a ```bash block of `doc` that starts with `prefix` (a whole line, or one step of a
    line chained with &&), as argv, its comment dropped."""
    text = (REPO / doc).read_text(encoding="utf-8")
    wanted = shlex.split(prefix)
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            starts = [0] + [index + 1 for index, word in enumerate(words) if word == "&&"]
            for start in starts:
                step = list(itertools.takewhile(lambda word: word != "&&", words[start:]))
                if step[:len(wanted)] == wanted:
                    return step
    raise AssertionError(f"{doc} shows no command starting with {prefix!r}")


def documented_python(doc: str, first_line: str) -> str:
    """The ```python block of `doc` whose first line is `first_line`."""
    text = (REPO / doc).read_text(encoding="utf-8")
    for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL):
        if block.startswith(first_line):
            return block
    raise AssertionError(f"{doc} shows no python block starting with {first_line!r}")


def _git(*args: str, cwd: Path = REPO, **env: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **env},
                            check=True)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the working tree as it is: committed or not, ignored files left out (as in a fresh clone)."""
    root = tmp_path_factory.mktemp("journeys")
    index = root / "index"
    _git("read-tree", "HEAD", GIT_INDEX_FILE=str(index))
    _git("add", "-A", GIT_INDEX_FILE=str(index))
    tree = _git("write-tree", GIT_INDEX_FILE=str(index))
    commit = _git("commit-tree", tree, "-p", "HEAD", "-m", "journeys: the working tree under test",
                  GIT_AUTHOR_NAME="tests", GIT_AUTHOR_EMAIL="tests@localhost", GIT_COMMITTER_NAME="tests",
                  GIT_COMMITTER_EMAIL="tests@localhost")
    folder = root / "clone"
    _git("clone", "--quiet", "--shared", "--no-checkout", str(REPO), str(folder))
    _git("checkout", "--quiet", commit, cwd=folder)
    return folder


def user_environment(clone: Path) -> dict[str, str]:
    """The environment of a user in the clone: no test settings; the clone's code, not this checkout's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OHLORA_", "PYTEST_"))}
    env["PYTHONPATH"] = str(clone)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run(clone: Path, argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """A documented command (argv[0] is `python`) run from the clone's root."""
    assert argv[0] == "python", argv
    return subprocess.run([sys.executable, *argv[1:]], cwd=clone, env=user_environment(clone), capture_output=True,
                          text=True, timeout=timeout)


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell that runs the suite in the background hands its children SIGINT ignored; a user's server has Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(clone: Path, argv: list[str]) -> subprocess.Popen:
    """A documented server command (argv[0] is `python`) started from the clone's root, its output piped."""
    assert argv[0] == "python", argv
    return subprocess.Popen([sys.executable, *argv[1:]], cwd=clone, env=user_environment(clone),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ctrl_c_as_in_a_terminal)


def run_in_terminal(clone: Path, argv: list[str], timeout: float = 600) -> tuple[int, bytes]:
    """(exit code, bytes written) of a command run in a pseudo-terminal of COLUMNS columns, as in a user's window."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
    env = user_environment(clone) | {"TERM": "xterm-256color", "COLUMNS": str(COLUMNS)}
    process = subprocess.Popen([sys.executable, *argv[1:]], cwd=clone, env=env, stdin=follower, stdout=follower,
                               stderr=follower, close_fds=True)
    os.close(follower)
    output, deadline = bytearray(), time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process and its children have closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), bytes(output)


def screen_rows(output: bytes, rows: int = 400) -> list[str]:
    """What a terminal of COLUMNS columns shows after `output`: its rows, right-stripped."""
    screen = pyte.Screen(COLUMNS, rows)
    pyte.ByteStream(screen).feed(output.replace(b"\n", b"\r\n") if b"\r\n" not in output else output)
    return [row.rstrip() for row in screen.display if row.strip()]


@pytest.fixture(scope="module")
def fine_tuned(clone: Path) -> dict:
    """README command 1's main job, with fewer epochs, in a 120-column terminal."""
    argv = documented("README.md", "python llm/run_fine_tuning_polyglot.py") + ["--epochs", FINE_TUNING_EPOCHS]
    code, output = run_in_terminal(clone, argv)
    return {"code": code, "output": output, "rows": screen_rows(output)}


def test_the_main_job_trains_and_its_epoch_lines_are_whole_on_screen(fine_tuned: dict, clone: Path):
    rows = fine_tuned["rows"]
    assert fine_tuned["code"] == 0, "\n".join(rows[-30:])
    epochs = int(FINE_TUNING_EPOCHS)
    epoch_line = re.compile(rf"epoch (\d+)/{epochs}: train loss \d+\.\d{{4}}, eval loss \d+\.\d{{4}}, empty answers "
                            rf"\d+/60, ended at the end marker \d+/60, \d+\.\d s")
    shown = [int(match[1]) for row in rows if (match := epoch_line.fullmatch(row))]
    assert shown == list(range(1, epochs + 1)), "\n".join(row for row in rows if "epoch" in row)
    assert not [row for row in rows if "epoch" in row and "it/s" in row]  # no bar drawn into a line
    assert_whole_on_screen(rows)
    assert sum("NOTICE: no Polyglot-Ko 1.3B weights" in row for row in rows) == 1
    assert not [row for row in rows if row.startswith("[rank ")]  # one process: no per-rank report
    assert (clone / "llm" / "models" / "polyglot_fine_tuned" / "adapter_model.safetensors").is_file()
    [log] = (clone / "llm" / "fine_tuning" / "fine_tuning_logs_polyglot").glob("*.txt")
    assert re.fullmatch(r"\d{10}\.txt", log.name)
    assert "RUN FAILED" not in log.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def chatted(fine_tuned: dict, clone: Path) -> subprocess.CompletedProcess:
    assert fine_tuned["code"] == 0
    return run(clone, documented("README.md", "python llm/run_chat.py --prompt"))


def test_the_chat_answers_with_the_adapter_and_keeps_the_stand_ins_memory_apart(chatted, clone: Path):
    assert chatted.returncode == 0, chatted.stderr[-3000:]
    lines = chatted.stdout.splitlines()
    assert [line for line in lines if line.startswith("나: ")] == ["나: 나 내일 면접 봐", "나: 면접 너무 떨려"]
    assert len([line for line in lines if line.startswith("오로라: ")]) == 2
    # --show-recall says what went in front of every message, recalled or not.
    assert len([line for line in lines if line.startswith(("(recalled ", "(no memory recalled"))]) == 2
    memory = clone / "llm" / "memory"
    assert f"memory: {memory / 'ohlora_memory_stand_in.db'}" in chatted.stderr
    assert not (memory / "ohlora_memory.db").exists()  # the real model's memory gets none of the stand-in's noise


def assert_whole_on_screen(rows: list[str]) -> None:
    """Nothing runs into the right edge and on mid-word: long lines are broken between words (bars excepted)."""
    assert not [row for row in rows if wcswidth(row) >= COLUMNS and "it/s" not in row], "\n".join(rows)


def shown_in_terminal(clone: Path, argv: list[str]) -> list[str]:
    """The screen rows of a documented command run in a terminal of COLUMNS columns: it ended well, every row
    whole on screen."""
    code, output = run_in_terminal(clone, argv)
    rows = screen_rows(output)
    assert code == 0, "\n".join(rows[-30:])
    assert_whole_on_screen(rows)
    return rows


@pytest.fixture(scope="module")
def exported(chatted, clone: Path) -> Path:
    rows = shown_in_terminal(clone, documented("README.md", "python llm/export_model.py"))
    assert any(row.startswith("merged ") for row in rows)
    return clone / "llm" / "models" / "polyglot_merged"


# Run as its own process: transformers alone, from outside the clone, no project code on the path.
PLAIN_GENERATE = textwrap.dedent("""
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder, prompts = sys.argv[1], json.loads(sys.argv[2])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(0)
    out = []
    for prompt in prompts:
        inputs = tokenizer(prompt, return_tensors="pt")
        tokens = model.generate(**inputs)[0, inputs["input_ids"].shape[1]:]
        out.append({"text": tokenizer.decode(tokens), "eos_id": tokenizer.eos_token_id, "last": int(tokens[-1])})
    print(json.dumps(out, ensure_ascii=False))
    print("loaded:", sorted(name for name in sys.modules if name.split(".")[0] in ("llm", "peft")))
""")


def plain_process(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",) and "OHLORA" not in key}
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env | {"PYTHONIOENCODING": "utf-8"},
                          capture_output=True, text=True, timeout=300)


def test_the_exported_folder_generates_with_plain_transformers_and_stops_on_its_own(exported: Path, tmp_path: Path):
    prompts = [build_prompt(text) for text in ("너 누구야?", "이름이 뭐야", "자기소개 좀 해줘")]
    result = plain_process(PLAIN_GENERATE, str(exported), json.dumps(prompts, ensure_ascii=False), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout.splitlines()[0])
    assert result.stdout.splitlines()[1] == "loaded: []"
    for answer in answers:
        # It ended on its own, on the EOS id the folder names. (Whether a 2-epoch stand-in writes the whole end
        # marker before it is the training's matter: the 30-epoch run writes it in every answer.)
        assert answer["last"] == answer["eos_id"], answer
    assert "max_length" not in result.stderr  # no clash between the folder's length and a caller's


def test_the_docs_pipeline_example_runs_as_written(exported: Path, clone: Path):
    snippet = documented_python("docs/web-chat-and-export.md", "from transformers import pipeline")
    result = plain_process(snippet, cwd=clone)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    prompt = "나 내일 면접 봐 (답변 시작) ### 답변:"
    text = result.stdout.strip()
    assert text.startswith(prompt) and len(text) > len(prompt), result.stdout
    # It samples with no seed, so the words (and, from a 2-epoch stand-in, whether the end marker comes out whole)
    # vary from run to run; that generation stops on its own is held by the seeded test above.
    assert "max_length" not in result.stderr


def test_model_selection_ends_with_every_stand_in_ok(clone: Path):
    rows = shown_in_terminal(clone, documented("README.md", "python llm/model_selection/run_model_selection.py"))
    assert not [row for row in rows if "Traceback" in row]
    statuses = [match[2] for row in rows if (match := re.fullmatch(r"\[\d+/\d+\] (.+ \(tiny stand-in\)): (\S+)", row))]
    assert statuses == ["ok", "ok"], "\n".join(rows)
    assert not [row for row in rows if re.match(r"\{'(loss|eval_loss|train_runtime)'", row)]  # no trainer dicts
    # the stand-ins' figures, a few columns wide; every column is in the markdown file
    assert [row.split("  ")[0] for row in rows if row.endswith(("0", "n/a")) and "(tiny stand-in)  " in row] == \
        ["polyglot-ko-1.3b (tiny stand-in)", "gemma-2-2b-it (tiny stand-in)"]


def test_the_dry_run_answers_in_lines_whole_on_screen(clone: Path):
    dry_run = documented("docs/fine-tuning.md", "python llm/run_fine_tuning_polyglot.py --dry-run")
    rows = shown_in_terminal(clone, dry_run)
    assert [row for row in rows if row.startswith("peak GPU memory: ")]


def test_model_selection_exits_non_zero_when_a_candidate_fails(clone: Path, tmp_path: Path):
    models = tmp_path / "models"
    (models / "llama_1b").mkdir(parents=True)
    (models / "llama_1b" / "config.json").write_text("{not json", encoding="utf-8")
    argv = documented("README.md", "python llm/model_selection/run_model_selection.py")
    result = run(clone, argv + ["--models-dir", str(models), "--candidates", "llama1B", "--no-tiny",
                                "--output-dir", str(tmp_path / "results")])
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == "error: 1 candidate(s) failed: llama1B (their rows say why)"


def test_the_unsloth_free_test_says_once_that_it_runs_on_the_stand_in(clone: Path):
    result = run(clone, documented("README.md", "python llm/unsloth_test/test_without_unsloth.py"))
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert said.count("NOTICE: no Gemma-2 2B weights") == 1
    assert (clone / "llm" / "unsloth_test" / "results.csv").is_file()


def test_the_memory_evaluation_prints_every_scorer(clone: Path):
    rows = shown_in_terminal(clone, documented("README.md", "python llm/memory/evaluate_retrieval.py"))
    assert [row.split(":")[0] for row in rows if row.startswith(("retrieval_cases_", "relevance_pairs_"))] == \
        [path.name for pair in BLIND_SETS for path in pair]
    assert len([row for row in rows if row.startswith("top-1 accuracy")]) == len(BLIND_SETS)
    assert not [row for row in rows if "row/s" in row]  # each scorer's bar is gone once its set is done


def test_the_encoders_training_shows_whole_lines_and_no_trainer_by_products(clone: Path, tmp_path: Path):
    argv = documented("docs/chat.md", "python llm/memory/train_retrieval.py --encoder")
    argv[argv.index("--encoder") + 1] = str(ensure_tiny_encoder())  # the stand-in for the downloaded encoder
    out = tmp_path / "retrieval_encoder"  # not the chats' folder: the "saved" line is long and must break
    rows = shown_in_terminal(clone, argv + ["--epochs", "1", "--folds", "2", "--out", str(out)])
    assert (out / "model.safetensors").is_file()
    assert any(row.startswith(f"saved {out}: the chats use only") for row in rows), "\n".join(rows)
    # Neither the metrics dict the trainer prints when it ends nor the model card's bar: no card is saved.
    assert not [row for row in rows if "train_runtime" in row or "widget" in row], "\n".join(rows)


def test_the_web_chat_serves_its_page(fine_tuned: dict, clone: Path):
    assert fine_tuned["code"] == 0
    port = free_port()
    process = start(clone, documented("README.md", "python llm/run_chat_web.py") + ["--port", str(port)])

    def page() -> str:
        assert process.poll() is None, process.stderr.read()  # a server that ended says why, at once
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:  # OSError: not yet
            return response.read().decode("utf-8")

    try:
        assert "오로라 (Oh-LoRA)" in wait_for(page, "the web chat's page", 180)
    finally:
        stdout, stderr = stop(process, signal.SIGINT)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr


def test_the_api_answers_the_docs_openai_client_as_written(fine_tuned: dict, clone: Path):
    assert fine_tuned["code"] == 0
    port = free_port()
    process = start(clone, documented("docs/api.md", "python llm/run_api.py --api-key") + ["--port", str(port)])
    try:
        listening = process.stdout.readline()  # printed once it listens, after the model has loaded
        assert f"http://127.0.0.1:{port}/v1" in listening, process.stderr.read() if process.poll() else listening
        client = documented_python("docs/api.md", "from openai import OpenAI").replace(":8000/", f":{port}/")
        result = plain_process(client, cwd=clone)
    finally:
        _, stderr = stop(process, signal.SIGINT)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.splitlines()
    assert len(printed) == 3 and printed[0] and printed[2], printed  # the answer, what memory did, the stream
    assert ANSWER_END not in result.stdout and "recalled" in printed[1]
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    # the notice once, and what the API adds to it in one line that fits the terminal
    assert stderr.count("NOTICE: no Polyglot-Ko 1.3B weights") == 1 and "Tiny stand-in: no" not in stderr
    assert ("!! Every response says so in its X-OhLoRA-Stand-In header; the model id is ohlora-polyglot-tiny-stand-in."
            in stderr.splitlines())


def test_every_journey_left_git_status_clean(clone: Path):
    """Last in this module: what the journeys ran wrote only git-ignored files, and rewrote no committed one."""
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""
