"""What a benchmark run reports: its rows (epochs and totals) in a CSV, a summary JSON, and the printed lines."""

import csv
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from llm.common.cli import UserError
from llm.common.outputs import append_line_safely, check_writable_folder
from llm.fine_tuning.benchmark.flops import throughput
from llm.fine_tuning.speed import SpeedOptions

RECIPE_EPOCHS = 60  # the recipe's epochs: what a run's total is projected to
DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
STATUS_OK = "ok"
COLUMNS = (
    "date", "variant", "flags", "shape", "device", "dtype", "epoch", "steps",
    "train_s", "eval_s", "test_s", "other_s", "epoch_s",
    "train_tokens", "tokens_per_s", "train_tflops", "mfu",
    "peak_allocated_mb", "peak_reserved_mb", "peak_rss_mb",
    "train_loss", "eval_loss", "run_s", "projected_60_epochs_s", "status",
)
PEAKS = ("peak_allocated_mb", "peak_reserved_mb", "peak_rss_mb")


@dataclass
class EpochTimes:
    epoch: int
    steps: int
    train_s: float
    eval_s: float
    test_s: float
    other_s: float
    tokens: int | None
    peak_allocated_mb: float | None
    peak_reserved_mb: float | None
    peak_rss_mb: float | None
    train_loss: float | None
    eval_loss: float | None

    @property
    def epoch_s(self) -> float:
        return self.train_s + self.eval_s + self.test_s + self.other_s


def steady_epoch_seconds(rows: list[EpochTimes]) -> float:
    """The mean epoch after the first (which also pays for warm-up: compilation, allocator growth, caches)."""
    later = rows[1:] or rows
    return sum(row.epoch_s for row in later) / len(later)


def projected(rows: list[EpochTimes], total: float) -> float:
    return total + (RECIPE_EPOCHS - len(rows)) * steady_epoch_seconds(rows)


@dataclass(frozen=True)
class Variant:
    name: str
    speed: SpeedOptions
    same_recipe: bool  # the same batches and the same maths (up to rounding): may join the suggested combination
    note: str = ""


@dataclass
class Outcome:
    variant: Variant
    status: str
    rows: list[EpochTimes] = field(default_factory=list)
    run_s: float | None = None  # program.train's wall time: the trainer's set-up and the training
    total_s: float | None = None  # the training: the sum of the epochs
    projected_s: float | None = None
    steady_epoch_s: float | None = None
    stopped_early: bool = False
    flops_per_token: int = 0
    wall_s: float = 0.0  # the whole variant, model building included


def default_output(shape: str) -> Path:
    stamp = datetime.now().strftime("%y%m%d%H%M")
    candidate, counter = DEFAULT_OUTPUT_DIR / f"{stamp}_{shape}.csv", 2
    while candidate.exists():
        candidate, counter = DEFAULT_OUTPUT_DIR / f"{stamp}-{counter}_{shape}.csv", counter + 1
    return candidate


def check_output(path: Path) -> None:
    """Refuse, before any work, a file that is not a benchmark CSV of these columns, or a place not writable."""
    if path.is_dir():
        raise UserError(f"--output {path}: a folder; give a file name")
    check_writable_folder(path.parent, "--output")
    if path.exists() and path.stat().st_size > 0:
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle), None)
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--output {path}: cannot be read as text ({error})") from None
        if header is None or tuple(header) != COLUMNS:
            raise UserError(f"--output {path}: not a results file of this benchmark (other columns); "
                            f"give a new file name")


def append_row(path: Path, row: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow({column: row.get(column, "") for column in COLUMNS})
    append_line_safely(path, text.getvalue())


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fixed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def loss_text(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.4f}"


def epoch_row(times: EpochTimes, flops: int, peak_tflops: float | None) -> dict[str, object]:
    """One epoch's CSV figures (the caller adds the run's columns)."""
    speed = throughput(times.tokens, times.train_s, flops, peak_tflops)
    return dict(
        epoch=times.epoch, steps=times.steps, train_s=fixed(times.train_s), eval_s=fixed(times.eval_s),
        test_s=fixed(times.test_s), other_s=fixed(times.other_s), epoch_s=fixed(times.epoch_s),
        train_tokens=times.tokens or "", tokens_per_s=fixed(speed.tokens_per_s, 1),
        train_tflops=fixed(speed.tflops, 3), mfu=fixed(speed.mfu, 4),
        **{name: fixed(getattr(times, name), 1) for name in PEAKS},
        train_loss=loss_text(times.train_loss), eval_loss=loss_text(times.eval_loss), status=STATUS_OK)


def total_row(outcome: Outcome, peak_tflops: float | None) -> dict[str, object]:
    """The `total` row: sums over the epochs, the largest peaks, the last losses, the projection."""
    rows = outcome.rows
    tokens = sum(row.tokens or 0 for row in rows)
    train_s = sum(row.train_s for row in rows)
    speed = throughput(tokens, train_s, outcome.flops_per_token, peak_tflops)
    peaks = {name: max((getattr(row, name) for row in rows if getattr(row, name) is not None), default=None)
             for name in PEAKS}
    return dict(
        epoch="total", steps=sum(row.steps for row in rows), train_s=fixed(train_s),
        eval_s=fixed(sum(row.eval_s for row in rows)), test_s=fixed(sum(row.test_s for row in rows)),
        other_s=fixed(sum(row.other_s for row in rows)), epoch_s=fixed(outcome.total_s), train_tokens=tokens or "",
        tokens_per_s=fixed(speed.tokens_per_s, 1), train_tflops=fixed(speed.tflops, 3), mfu=fixed(speed.mfu, 4),
        **{name: fixed(value, 1) for name, value in peaks.items()},
        train_loss=loss_text(rows[-1].train_loss), eval_loss=loss_text(rows[-1].eval_loss),
        run_s=fixed(outcome.run_s), projected_60_epochs_s=fixed(outcome.projected_s, 1),
        status=STATUS_OK + (" (stopped early: --max-seconds)" if outcome.stopped_early else ""))


def epoch_line(times: EpochTimes, flops: int, peak_tflops: float | None) -> str:
    speed = throughput(times.tokens, times.train_s, flops, peak_tflops)
    rates = ""
    if speed.tokens_per_s:
        mfu = f", MFU {speed.mfu:.1%}" if speed.mfu is not None else ""
        rates = f", {times.tokens:,} tokens, {speed.tokens_per_s:,.0f} tokens/s, {speed.tflops:.2f} TFLOP/s{mfu}"
    memory = (f"peak {times.peak_allocated_mb:,.0f} MB allocated / {times.peak_reserved_mb:,.0f} MB reserved"
              if times.peak_allocated_mb is not None else f"peak GPU memory n/a (CPU), peak RSS {times.peak_rss_mb:,.0f} MB")
    return (f"  timing of epoch {times.epoch}: training steps {times.train_s:.2f} s ({times.steps} steps{rates}), "
            f"eval loss {times.eval_s:.2f} s, valid-prompt test {times.test_s:.2f} s, other {times.other_s:.2f} s "
            f"= {times.epoch_s:.2f} s; {memory}")


def total_line(outcome: Outcome) -> str:
    rows = outcome.rows
    parts = ", ".join(f"{name} {sum(getattr(row, name + '_s') for row in rows):.1f} s"
                      for name in ("train", "eval", "test", "other"))
    stopped = " (stopped early by --max-seconds)" if outcome.stopped_early else ""
    return (f"total: {outcome.total_s:.1f} s for {len(rows)} epoch{'s' if len(rows) != 1 else ''}{stopped} ({parts}); "
            f"projected to {RECIPE_EPOCHS} epochs: {outcome.projected_s:.1f} s ({outcome.projected_s / 60:.1f} min)")


def outcome_summary(outcome: Outcome) -> dict[str, object]:
    return dict(variant=outcome.variant.name, flags=outcome.variant.speed.flags(), status=outcome.status,
                epochs=len(outcome.rows), total_s=outcome.total_s, run_s=outcome.run_s,
                steady_epoch_s=outcome.steady_epoch_s, projected_60_epochs_s=outcome.projected_s,
                same_recipe=outcome.variant.same_recipe, wall_s=outcome.wall_s)


def write_summary(path: Path | None, summary: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
