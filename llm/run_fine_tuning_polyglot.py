"""LoRA fine-tuning of Polyglot-Ko 1.3B (the chosen model) into the Oh-LoRA persona.

Usage: python llm/run_fine_tuning_polyglot.py --help
"""

from llm.common.cli import run_main
from llm.common.pipeline import fine_tune
from llm.common.specs import POLYGLOT

if __name__ == "__main__":
    run_main(lambda: fine_tune(POLYGLOT))
