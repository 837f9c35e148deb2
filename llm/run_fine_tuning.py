"""LoRA fine-tuning of Gemma-2 2B (the runner-up) into the Oh-LoRA persona.

Usage: python llm/run_fine_tuning.py --help
"""

from llm.common.cli import run_main
from llm.common.pipeline import fine_tune
from llm.common.specs import GEMMA

if __name__ == "__main__":
    run_main(lambda: fine_tune(GEMMA))
