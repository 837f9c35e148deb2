"""Print what Unsloth saves, as a markdown table, for the latest matching with/without pair of rows.

Usage: python llm/unsloth_test/compare.py [--results FILE] [--model LABEL]
Two rows match when both runs succeeded on the same model (or shape) and device, with the same counts.
"""

import argparse
from pathlib import Path

import sys

try:
    from llm.common.cli import ArgumentParser, UserError, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.unsloth_test import DEFAULT_RESULTS, STATUS_OK, WITH_SIDES, WITHOUT, read_results

MATCH_KEYS = ("model", "device", "prompts", "train_pairs", "epochs")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Print the with/without Unsloth table (time and peak memory, saving in percent) for the "
                    "latest pair of successful runs of the same model on the same device with the same counts.",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="the results file (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="only rows whose model column is exactly this (default: any, the latest pair wins)")
    return parser


def latest_pair(rows: list[dict[str, str]], model: str | None = None) -> tuple[dict, dict] | None:
    """(with row, without row) of the matching pair whose newer row is the newest; None when there is none."""
    ok = [(index, row) for index, row in enumerate(rows)
          if row["status"] == STATUS_OK and (model is None or row["model"] == model)]
    best: tuple[int, dict, dict] | None = None
    for with_index, with_row in ok:
        if with_row["unsloth"] not in WITH_SIDES:
            continue
        key = [with_row[name] for name in MATCH_KEYS]
        matches = [(index, row) for index, row in ok
                   if row["unsloth"] == WITHOUT and [row[name] for name in MATCH_KEYS] == key]
        if matches:
            without_index, without_row = matches[-1]
            newest = max(with_index, without_index)
            if best is None or newest > best[0]:
                best = (newest, with_row, without_row)
    return None if best is None else (best[1], best[2])


def saving(with_value: float, without_value: float) -> str:
    """How much less Unsloth needed, in percent of without (negative: it needed more)."""
    return f"{(without_value - with_value) / without_value * 100:.1f} %" if without_value > 0 else "n/a"


def table(with_row: dict[str, str], without_row: dict[str, str]) -> str:
    """The markdown table, with a line above saying what was measured where."""
    figures = [
        (f"inference time ({without_row['prompts']} prompts)", "inference_s", "s"),
        ("inference peak memory", "inference_peak_mb", "MB"),
        (f"fine-tuning time ({without_row['train_pairs']} pairs x {without_row['epochs']} epochs)", "finetune_s", "s"),
        ("fine-tuning peak memory", "finetune_peak_mb", "MB"),
        ("inference process memory (nvidia-smi)", "inference_process_mb", "MB"),
        ("fine-tuning process memory (nvidia-smi)", "finetune_process_mb", "MB"),
    ]
    lines = [
        f"{without_row['model']} on {without_row['device']} ({without_row['machine']}); "
        f"with Unsloth: {with_row['date']}, without: {without_row['date']}; "
        f"peak memory is {without_row['peak_memory_kind']}",
        "",
        f"| | with Unsloth{with_row['unsloth'].removeprefix('with')} | without Unsloth | saving |",
        "|---|---:|---:|---:|",
    ]
    for label, column, unit in figures:
        if not with_row[column] or not without_row[column]:
            continue  # nvidia-smi figures exist on a GPU only
        with_value, without_value = float(with_row[column]), float(without_row[column])
        shown = (lambda value: f"{value:,.1f} s") if unit == "s" else (lambda value: f"{value:,.0f} MB")
        lines.append(f"| {label} | {shown(with_value)} | {shown(without_value)} | {saving(with_value, without_value)} |")
    return "\n".join(lines)


def main() -> int:
    args = build_parser().parse_args()
    if not args.results.is_file():
        raise UserError(f"{args.results}: no results file; run test_without_unsloth.py and test_with_unsloth.py first")
    rows = read_results(args.results)
    pair = latest_pair(rows, args.model)
    if pair is None:
        with_rows = [row for row in rows if row["unsloth"] in WITH_SIDES and args.model in (None, row["model"])]
        if not with_rows:
            why = " (no with-Unsloth run recorded)"
        elif with_rows[-1]["status"] != STATUS_OK:
            why = f" (the latest with-Unsloth run says: {with_rows[-1]['status']})"
        else:
            why = ""
        raise UserError(f"{args.results}: no pair of successful with- and without-Unsloth runs of the same model "
                        f"on the same device with the same counts{why}")
    print(table(*pair))
    return 0


if __name__ == "__main__":
    run_main(main)
