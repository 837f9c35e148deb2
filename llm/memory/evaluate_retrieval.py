"""Measure the chat memory's scorers side by side (by default on the five blind sets, which nothing was fitted on).

Usage: python llm/memory/evaluate_retrieval.py --help   (the program: llm/memory/research/evaluate.py)
"""

import sys

try:
    from llm.common.cli import run_main
    from llm.memory.research.evaluate import main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")

if __name__ == "__main__":
    run_main(main)
