"""What the training benchmark is asked to do (its speed options are llm/fine_tuning/speed.py's). Light: --help
answers before torch loads."""

import argparse
import dataclasses
from pathlib import Path

from llm.common.cli import ArgumentParser, UserError, int_range, positive_float
from llm.common.options import add_options, from_args, given, option
from llm.common.specs import DEFAULT_DATASET, GEMMA, POLYGLOT, QUANTIZATIONS, SHAPES, repo_relative
from llm.fine_tuning.benchmark.results import DEFAULT_OUTPUT_DIR, RECIPE_EPOCHS
from llm.fine_tuning.speed import SpeedOptions, add_speed_options

TINY_SHAPES = {"tiny": POLYGLOT, "tiny-gemma": GEMMA}  # the project's tiny stand-ins, for CPU runs and tests
ALL_SHAPES = {**SHAPES, **TINY_SHAPES}
DEFAULT_EPOCHS = 3


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
    shape: str = option(POLYGLOT.shape, "the model: a real model's full shape with random weights, or `tiny` / "
                        "`tiny-gemma`, the project's tiny Polyglot / Gemma-2 stand-in", choices=tuple(ALL_SHAPES))
    dataset: Path = option(DEFAULT_DATASET, "the dataset CSV", type=Path)
    epochs: int = option(DEFAULT_EPOCHS, f"epochs to run; the total is also projected to the recipe's {RECIPE_EPOCHS}",
                         type=int_range(1, 1000))
    output: Path | None = option(None, "the CSV the rows go to; an existing one of these columns is appended to "
                                 f"(default: a new file in {repo_relative(DEFAULT_OUTPUT_DIR)}/)", type=Path)
    summary: Path | None = option(None, "also write the totals (and with --compare the suggested flags) to this "
                                  "JSON file", type=Path)
    peak_tflops: float | None = option(None, "the device's dense bf16 peak in TFLOP/s, for the model FLOPs "
                                       "utilisation (default: from a table of known GPUs; none on CPU)",
                                       type=positive_float)
    save_checkpoints: bool = option(False, "save a checkpoint every epoch as the fine-tuning scripts do (into a "
                                    "temporary folder, removed at the end); without it nothing is saved")
    max_seconds: float | None = option(None, "stop after the epoch that would end past this many seconds of "
                                       "training (the total is still projected to 60 epochs)", type=positive_float)
    quantization: str = option("none", "the base's linear layers in 4 or 8 bits, as the fine-tuning scripts' "
                               "--quantization (a full shape's random weights are saved to a temporary folder "
                               "first, to load them as the scripts do)", choices=QUANTIZATIONS)
    gradient_checkpointing: bool = option(False, "as the fine-tuning scripts' --gradient-checkpointing")
    speed: SpeedOptions = dataclasses.field(default_factory=SpeedOptions)

    @property
    def is_tiny(self) -> bool:
        return self.shape in TINY_SHAPES


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    compare: bool = option(False, "run the plain recipe, then each speed option alone, on this machine; print a "
                           "table of the ratios and the flags of the options that were faster")
    variants: str | None = option(None, "with --compare: only these variants, comma-separated (plain always runs "
                                  "first); the names are in the table")
    time_budget: float | None = option(None, "with --compare: start no variant that would end past this many "
                                       "seconds", type=positive_float)
    warm_up_epochs: int | None = option(None, "with --compare: epochs of the plain recipe run first and left out of "
                                        "the table, so that the process's one-off set-up (CUDA libraries, Triton "
                                        "kernels, clocks, caches) is not charged to plain (default: 1)",
                                        type=int_range(0, 10))


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Benchmark: the fine-tuning recipe at real size, epoch by epoch: where the "
                                        "time goes, and what makes it faster.")
    add_options(parser, BenchmarkOptions)
    add_speed_options(parser)
    add_options(parser.add_argument_group("comparing"), CompareOptions)
    return parser


def parse_options(argv: list[str] | None = None) -> tuple[BenchmarkOptions, CompareOptions]:
    """The options, once they are known not to contradict each other."""
    args = build_parser().parse_args(argv)
    speed = given(SpeedOptions, args)
    options = from_args(BenchmarkOptions, args, speed=SpeedOptions(**speed))
    comparing = from_args(CompareOptions, args)
    options.speed.check()
    if comparing.compare and speed:
        raise UserError("--compare runs each speed option itself: leave out the speed options")
    if not comparing.compare and any(value is not None for value in (
            comparing.variants, comparing.time_budget, comparing.warm_up_epochs)):
        raise UserError("--variants, --time-budget and --warm-up-epochs go with --compare")
    return options, comparing
