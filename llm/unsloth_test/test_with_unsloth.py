"""Inference and LoRA fine-tuning of Gemma-2 2B measured WITH Unsloth: wall time and peak memory.

Usage: python llm/unsloth_test/test_with_unsloth.py --help
Needs a CUDA GPU of compute capability 7.0 or newer and `pip install -r requirements-unsloth.txt`.
Where Unsloth cannot run, it records an `unavailable: <reason>` row, prints the reason and exits with code 3.
Compare with test_without_unsloth.py: python llm/unsloth_test/compare.py

NOT YET RUN on a GPU in this repository's development (no GPU was lent to a session so far): only the
unavailable path runs in the tests.
"""

import sys

try:
    from llm.common.cli import run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.unsloth_test import build_parser, unsloth_unavailable


def main() -> int:
    args = build_parser(with_unsloth=True).parse_args()
    reason = unsloth_unavailable()  # imports unsloth, where it can, before transformers loads
    from llm.unsloth_test import bench

    if reason is not None:
        return bench.record_unavailable(reason, args)
    from llm.unsloth_test.unsloth_backend import UNSLOTH

    return bench.run(UNSLOTH, args)


if __name__ == "__main__":
    run_main(main)
