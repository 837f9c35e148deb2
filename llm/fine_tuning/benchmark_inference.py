"""Benchmark: batched against one-by-one greedy answers to the valid prompts, on the same fine-tuned model.

Usage: python llm/fine_tuning/benchmark_inference.py --help
Last line: `speed-up: N.Nx`.
"""

import argparse
import time
from pathlib import Path

import sys

try:
    from llm.common.cli import ArgumentParser, add_trust_pickled_option, positive_int, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.markers import build_prompt
from llm.common.specs import DEFAULT_BATCH_SIZE, DEFAULT_DATASET, SPECS


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(SPECS), default="polyglot", help="base model (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, help="base weights folder (default: the model's usual folder)")
    parser.add_argument("--adapter-dir", type=Path, help="fine-tuned adapter (default: the model's usual folder)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="dataset CSV (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                        help="prompts per batch in the batched run (default: %(default)s)")
    add_trust_pickled_option(parser)
    return parser.parse_args()


def explain_difference(model, tokenizer, one, batched) -> str:
    """Where two greedy answers part, how close the model's top two next tokens are (unpadded)."""
    import torch

    common = 0
    while common < min(len(one.text), len(batched.text)) and one.text[common] == batched.text[common]:
        common += 1
    context = build_prompt(one.user_input) + " " + one.text[:common]
    encoded = tokenizer(context.rstrip() if common == 0 else context, return_tensors="pt").to(model.device)
    with torch.no_grad():
        logits = model(**encoded).logits[0, -1].float()
    top = torch.topk(logits, 2)
    first, second = (tokenizer.decode([int(i)]) for i in top.indices)
    gap = float(top.values[0] - top.values[1])
    verdict = "a float near-tie: padding changes the order of the sums" if gap < 1e-2 else "not a near-tie"
    return (f"  {one.user_input!r}: answers part after {one.text[:common]!r}; top-2 next tokens "
            f"{first!r} {float(top.values[0]):.5f} vs {second!r} {float(top.values[1]):.5f} (gap {gap:.5f}): {verdict}")


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> int:
    args = parse_args()
    from llm.common.logs import lines_above_bars

    with lines_above_bars():  # its lines reach the terminal whole, above the bars, broken between words
        return _benchmark(args)


def _benchmark(args: argparse.Namespace) -> int:
    # torch and transformers load only now, so that --help and bad options answer at once.
    import torch

    from llm.common.adapters import load_fine_tuned
    from llm.common.data import load_splits
    from llm.common.inference import generate_answers
    from llm.common.device import detect

    spec = SPECS[args.model]
    splits = load_splits(args.dataset)
    device = detect()
    loaded = load_fine_tuned(spec, args.model_dir or spec.model_dir, args.adapter_dir or spec.adapter_dir,
                             device.kind, device.dtype, trust_pickled=args.trust_pickled_weights)
    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = [example.input_data for example in splits.valid]
    print(f"model: {spec.display_name}{' (tiny stand-in)' if loaded.is_tiny else ''}, device: {device.describe()}, "
          f"{len(prompts)} valid prompts, greedy, batch size {args.batch_size}, torch threads {torch.get_num_threads()}")

    generate_answers(model, tokenizer, prompts[:2], batch_size=2)  # warm-up: first calls pay one-off costs
    one_by_one, one_seconds = timed(lambda: generate_answers(model, tokenizer, prompts, batch_size=1,
                                                             progress="one by one"))
    batched, batched_seconds = timed(lambda: generate_answers(model, tokenizer, prompts,
                                                              batch_size=args.batch_size, progress="batched"))
    print(f"one by one: {one_seconds:.2f} s ({one_seconds / len(prompts) * 1000:.0f} ms per prompt)")
    print(f"batched:    {batched_seconds:.2f} s ({batched_seconds / len(prompts) * 1000:.0f} ms per prompt)")

    differing = [(a, b) for a, b in zip(one_by_one, batched) if a.text != b.text]
    if differing:
        print(f"{len(differing)} of {len(prompts)} answers differ between the two runs:")
        for one, other in differing:
            print(explain_difference(model, tokenizer, one, other))
    else:
        print(f"all {len(prompts)} answers are the same both ways")
    print(f"speed-up: {one_seconds / batched_seconds:.1f}x")
    return 0


if __name__ == "__main__":
    run_main(main)
