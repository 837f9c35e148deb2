"""What every script does at its edges: one clear line and exit code 2 for bad input."""

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem the user can fix (bad file, bad option): shown as one line, no traceback."""


TRUST_PICKLED_OPTION = "--trust-pickled-weights"


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors too: one line, exit code 2, like every other bad input."""

    def error(self, message: str) -> None:
        raise UserError(f"{self.prog}: {message} (see --help)")


def run_main(main: Callable[[], int | None]) -> None:
    """Run a script's main; a UserError becomes `error: ...` on stderr and exit code 2."""
    try:
        code = main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def add_trust_pickled_option(parser: argparse.ArgumentParser) -> None:
    """The opt-in for pickled .bin weights, worded alike in every script that loads a weights folder."""
    parser.add_argument(TRUST_PICKLED_OPTION, action="store_true",
                        help="load pickled .bin weights (pytorch_model.bin) when a folder has no .safetensors; "
                             "unpickling can run code, so only for files whose source you trust")
