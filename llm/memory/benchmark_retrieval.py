"""Time the chat memory's scorers: the load, and milliseconds per message against N stored memories.

Usage: python llm/memory/benchmark_retrieval.py --help   (the program: llm/memory/research/benchmark.py)
"""

import sys

try:
    from llm.common.cli import run_main
    from llm.memory.research.benchmark import main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")

if __name__ == "__main__":
    run_main(main)
