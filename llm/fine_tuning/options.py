"""The fine-tuning scripts' options, declared once as FineTuningOptions (and the Recipe's and SpeedOptions'
fields), parsed into that dataclass. Light (no torch): `--help` and bad options answer at once."""

import argparse
import dataclasses
from pathlib import Path

from llm.common.cli import TRUST_PICKLED_HELP, ArgumentParser
from llm.common.logs import log_name
from llm.common.options import add_options, from_args, given, option, read_config
from llm.common.specs import DEFAULT_DATASET, QUANTIZATIONS, TINY_RECIPE, ModelSpec, Recipe
from llm.fine_tuning.speed import GPU_DEFAULTS, SpeedOptions, add_speed_options

KEEP_CHOICES = ("last", "best")
REPORT_TO_CHOICES = ("none", "tensorboard")


@dataclasses.dataclass(frozen=True)
class FineTuningOptions:
    """What a fine-tuning run was asked to do. Paths left None are the model's usual folders; `recipe` and
    `speed` hold only the values given (the run resolves the rest: the recipe, or the tiny stand-in's; the
    device's speed defaults)."""

    model_dir: Path | None = option(None, "folder with the base weights (default: {model_dir})", type=Path)
    dataset: Path | None = option(None, "the dataset CSV (default: {dataset})", type=Path)
    output_dir: Path | None = option(None, "where the adapter is saved; an existing folder is replaced only if "
                                     "this project saved it (default: {adapter_dir})", type=Path)
    logs_dir: Path | None = option(None, "where the log and plot go (default: {logs_dir})", type=Path)
    keep: str = option("last", "which epoch's adapter is saved: the last (the recipe's) or the one with the lowest "
                       "eval loss", choices=KEEP_CHOICES)
    report_to: str = option("none", "also send the losses to this tracker, to watch them live (tensorboard: logs in "
                            "<output-dir>_checkpoints/runs; needs `pip install tensorboard`)", choices=REPORT_TO_CHOICES)
    verbose: bool = option(False, "print every answer of the per-epoch tests on the terminal too (they always go "
                           "to the log)")
    log_name: str | None = option(None, "appended to the log file name: YYMMDDHHMM_NAME.txt (letters, digits, '_', "
                                  "'.', '-')", type=log_name, metavar="NAME")
    resume: bool = option(False, "continue an interrupted run from its latest complete checkpoint, with its settings")
    trust_pickled_weights: bool = option(False, TRUST_PICKLED_HELP)
    quantization: str | None = option(None, "load the base model's linear layers in 4 bits (QLoRA: NF4 with "
                                      "double quantisation, computed in bf16 where the GPU has it) or 8 bits, with "
                                      "bitsandbytes; the LoRA weights train as before, and the adapter serves the "
                                      "16-bit base (default: none; with --resume, the run's)", choices=QUANTIZATIONS)
    gradient_checkpointing: bool = option(False, "keep only each layer's input and recompute the rest in the "
                                          "backward pass: less memory for activations, more time")
    dry_run: bool = option(False, "print the run's estimate of peak GPU memory and time, then exit; loads no model")
    config: Path | None = option(None, "a YAML recipe whose keys are this script's options (`lora_rank: 16`, "
                                 "`quantization: 4bit`); an option given on the command line wins", type=Path,
                                 metavar="FILE")
    recipe: dict = dataclasses.field(default_factory=dict)
    speed: dict = dataclasses.field(default_factory=dict)
    from_config: dict = dataclasses.field(default_factory=dict)  # what --config set (the log names each)


def build_parser(spec: ModelSpec) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description=f"LoRA fine-tuning of {spec.display_name} into the Oh-LoRA persona. Without weights in "
                    f"--model-dir it runs on a tiny stand-in model of the same architecture, and says so.",
    )
    add_options(parser, FineTuningOptions, model_dir=spec.model_dir, adapter_dir=spec.adapter_dir,
                logs_dir=spec.logs_dir, dataset=DEFAULT_DATASET)
    add_options(parser.add_argument_group("recipe (hyperparameters)"), Recipe, unset=True,
                default_note=lambda field: f"; {TINY_RECIPE[field.name]} on the tiny stand-in"
                if field.name in TINY_RECIPE else "")
    add_speed_options(parser, title="speed options (how the recipe is computed, not what it learns; on a GPU "
                                    + ", ".join(f"--{name.replace('_', '-')} {value}"
                                                for name, value in GPU_DEFAULTS.items()) + " unless given)")
    return parser


def parse_options(spec: ModelSpec, argv: list[str] | None = None) -> FineTuningOptions:
    """The options from the command line over those of a --config file, over the defaults."""
    parser = build_parser(spec)
    first = parser.parse_args(argv)
    from_config = read_config(parser, first.config) if first.config is not None else {}
    parser.set_defaults(**from_config)
    args = parser.parse_args(argv)
    return from_args(FineTuningOptions, args, recipe=given(Recipe, args), speed=given(SpeedOptions, args),
                     from_config=from_config)
