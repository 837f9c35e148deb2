"""Compare the candidate base models on the same short fine-tuning and inference test.

Usage: python llm/model_selection/run_model_selection.py --help
"""

import sys

try:
    from llm.common.cli import run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.model_selection.candidates import load_candidates
from llm.model_selection.options import parse_options


def main() -> int:
    candidates = load_candidates()
    options = parse_options(candidates)
    from llm.model_selection.selection import main as run_selection  # torch loads only now

    return run_selection(options, candidates, sys.argv[1:])


if __name__ == "__main__":
    run_main(main)
