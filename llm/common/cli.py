"""What every script does at its edges: one clear line and exit code 2 for bad input."""

import argparse
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad file, bad option): shown as one line, no traceback."""


TRUST_PICKLED_OPTION = "--trust-pickled-weights"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors too: one line, exit code 2, like every other bad input."""

    def error(self, message: str) -> None:
        raise UserError(f"{self.prog}: {message} (see --help)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean-up runs (saves finish or roll back, logs close)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated("terminated (SIGTERM)")


def to_stderr(text: str) -> None:
    """Where notices go by default: off stdout, which may be a transcript or a pipe."""
    print(text, file=sys.stderr, flush=True)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when it has none): for one-line reports."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def error_line(error: BaseException) -> str:
    """`Type: first line of the message`, or the type alone when the message is empty."""
    return f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else type(error).__name__


def ignore_library_notices() -> None:
    """Notices raised inside the libraries on every run and load, not the user's business: transformers'
    deprecation notices for the gradient-checkpointing names peft and TRL still use, and bitsandbytes' note (on
    CPUs with AVX-512 bf16) that an optional kernel from the model hub is not installed."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="`gradient_checkpointing_enable` is deprecated", category=FutureWarning)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def run_main(main: Callable[[], int | None], interrupted_hint: str = "") -> None:
    """Run a script's main; a UserError becomes `error: ...` on stderr and exit code 2.

    Ctrl-C and SIGTERM end it with one line (and `interrupted_hint`, e.g. how to continue), exit 130 or 143.
    """
    signal.signal(signal.SIGTERM, _raise_terminated)
    ignore_library_notices()
    tolerate_narrow_terminals()
    try:
        code = main()
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's own flush at exit
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        new_line = "\n" if sys.stderr.isatty() else ""  # off the line of a progress bar
        print(new_line + ("terminated" if terminated else "interrupted") + interrupted_hint, file=sys.stderr)
        sys.exit(143 if terminated else 130)
    except BrokenPipeError:  # `| head`: whoever read the output has seen enough; as a SIGPIPE would end it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    sys.exit(code or 0)


def tolerate_narrow_terminals() -> None:
    """Output in a locale that cannot write Hangul or emoji (EUC-KR, C): what it cannot encode is replaced, never a
    crash; a closed stdin reads as the end of input."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace" if stream is sys.stdout else "backslashreplace")
    if sys.stdin is None:  # started with stdin closed (0<&-)
        sys.stdin = open(os.devnull, encoding="utf-8")


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}" if low == 1 else f"must be >= {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {value}")
        return value
    return parse


def float_range(low: float, high: float, low_inclusive: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number in (low, high], or [low, high] with low_inclusive."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (value == low and not low_inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if low_inclusive else '>'} {low:g}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value
    return parse


positive_int = int_range(1)
positive_float = float_range(0.0, math.inf)
SEED = int_range(0, 2**32 - 1)  # what numpy's and torch's seeding accept
TEMPERATURE = float_range(0.01, 100.0, low_inclusive=True)  # below, softmax overflows to inf and NaN


# The opt-in for pickled .bin weights, worded alike in every script that loads a weights folder.
TRUST_PICKLED_HELP = ("load pickled .bin weights (pytorch_model.bin) when a folder has no .safetensors; unpickling "
                      "can run code, so only for files whose source you trust")


def add_trust_pickled_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(TRUST_PICKLED_OPTION, action="store_true", help=TRUST_PICKLED_HELP)
