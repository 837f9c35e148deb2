"""LoRA fine-tuning of Gemma-2 2B (the runner-up) into the Oh-LoRA persona.

Usage: python llm/run_fine_tuning.py --help
"""

import sys

try:
    from llm.common.specs import GEMMA
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.fine_tuning import run_fine_tuning

if __name__ == "__main__":
    run_fine_tuning(GEMMA)
