"""Inference and LoRA fine-tuning of Gemma-2 2B measured WITHOUT Unsloth: wall time and peak memory.

Usage: python llm/unsloth_test/test_without_unsloth.py --help
Runs anywhere (GPU or CPU). `--shape gemma-2-2b` or `--shape polyglot-ko-1.3b` measures a randomly
initialised model of the real full size. Compare with test_with_unsloth.py: python llm/unsloth_test/compare.py
"""

from llm.common.cli import run_main
from llm.unsloth_test.bench import PLAIN, run

if __name__ == "__main__":
    run_main(lambda: run(PLAIN))
