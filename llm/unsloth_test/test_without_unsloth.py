"""Inference and LoRA fine-tuning of Gemma-2 2B measured WITHOUT Unsloth: wall time and peak memory.

Usage: python llm/unsloth_test/test_without_unsloth.py --help
Runs anywhere (GPU or CPU). `--shape gemma-2-2b` or `--shape polyglot-ko-1.3b` measures a randomly
initialised model of the real full size. Compare with test_with_unsloth.py: python llm/unsloth_test/compare.py
"""

import sys

try:
    from llm.common.cli import run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.unsloth_test import parse_options


def main() -> int:
    options = parse_options(with_unsloth=False)
    from llm.unsloth_test.bench import PLAIN, run  # torch loads only now: --help answers at once

    return run(PLAIN, options)


if __name__ == "__main__":
    run_main(main)
