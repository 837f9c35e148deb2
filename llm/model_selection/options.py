"""The model-selection run's options. Light (no torch): --help and bad options answer at once."""

import dataclasses
from pathlib import Path

from llm.common.cli import SEED, ArgumentParser, positive_int
from llm.common.options import add_options, from_args, option
from llm.common.specs import DEFAULT_DATASET, MODELS_DIR, Recipe
from llm.model_selection.candidates import Candidate

DEFAULT_OUTPUT_DIR = Path(__file__).with_name("results")
DEFAULT_EPOCHS = 3
DEFAULT_TRAIN_PAIRS = 60


@dataclasses.dataclass(frozen=True)
class SelectionOptions:
    output_dir: Path = option(DEFAULT_OUTPUT_DIR, "where the result files go", type=Path)
    dataset: Path = option(DEFAULT_DATASET, "the dataset CSV", type=Path)
    models_dir: Path = option(MODELS_DIR, "folder holding each candidate's weights folder", type=Path)
    epochs: int = option(DEFAULT_EPOCHS, "fine-tuning epochs, the same for every candidate", type=positive_int)
    train_pairs: int = option(DEFAULT_TRAIN_PAIRS, "train pairs used, evenly spaced over the train rows",
                              type=positive_int)
    candidates: list | None = option(None, "test only these candidates (and their tiny stand-ins); one of: "
                                     "{names}", nargs="+", metavar="NAME")
    seed: int = option(Recipe.seed, "random seed", type=SEED)
    no_tiny: bool = option(False, "do not run the tiny stand-ins")


def parse_options(candidates: list[Candidate], argv: list[str] | None = None) -> SelectionOptions:
    parser = ArgumentParser(
        description="Compare the candidate base models of candidates.csv on the same short test: LoRA "
                    "fine-tuning on a subset of the train pairs, then every valid prompt answered twice. "
                    "Candidates without weights get a 'skipped' row; tiny random-init stand-ins of the "
                    "Polyglot (gpt_neox) and Gemma-2 (gemma2) architectures run too, marked is_tiny.",
    )
    names = [candidate.name for candidate in candidates]
    add_options(parser, SelectionOptions, names=", ".join(names))
    options = from_args(SelectionOptions, parser.parse_args(argv))
    unknown = [name for name in options.candidates or [] if name not in names]
    if unknown:
        parser.error(f"argument --candidates: invalid choice: {unknown[0]!r} (choose from {', '.join(names)})")
    return options
