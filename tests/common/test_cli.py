"""What every script does at its edges, as a real process: a closed pipe, a locale that cannot write Hangul or
emoji, a closed stdin. None of them is a traceback."""

import os
import subprocess
import sys

from helpers.scripts import REPO


def script(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, timeout=300, **kwargs)


def test_a_reader_that_stops_reading_ends_the_script_quietly():
    """`python llm/fine_tuning/card_table.py | head -0`: the pipe is closed before the script writes its table."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "llm/fine_tuning/card_table.py"], cwd=REPO, stdout=write_end,
                                stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141  # as a SIGPIPE ends a program
    assert b"Traceback" not in result.stderr and b"BrokenPipeError" not in result.stderr


def test_a_narrow_locale_replaces_what_it_cannot_write(trained_polyglot, tmp_path):
    env = {**os.environ, "PYTHONIOENCODING": "euc-kr", "LC_ALL": "C"}
    result = script("llm/run_chat.py", "--model-dir", str(trained_polyglot["model_dir"]), "--adapter-dir",
                    str(trained_polyglot["adapter_dir"]), "--memory-db", str(tmp_path / "m.db"), "--prompt",
                    "안녕 😊", env=env)
    assert result.returncode == 0, result.stderr.decode("euc-kr", "replace")[-2000:]
    shown = result.stdout.decode("euc-kr")  # every byte is EUC-KR: the emoji became "?"
    assert "나: 안녕 ?" in shown and "오로라: " in shown


def test_a_closed_stdin_is_the_end_of_the_conversation(trained_polyglot, tmp_path):
    result = script("llm/run_chat.py", "--model-dir", str(trained_polyglot["model_dir"]), "--adapter-dir",
                    str(trained_polyglot["adapter_dir"]), "--memory-db", str(tmp_path / "m.db"),
                    stdin=None, preexec_fn=lambda: os.close(0))  # as `run_chat.py 0<&-`
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    assert b"commands: /memory" in result.stdout and b"Traceback" not in result.stderr
