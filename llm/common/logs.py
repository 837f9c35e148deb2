"""Run logs: what a run prints, teed into fine_tuning_logs*/YYMMDDHHMM.txt; per-epoch losses and their plot."""

import argparse
import contextlib
import os
import platform
import re
import shutil
import sys
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Protocol, TextIO

from llm.common.outputs import OutputError, describe_os_error

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> str:
    """'python 3.11.7, torch 2.13.0, ...': for log headers and reported figures."""
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"
    return ", ".join([f"python {platform.python_version()}", *(f"{name} {installed(name)}" for name in names)])


LOG_NAME = re.compile(r"\w[\w.-]*")  # letters (Hangul too), digits, '_', '.', '-': one file name, no folder


def log_name(text: str) -> str:
    """argparse type of --log-name: a word that can end a file name, never a path."""
    if not LOG_NAME.fullmatch(text) or ".." in text:
        raise argparse.ArgumentTypeError(f"expected letters, digits, '_', '.' or '-' (no spaces, no '/', no '..'), "
                                         f"got {text!r}")
    return text


def log_file_path(logs_dir: Path, name: str | None = None, now: float | None = None) -> Path:
    """`YYMMDDHHMM.txt` (or `YYMMDDHHMM_name.txt`); `-2`, `-3`... when that minute is taken. A name that is not a
    log_name has its other characters replaced by '_'."""
    stamp = time.strftime("%y%m%d%H%M", time.localtime(now))
    cleaned = re.sub(r"[^\w.-]+", "_", name or "").strip("._-")
    suffix = f"_{cleaned}" if cleaned else ""
    candidate, counter = logs_dir / f"{stamp}{suffix}.txt", 2
    while candidate.exists():
        candidate, counter = logs_dir / f"{stamp}-{counter}{suffix}.txt", counter + 1
    return candidate


class Log(Protocol):
    """What a run writes besides its printed lines: `detail` (the log file only: each test's answers, the logged
    numbers) and `notice` (the log file, and the screen on stderr)."""

    def detail(self, text: str) -> None: ...

    def notice(self, text: str) -> None: ...


class NoLog:
    """A Log that keeps nothing: the training benchmark's, and the other processes' of a multi-process run."""

    def detail(self, text: str) -> None:
        pass

    def notice(self, text: str) -> None:
        pass


class _Tee:
    """stdout while a log is open: the terminal and the log file; a failed write to the file is one line.

    The terminal gets whole lines, each written with the progress bars cleared and redrawn below it
    (tqdm.external_write_mode): a bar that redraws itself mid-line would otherwise split the line in two. A line
    wider than a terminal is wrapped between words, its continuation indented, instead of mid-word by the
    terminal; the log file keeps it as one line.
    """

    def __init__(self, terminal: TextIO, log: "RunLog | None") -> None:
        self.terminal, self.log = terminal, log
        self._pending = ""

    def write(self, text: str) -> int:
        if self.log is not None:
            self.log.to_file(text)
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            self._to_terminal(lines + "\n")
        return len(text)

    def _to_terminal(self, text: str) -> None:
        from tqdm import tqdm

        if self.isatty():
            text = _fit_to_width(text, shutil.get_terminal_size().columns - 1)
        with tqdm.external_write_mode(file=sys.stderr):  # the bars draw on stderr, the same screen
            self.terminal.write(text)
            self.terminal.flush()

    def flush(self) -> None:
        if self._pending:  # a prompt without a newline: shown now
            text, self._pending = self._pending, ""
            self._to_terminal(text)
        self.terminal.flush()

    def isatty(self) -> bool:
        return self.terminal.isatty()


def display_width(text: str) -> int:
    """The columns a terminal gives `text`: a wide character (Hangul, CJK, fullwidth forms) takes two, a
    combining mark none."""
    return sum(0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)


def _fit_to_width(text: str, width: int) -> str:
    """Each line wider than `width` columns broken between words, the rest indented by two spaces (a word wider
    than a row, a path, is left whole)."""
    return "\n".join(_wrap_line(line, width) if display_width(line) > width else line for line in text.split("\n"))


def _wrap_line(line: str, width: int) -> str:
    rows, row = [], ""
    for word in re.findall(r" *\S+", line):  # each word with the spaces before it: the line's indent stays
        if row and display_width(row + word) > width:
            rows.append(row)
            row = "  " + word.lstrip(" ")
        else:
            row += word
    return "\n".join(rows + [row])


@contextlib.contextmanager
def lines_above_bars() -> Iterator[None]:
    """While open, what is printed to stdout reaches the terminal as whole lines above the progress bars (as a
    RunLog's lines do), for programs that print without a log file."""
    terminal = sys.stdout
    sys.stdout = _Tee(terminal, None)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = terminal


class RunLog:
    """Context manager: while open, everything printed to stdout also goes to the log file.

    `detail(text)` goes to the log file only (and to the terminal too with verbose): the long answer blocks.
    The log always ends with a whole line saying how the run ended.
    """

    def __init__(self, path: Path, verbose: bool = False) -> None:
        self.path = path
        self.verbose = verbose
        self._file: TextIO | None = None
        self._stdout: TextIO | None = None
        self._at_line_start = True

    def __enter__(self) -> "RunLog":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("x", encoding="utf-8", buffering=1)
        except OSError as error:
            raise OutputError(f"log not written: {describe_os_error(error, self.path)}") from None
        self._stdout = sys.stdout
        sys.stdout = _Tee(self._stdout, self)
        return self

    def to_file(self, text: str) -> None:
        if self._file is None or not text:
            return
        try:
            self._file.write(text)
        except OSError as error:
            self._file = None  # the log is cut off here; the run stops with one line
            raise OutputError(f"log {self.path} cut off: {describe_os_error(error, self.path)}") from None
        self._at_line_start = text.endswith("\n")

    def detail(self, text: str) -> None:
        """A block for the log file (printed too when verbose)."""
        if self.verbose:
            print(text)
        else:
            self.to_file(text + "\n")

    def notice(self, text: str) -> None:
        """A notice (the tiny stand-in's): into the log, and once on the screen, on stderr, where it is seen even
        when stdout goes to a file."""
        self.to_file(text + "\n")
        print(text, file=sys.stderr, flush=True)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        sys.stdout.flush()
        sys.stdout = self._stdout
        if self._file is None:
            return
        ending = "" if self._at_line_start else "\n"
        if isinstance(error, KeyboardInterrupt):
            ending += f"RUN STOPPED: {error or 'interrupted (Ctrl-C)'}\n"
        elif error is not None and not isinstance(error, SystemExit):
            ending += f"RUN FAILED: {type(error).__name__}: {error}\n"
        try:
            self._file.write(ending)
            self._file.close()
        except OSError:
            pass  # the run already ends on the error that matters


@dataclass
class EpochLosses:
    epoch: int
    train_loss: float | None = None  # mean of the values logged during the epoch
    eval_loss: float | None = None


def epoch_losses(log_history: list[dict]) -> list[EpochLosses]:
    """Per epoch: the mean of the train losses logged in it and its eval loss, from the Trainer's log history."""
    train: dict[int, list[float]] = {}
    rows: dict[int, EpochLosses] = {}
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        if "loss" in entry:
            # A value logged at epoch 1.2 belongs to the second epoch; one logged at exactly 2.0, to the second.
            number = max(1, -int(-epoch // 1))
            train.setdefault(number, []).append(float(entry["loss"]))
            rows.setdefault(number, EpochLosses(number))
        if "eval_loss" in entry:
            rows.setdefault(round(epoch), EpochLosses(round(epoch))).eval_loss = float(entry["eval_loss"])
    for number, values in train.items():
        rows[number].train_loss = sum(values) / len(values)
    return [rows[number] for number in sorted(rows)]


def loss_figure(losses: list[EpochLosses], title: str):
    """Train and eval loss per epoch on whole-epoch ticks, the points labelled with their values when few."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4))
    for attribute, label, marker in (("train_loss", "train loss (mean of logged steps)", "o"),
                                     ("eval_loss", "eval loss (valid answers)", "s")):
        points = [(row.epoch, getattr(row, attribute)) for row in losses if getattr(row, attribute) is not None]
        if not points:
            continue
        axes.plot(*zip(*points), marker=marker, label=label)
        if len(points) <= 12:  # few points: their values are easier read than estimated
            for epoch, value in points:
                axes.annotate(f"{value:.3f}", (epoch, value), textcoords="offset points", xytext=(0, 6),
                              ha="center", fontsize=8)
    epochs = [row.epoch for row in losses]
    if epochs:
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if len(epochs) <= 20:
        axes.set_xticks(epochs)
    else:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    return figure


def plot_losses(losses: list[EpochLosses], path: Path, title: str) -> None:
    """The loss figure as a PNG, written beside, then renamed: a full disk leaves no 0-byte plot."""
    import matplotlib.pyplot as plt

    figure = loss_figure(losses, title)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        figure.savefig(partial, dpi=100, format="png", metadata={"Title": title})
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OutputError(f"plot not written: {describe_os_error(error, path)}") from None
    finally:
        plt.close(figure)
