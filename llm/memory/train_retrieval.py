"""Fit the chat memory's scorer: the offline one, or with --encoder a fine-tuned sentence encoder.

Usage: python llm/memory/train_retrieval.py --help   (the program: llm/memory/research/train.py)
"""

import sys

try:
    from llm.common.cli import run_main
    from llm.memory.research.train import main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")

if __name__ == "__main__":
    run_main(main)
