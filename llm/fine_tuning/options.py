"""The fine-tuning scripts' options. Light (no torch): `--help` and bad options answer at once."""

import argparse
from dataclasses import fields
from pathlib import Path

from llm.common.cli import ArgumentParser, add_trust_pickled_option
from llm.common.logs import log_name
from llm.common.specs import DEFAULT_DATASET, TINY_RECIPE, ModelSpec, Recipe

KEEP_CHOICES = ("last", "best")
REPORT_TO_CHOICES = ("none", "tensorboard")


def _escaped(help_text: str) -> str:
    """Help text with a path in it: argparse would read a '%' in the path as a format."""
    return help_text.replace("%", "%%")


def build_parser(spec: ModelSpec) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=f"LoRA fine-tuning of {spec.display_name} into the Oh-LoRA persona. Without weights in "
                    f"--model-dir it runs on a tiny stand-in model of the same architecture, and says so.",
    )
    # Options a resumed run takes from the run it continues default to None, so that a value given on the
    # command line can be told from the default; their help names the default itself.
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=_escaped(f"folder with the base weights (default: {spec.model_dir})"))
    parser.add_argument("--dataset", type=Path, default=None, help=_escaped(f"the dataset CSV (default: {DEFAULT_DATASET})"))
    parser.add_argument("--output-dir", type=Path, default=spec.adapter_dir,
                        help=_escaped(f"where the adapter is saved; an existing folder is replaced only if this "
                                      f"project saved it (default: {spec.adapter_dir})"))
    parser.add_argument("--logs-dir", type=Path, default=spec.logs_dir,
                        help=_escaped(f"where the log and plot go (default: {spec.logs_dir})"))
    for field in fields(Recipe):
        if "help" not in field.metadata:
            continue
        tiny = f"; {TINY_RECIPE[field.name]} on the tiny stand-in" if field.name in TINY_RECIPE else ""
        parser.add_argument("--" + field.name.replace("_", "-"), type=field.metadata["type"], default=None,
                            help=f"{field.metadata['help']} (default: {field.default}{tiny})")
    parser.add_argument("--keep", choices=KEEP_CHOICES, default="last",
                        help="which epoch's adapter is saved: the last (the recipe's) or the one with the lowest "
                             "eval loss (default: %(default)s)")
    parser.add_argument("--report-to", choices=REPORT_TO_CHOICES, default="none",
                        help="also send the losses to this tracker, to watch them live (tensorboard: logs in "
                             "<output-dir>_checkpoints/runs; needs `pip install tensorboard`) (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="print every answer of the per-epoch tests on the terminal too (they always go to the log)")
    parser.add_argument("--log-name", type=log_name, default=None, metavar="NAME",
                        help="appended to the log file name: YYMMDDHHMM_NAME.txt (letters, digits, '_', '.', '-')")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run from its latest complete checkpoint, with its settings")
    add_trust_pickled_option(parser)
    return parser
