"""Benchmark: the fine-tuning recipe at real size, epoch by epoch: where the time goes, and what makes it faster.

Usage: python llm/fine_tuning/benchmark_training.py --help
It runs the fine-tuning scripts' own training (llm.fine_tuning.program.train: LoRA r=64, batch 4, the eval
loss and the valid-prompt test after every epoch) on a randomly initialised model of a real model's full
shape (--shape), or on the tiny stand-in (--shape tiny), and writes one CSV row per epoch. The last line is
`total: ... s for N epochs ...; projected to 60 epochs: ... s`. --compare runs the plain recipe and then each
speed option on the same machine, and prints a table of their ratios. docs/gpu.md says how FLOPs are counted.
The code: llm/fine_tuning/benchmark/.
"""

import sys

try:
    from llm.common.cli import run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.fine_tuning.benchmark.options import parse_options


def main() -> int:
    options, comparing = parse_options()
    from llm.common.logs import lines_above_bars
    from llm.fine_tuning.benchmark.main import main as run  # torch loads only now: --help answers at once

    with lines_above_bars():
        return run(options, comparing)


if __name__ == "__main__":
    run_main(main)
