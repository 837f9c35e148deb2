"""The training benchmark's main: one run of the options given, or --compare's variants one after another."""

import time

from llm.common.data import load_splits, row_tokens
from llm.common.logs import library_versions
from llm.common.models import ensure_tiny_model, load_tokenizer
from llm.common.outputs import check_writable_folder
from llm.common.specs import repo_relative
from llm.fine_tuning.benchmark.compare import (
    FASTER, WARM_UP, DatasetShape, combined, compare_variants, comparison_table, pick_variants,
)
from llm.fine_tuning.benchmark.machine import detect_machine
from llm.fine_tuning.benchmark.options import ALL_SHAPES, BenchmarkOptions, CompareOptions
from llm.fine_tuning.benchmark.results import (
    STATUS_OK, Outcome, Variant, check_output, default_output, outcome_summary, total_line, write_summary,
)
from llm.fine_tuning.benchmark.runner import BenchmarkRun
from llm.fine_tuning.speed import SpeedOptions

UNAVAILABLE_EXIT = 3  # a single run whose option cannot run here: a `skipped` row, nothing measured


def dataset_shape(spec, splits) -> DatasetShape:
    """The counts some variants' values come from; the longest row measured with the stand-in's tokenizer, which
    drives every shape here."""
    tokenizer = load_tokenizer(ensure_tiny_model(spec, splits))
    longest = max(tokens for _, tokens in row_tokens(splits, tokenizer)) + 1  # and the EOS the trainer appends
    return DatasetShape(len(splits.valid), len(splits.valid_with_answers), -(-longest // 8) * 8)


def _run_compare(bench: BenchmarkRun, variants: list[Variant], comparing: CompareOptions) -> list[Outcome]:
    started = time.perf_counter()
    warm_up_epochs = comparing.warm_up_epochs if comparing.warm_up_epochs is not None else 1
    if warm_up_epochs:
        # The first variant of a process pays its one-off set-up: on an H200, plain's first epoch took 36.6 s when
        # it ran first, the next variant's 11.5 s; on a 2-core CPU the first variant's epochs took twice as long.
        print(f"[warm-up] {warm_up_epochs} epoch{'s' if warm_up_epochs != 1 else ''} of the plain recipe, "
              f"not compared: the process's one-off set-up goes here")
        bench.run_variant(Variant(WARM_UP, SpeedOptions(), True), epochs=warm_up_epochs)
    outcomes: list[Outcome] = []
    for variant in variants:
        if comparing.time_budget is not None and outcomes:
            estimate = max(outcome.wall_s for outcome in outcomes)
            if time.perf_counter() - started + estimate > comparing.time_budget:
                outcomes.append(bench.skip(variant, f"--time-budget {comparing.time_budget:g} s would be passed"))
                continue
        outcome = bench.run_variant(variant)
        outcomes.append(outcome)
        if outcome.status == STATUS_OK:
            print(f"[{variant.name}] " + total_line(outcome))
    return outcomes


def main(options: BenchmarkOptions, comparing: CompareOptions) -> int:
    output = options.output if options.output is not None else default_output(options.shape)
    check_output(output)
    if options.summary is not None:
        check_writable_folder(options.summary.parent, "--summary")
    splits = load_splits(options.dataset)
    spec = ALL_SHAPES[options.shape]
    machine = detect_machine(options.peak_tflops)
    variants = (pick_variants(compare_variants(spec, machine.device, dataset_shape(spec, splits)), comparing.variants)
                if comparing.compare else [Variant("single", options.speed, True)])
    label = f"{spec.display_name} tiny stand-in" if options.is_tiny else f"{options.shape} (full size, random weights)"
    print(f"Oh-LoRA training benchmark: {label}, {options.epochs} epoch{'s' if options.epochs != 1 else ''} of the "
          f"recipe on {repo_relative(splits.path)} ({len(splits.train)} train rows, {len(splits.valid)} valid prompts, "
          f"{len(splits.valid_with_answers)} valid answers for the eval loss)")
    print(f"device: {machine.device.describe()}; peak for the utilisation: "
          f"{f'{machine.peak_tflops:g} TFLOP/s' if machine.peak_tflops else 'n/a'} ({machine.peak_source})")
    print(library_versions())
    print(f"results: {repo_relative(output)}")
    if not options.is_tiny:
        print("NOTICE: random weights driven by the tiny stand-in's tokenizer: every step costs what the real "
              "model's does, but the answers are noise, run to the length limit and are retried when empty, so "
              "the per-epoch test costs more than with a trained model.")
    bench = BenchmarkRun(options, spec, machine, splits, output, comparing.compare)
    started = time.perf_counter()
    if not comparing.compare:
        outcome = bench.run_variant(variants[0])
        write_summary(options.summary, outcome_summary(outcome))
        if outcome.status != STATUS_OK:
            return UNAVAILABLE_EXIT
        print(total_line(outcome))
        return 0
    outcomes = _run_compare(bench, variants, comparing)
    print()
    print(comparison_table(outcomes, machine.peak_tflops))
    speed, names = combined(outcomes)
    write_summary(options.summary, dict(variants=[outcome_summary(outcome) for outcome in outcomes],
                                        fastest_flags=speed.flags(), fastest_variants=names))
    none = f"(none: no option that keeps the recipe was {1 - FASTER:.0%} faster than plain)"
    print(f"fastest combination flags: {' '.join(speed.flags()) or none}"
          + (f" (from {', '.join(names)})" if names else ""))
    plain = outcomes[0]
    print(f"comparison: {len(outcomes)} variants in {time.perf_counter() - started:.1f} s; plain recipe "
          + (total_line(plain) if plain.status == STATUS_OK else plain.status))
    return 0
