"""Measure memory retrieval: top-1 accuracy on retrieval_eval.csv, or MSE/MAE/correlation on a pairs CSV.

    python llm/memory/evaluate_retrieval.py                 # retrieval_eval.csv beside this file
    python llm/memory/evaluate_retrieval.py --pairs llm/memory/relevance_pairs.csv

Both CSVs were written in three blocks: development (the first 120 cases / 368 pairs, seen while the cue lists
were written), held-out 1 (the next 96 / 272, written after a first version was frozen, then used to revise it)
and held-out 2 (the last 96 / 272, written after retrieval.py was frozen again): `--rows 216:` (cases) or
`--rows 640:` (pairs) measures only that last, honest block.
"""

import argparse
import csv
import math
import statistics
from pathlib import Path

from llm.common.cli import ArgumentParser, UserError, run_main
from llm.memory.retrieval import RELEVANCE_THRESHOLD, memory_key_value, most_relevant, relevance

EVAL_CSV = Path(__file__).with_name("retrieval_eval.csv")
EVAL_COLUMNS = ("user_prompt", "memories", "relevant")
PAIR_COLUMNS = ("memory_0", "user_prompt_1", "similarity_score")
MEMORY_SEPARATOR = "|"  # between the stored tags of one case
NONE_LABEL = "none"  # the "relevant" of a case where no stored memory is relevant


class DataError(UserError):
    """A CSV that cannot be evaluated; the message names the file and the problem."""


def read_rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV that has at least these columns, none of them empty."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    for line, row in enumerate(rows, start=2):
        empty = [c for c in columns if not (row[c] or "").strip()]
        if empty:
            raise DataError(f"{path}: line {line}: empty {', '.join(empty)}")
    return rows


def read_cases(path: Path) -> list[tuple[str, list[str], str | None]]:
    """(user prompt, stored tags, the relevant tag or None) per row of a retrieval CSV."""
    cases = []
    for line, row in enumerate(read_rows(path, EVAL_COLUMNS), start=2):
        tags = [tag.strip() for tag in row["memories"].split(MEMORY_SEPARATOR)]
        relevant = row["relevant"].strip()
        if any(memory_key_value(tag) is None for tag in tags):
            raise DataError(f"{path}: line {line}: memories must be '[key: value]' tags separated by '|'")
        if relevant != NONE_LABEL and relevant not in tags:
            raise DataError(f"{path}: line {line}: relevant must be one of the memories or '{NONE_LABEL}'")
        cases.append((row["user_prompt"], tags, None if relevant == NONE_LABEL else relevant))
    return cases


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(memory tag, user prompt, graded relevance) per row of a pairs CSV."""
    pairs = []
    for line, row in enumerate(read_rows(path, PAIR_COLUMNS), start=2):
        if memory_key_value(row["memory_0"]) is None:
            raise DataError(f"{path}: line {line}: memory_0 is not a '[key: value]' tag")
        try:
            grade = float(row["similarity_score"])
        except ValueError:
            grade = math.nan
        if not 0.0 <= grade <= 1.0:
            raise DataError(f"{path}: line {line}: similarity_score must be a number in [0, 1]")
        pairs.append((row["memory_0"], row["user_prompt_1"], grade))
    return pairs


def retrieval_metrics(cases: list[tuple[str, list[str], str | None]]) -> dict[str, float]:
    """Top-1 accuracy (a "none" answer is right on a none-case) and precision/recall of the "none" answers."""
    picks = [most_relevant(tags, prompt) for prompt, tags, _ in cases]
    predicted = [None if pick is None else pick[0] for pick in picks]
    gold = [relevant for _, _, relevant in cases]
    said_none = sum(p is None for p in predicted)
    really_none = sum(g is None for g in gold)
    both_none = sum(p is None and g is None for p, g in zip(predicted, gold))
    return {
        "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(cases),
        "none_precision": both_none / said_none if said_none else math.nan,
        "none_recall": both_none / really_none if really_none else math.nan,
        "said_none": said_none, "really_none": really_none, "both_none": both_none,
    }


def pair_metrics(pairs: list[tuple[str, str, float]]) -> dict[str, float]:
    """MSE, MAE and Pearson correlation of the relevance score against the graded relevance."""
    scores = [relevance(tag, prompt) for tag, prompt, _ in pairs]
    grades = [grade for _, _, grade in pairs]
    errors = [s - g for s, g in zip(scores, grades)]
    try:
        corr = statistics.correlation(scores, grades)
    except statistics.StatisticsError:  # fewer than two pairs, or a constant column
        corr = math.nan
    return {"mse": statistics.fmean(e * e for e in errors), "mae": statistics.fmean(abs(e) for e in errors),
            "corr": corr}


def _row_slice(text: str) -> slice:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return slice(int(start) if start else None, int(end) if end else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, got {text!r}") from None


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=EVAL_CSV, metavar="FILE",
                        help="retrieval cases: user_prompt, memories ('|'-separated tags), relevant (tag or "
                             f"'{NONE_LABEL}') (default: %(default)s)")
    parser.add_argument("--pairs", type=Path, metavar="FILE",
                        help="instead, score pairs: memory_0, user_prompt_1, similarity_score in [0, 1]")
    parser.add_argument("--rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="only these data rows, counted from 0 like a Python slice (e.g. 216:)")
    args = parser.parse_args()
    path = args.pairs if args.pairs is not None else args.eval
    rows = (read_pairs if args.pairs is not None else read_cases)(path)[args.rows]
    if not rows:
        raise DataError(f"{path}: --rows selects none of its rows")
    if args.pairs is not None:
        m = pair_metrics(rows)
        print(f"{path}: {len(rows)} pairs")
        print(f"MSE {m['mse']:.3f}")
        print(f"MAE {m['mae']:.3f} corr {m['corr']:.3f}")
    else:
        m = retrieval_metrics(rows)
        print(f"{path}: {len(rows)} cases ({m['really_none']} none), threshold {RELEVANCE_THRESHOLD}")
        print(f"top-1 accuracy {m['accuracy']:.3f}")
        print(f"none precision {m['none_precision']:.3f} ({m['both_none']}/{m['said_none']} answered none)"
              f"  none recall {m['none_recall']:.3f} ({m['both_none']}/{m['really_none']} none-cases)")
    return 0


if __name__ == "__main__":
    run_main(main)
