"""The model-selection run's options. Light (no torch): --help and bad options answer at once."""

import argparse
from pathlib import Path

from llm.common.cli import SEED, ArgumentParser, positive_int
from llm.common.specs import DEFAULT_DATASET, MODELS_DIR, Recipe
from llm.model_selection.candidates import Candidate

DEFAULT_OUTPUT_DIR = Path(__file__).with_name("results")
DEFAULT_EPOCHS = 3
DEFAULT_TRAIN_PAIRS = 60


def build_parser(candidates: list[Candidate]) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Compare the candidate base models of candidates.csv on the same short test: LoRA "
                    "fine-tuning on a subset of the train pairs, then every valid prompt answered twice. "
                    "Candidates without weights get a 'skipped' row; tiny random-init stand-ins of the "
                    "Polyglot (gpt_neox) and Gemma-2 (gemma2) architectures run too, marked is_tiny.",
    )
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the result files go (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the dataset CSV (default: %(default)s)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR,
                        help="folder holding each candidate's weights folder (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                        help="fine-tuning epochs, the same for every candidate (default: %(default)s)")
    parser.add_argument("--train-pairs", type=positive_int, default=DEFAULT_TRAIN_PAIRS,
                        help="train pairs used, evenly spaced over the train rows (default: %(default)s)")
    parser.add_argument("--candidates", nargs="+", metavar="NAME", choices=[c.name for c in candidates],
                        help="test only these candidates (and their tiny stand-ins); "
                             f"one of: {', '.join(c.name for c in candidates)}")
    parser.add_argument("--seed", type=SEED, default=Recipe.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--no-tiny", action="store_true", help="do not run the tiny stand-ins")
    return parser
