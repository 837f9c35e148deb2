"""Print the table of docs/gpu.md: which card holds which run of the recipe, and about how long its 60 epochs take.

Usage: python llm/fine_tuning/card_table.py
Each cell is estimated by llm/fine_tuning/estimate.py for the dataset's rows (their lengths counted by the
stand-in's tokenizer); a cell measured on a GPU says so, with the card and the figure.
"""

import sys

try:
    from llm.common.cli import ArgumentParser, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.data import load_splits
from llm.common.specs import DEFAULT_DATASET, GEMMA, POLYGLOT
from llm.fine_tuning.estimate import Plan, memory, time

CARDS_GIB = (8, 12, 16, 24, 80)
# (how the weights are held, gradient checkpointing, the row's label)
METHODS = (("bf16", False, "LoRA, bf16"), ("fp32", False, "LoRA, fp32"), ("4bit", False, "QLoRA, 4-bit"),
           ("4bit", True, "QLoRA, 4-bit, gradient checkpointing (recipes/qlora.yaml)"))
# What was measured (card, date, figure): replaces the estimate's claim in its cell.
MEASURED = {
    ("polyglot", "bf16", 80): "fits: 3.3 GB allocated on an H200 (141 GB), 2026-11-26",
}


def plans() -> list[tuple[str, Plan]]:
    from llm.fine_tuning.dry_run import row_lengths

    splits = load_splits(DEFAULT_DATASET)
    table = []
    for spec in (POLYGLOT, GEMMA):
        lengths, _ = row_lengths(spec, spec.model_dir, splits)
        for method, checkpointing, label in METHODS:
            table.append((label, Plan(spec, method, row_tokens=max(lengths), mean_row_tokens=sum(lengths) / len(lengths),
                                      train_rows=len(splits.train), eval_rows=len(splits.valid_with_answers),
                                      test_prompts=len(splits.valid), gradient_checkpointing=checkpointing)))
    return table


def markdown() -> str:
    lines = ["| model | method | peak (allocated) | " + " | ".join(f"{gib} GB" for gib in CARDS_GIB)
             + " | 60 epochs |", "|---|---|---:|" + "---|" * len(CARDS_GIB) + "---:|"]
    for label, plan in plans():
        need = memory(plan)
        measured = {} if plan.gradient_checkpointing else MEASURED
        cells = [measured.get((plan.spec.name, plan.method, gib), "fits" if need.fits(gib) else "no")
                 for gib in CARDS_GIB]
        minutes = time(plan).on(None) / 60
        lines.append(f"| {plan.spec.display_name} | {label} | {need.peak / 1024:.1f} GiB | "
                     + " | ".join(cells) + f" | ~{minutes:.0f} min |")
    return "\n".join(lines)


def main() -> int:
    ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    print(markdown())
    return 0


if __name__ == "__main__":
    run_main(main)
