"""Compare the candidate base models on the same short fine-tuning and inference test.

Usage: python llm/model_selection/run_model_selection.py --help
"""

from llm.common.cli import run_main
from llm.model_selection.selection import main

if __name__ == "__main__":
    run_main(main)
