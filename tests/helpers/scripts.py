"""Running the repo's scripts as a user would: as real processes, or inside the test process (same entry point, same
exit code and output, without paying again for the imports)."""

import ast
import contextlib
import io
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _script_process(script: str, *args: str) -> dict:
    return dict(args=[sys.executable, str(REPO / script), *args], cwd=REPO, text=True,
                env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def run_script(script: str, *args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """Run one of the repo's scripts as a user would, from the repo root."""
    return subprocess.run(**_script_process(script, *args), capture_output=True, timeout=timeout, **kwargs)


def start_script(script: str, *args: str) -> subprocess.Popen:
    """run_script's process, started and left running (its output piped)."""
    return subprocess.Popen(**_script_process(script, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


PYTHON_DEFAULT_FILTERS = [("default", DeprecationWarning, "__main__"), ("ignore", DeprecationWarning, ""),
                          ("ignore", PendingDeprecationWarning, ""), ("ignore", ImportWarning, ""),
                          ("ignore", ResourceWarning, "")]


class _WarningRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> tuple[str, str]:
    """Send a started script `sig` and collect (stdout, stderr); killed when it has not ended after `timeout`."""
    process.send_signal(sig)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def wait_for(condition: Callable[[], object], what: str, timeout: float,
             not_yet: tuple[type[BaseException], ...] = (OSError,)):
    """condition()'s first true value, polled until `timeout` seconds have passed; an exception of `not_yet` (a
    server not listening yet, an element being re-rendered) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except not_yet:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def run_in_process(script: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """`python script args` run inside this test process: the same code from the same entry point, without
    paying again for the imports that cost a real process 4-5 s. What only a real process shows (signals,
    kill -9, the imports at start, the virtualenv guard, a server) stays with run_script.

    stderr holds what the script printed there, then each Python warning (as Python prints it) and library log
    record of WARNING and above: a real process prints those too, but in this one pytest has taken their streams.
    """
    out, err = io.StringIO(), io.StringIO()
    records = _WarningRecords()
    loggers = [logging.getLogger(), logging.getLogger("transformers")]  # transformers' does not propagate
    saved = (sys.argv, sys.stdin, os.getcwd(), dict(os.environ),
             {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)})
    code: int = 0
    for logger in loggers:
        logger.addHandler(records)
    try:
        sys.argv = [str(REPO / script), *args]
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        os.chdir(REPO)
        with warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            warnings.resetwarnings()  # pytest's filters out, a fresh interpreter's in (Python 3.11, no -W)
            for action, category, module in PYTHON_DEFAULT_FILTERS:
                warnings.filterwarnings(action, category=category, module=module, append=True)
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    code = exit_.code or 0
                else:  # sys.exit("message"): Python prints it and exits 1
                    print(exit_.code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        for logger in loggers:
            logger.removeHandler(records)
        sys.argv, sys.stdin, cwd, environment, handlers = saved
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)
        for number, handler in handlers.items():
            signal.signal(number, handler)
    stderr = err.getvalue() + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line)
                                      for w in caught) + "".join(line + "\n" for line in records.lines)
    return subprocess.CompletedProcess([sys.executable, script, *args], code, out.getvalue(), stderr)


def heavy_modules_after(script: str, *args: str) -> tuple[int, list[str]]:
    """(exit code, the heavy libraries imported) once a script with these arguments has ended: none when it
    answered at once."""
    code = ("import runpy, sys\n"
            f"sys.argv = {[str(REPO / script), *args]!r}\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as end:\n    code = end.code\n"
            "else:\n    code = 0\n"
            "print((code, sorted(name for name in ('torch', 'transformers', 'gradio', 'trl') if name in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])  # printed last, after the script's output


def heavy_modules_after_help(script: str) -> list[str]:
    """The heavy libraries a script has imported once it has printed --help (none: it answers at once)."""
    code, modules = heavy_modules_after(script, "--help")
    assert code == 0
    return modules

