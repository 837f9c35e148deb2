"""Run logs: tee what a run prints into fine_tuning_logs*/YYMMDDHHMM.txt, and plot its losses."""

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def log_file_path(logs_dir: Path, log_name: str | None = None, now: float | None = None) -> Path:
    """`YYMMDDHHMM.txt` (or `YYMMDDHHMM (name).txt`); `-2`, `-3`... when that minute is taken."""
    stamp = time.strftime("%y%m%d%H%M", time.localtime(now))
    suffix = f" ({log_name})" if log_name else ""
    candidate, counter = logs_dir / f"{stamp}{suffix}.txt", 2
    while candidate.exists():
        candidate, counter = logs_dir / f"{stamp}-{counter}{suffix}.txt", counter + 1
    return candidate


class _Tee:
    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return self.streams[0].isatty()


class RunLog:
    """Context manager: while open, everything printed to stdout also goes to the log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._stdout: TextIO | None = None

    def __enter__(self) -> "RunLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("x", encoding="utf-8", buffering=1)
        self._stdout = sys.stdout
        sys.stdout = _Tee(self._stdout, self._file)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if error is not None and not isinstance(error, SystemExit):
            print(f"RUN FAILED: {type(error).__name__}: {error}")
        sys.stdout = self._stdout
        self._file.close()


def plot_losses(log_history: list[dict], path: Path, title: str) -> None:
    """Train loss (mean of the logged values in each epoch) and eval loss, per epoch."""
    train_by_epoch: dict[int, list[float]] = {}
    eval_points: list[tuple[float, float]] = []
    for entry in log_history:
        epoch = entry.get("epoch")
        if epoch is None:
            continue
        if "loss" in entry:
            # A value logged at epoch 1.2 belongs to the second epoch.
            train_by_epoch.setdefault(max(1, -int(-epoch // 1)), []).append(entry["loss"])
        if "eval_loss" in entry:
            eval_points.append((round(epoch), entry["eval_loss"]))
    figure, axes = plt.subplots(figsize=(7, 4))
    if train_by_epoch:
        epochs = sorted(train_by_epoch)
        axes.plot(epochs, [sum(train_by_epoch[e]) / len(train_by_epoch[e]) for e in epochs],
                  marker="o", label="train loss (mean of logged steps)")
    if eval_points:
        axes.plot(*zip(*eval_points), marker="s", label="eval loss (valid answers)")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
