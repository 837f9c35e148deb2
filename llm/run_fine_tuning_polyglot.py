"""LoRA fine-tuning of Polyglot-Ko 1.3B (the chosen model) into the Oh-LoRA persona.

Usage: python llm/run_fine_tuning_polyglot.py --help
"""

import sys

try:
    from llm.common.specs import POLYGLOT
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.fine_tuning import run_fine_tuning

if __name__ == "__main__":
    run_fine_tuning(POLYGLOT)
