"""Inference and LoRA fine-tuning of Gemma-2 2B measured WITH Unsloth: wall time and peak memory.

Usage: python llm/unsloth_test/test_with_unsloth.py --help
Needs a CUDA GPU of compute capability 7.0 or newer and `pip install -r requirements-unsloth.txt`.
Where Unsloth cannot run, it records an `unavailable: <reason>` row, prints the reason and exits with code 3.
Compare with test_without_unsloth.py: python llm/unsloth_test/compare.py

With torch 2.11 on an H200, fine-tuning failed inside Unsloth's per-block torch.compile (docs/gpu.md);
--no-block-compile turns that compile off.
"""

import dataclasses
import os
import sys

try:
    from llm.common.cli import run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.unsloth_test import parse_options, unsloth_unavailable


def main() -> int:
    options = parse_options(with_unsloth=True)
    if options.no_block_compile:
        os.environ["UNSLOTH_BLOCK_COMPILE"] = "0"  # Unsloth's own switch, read when it patches the model
    reason = unsloth_unavailable()  # imports unsloth, where it can, before transformers loads
    from llm.unsloth_test import bench

    if reason is not None:
        return bench.record_unavailable(reason, options)
    from llm.unsloth_test.unsloth_side import UNSLOTH

    return bench.run(dataclasses.replace(UNSLOTH, unsloth=options.side), options)


if __name__ == "__main__":
    run_main(main)
