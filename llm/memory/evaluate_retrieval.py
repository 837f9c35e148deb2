"""Measure memory retrieval, OLD scorer (cue lists) and NEW (Kiwi meaning, fitted) side by side.

    python llm/memory/evaluate_retrieval.py                 # retrieval_eval.csv beside this file
    python llm/memory/evaluate_retrieval.py --pairs llm/memory/relevance_pairs.csv
    python llm/memory/evaluate_retrieval.py --eval cases.csv --pairs pairs.csv --rows 640:
    python llm/memory/evaluate_retrieval.py --eval llm/memory/dev/retrieval_cases_dev.csv \
        --pairs llm/memory/dev/relevance_pairs_dev.csv       # the dev set (the committed model was fitted on it)

Cases (--eval): top-1 accuracy and precision/recall of the "none" answers; pairs (--pairs): MSE, MAE and
correlation against the graded relevance. Both CSVs were written in three blocks: development (the first 120
cases / 368 pairs, seen while the cue lists were written), held-out 1 (the next 96 / 272, written after a first
version was frozen, then used to revise it) and held-out 2 (the last 96 / 272, written after the cue scorer was
frozen again): `--rows 216:` (cases) or `--rows 640:` (pairs) measures only that last block. The NEW scorer's
model says which rows it was fitted on (printed below the table): rows it was fitted on are not a test of it.
"""

import argparse
import csv
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import sys

try:
    from llm.common.cli import ArgumentParser, UserError, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.memory import cue_scorer, retrieval
from llm.common.tags import parse_memory_tag
from llm.memory.retrieval import most_relevant, relevance

EVAL_CSV = Path(__file__).with_name("retrieval_eval.csv")
EVAL_COLUMNS = ("user_prompt", "memories", "relevant")
PAIR_COLUMNS = ("memory_0", "user_prompt_1", "similarity_score")
MEMORY_SEPARATOR = "|"  # between the stored tags of one case
NONE_LABEL = "none"  # the "relevant" of a case where no stored memory is relevant


class Scorer(NamedTuple):
    name: str
    relevance: Callable[[str, str], float]
    most_relevant: Callable[[list[str], str], tuple[str, float] | None]
    threshold: float


OLD = Scorer("OLD", cue_scorer.relevance, cue_scorer.most_relevant, cue_scorer.RELEVANCE_THRESHOLD)


def new_scorer() -> Scorer:
    """The chat's scorer with the model in use now (its threshold comes with the model)."""
    return Scorer("NEW", relevance, most_relevant, retrieval.RELEVANCE_THRESHOLD)


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
        if any(parse_memory_tag(tag) is None for tag in tags):
            raise DataError(f"{path}: line {line}: memories must be '[key: value]' tags separated by '|'")
        if relevant != NONE_LABEL and relevant not in tags:
            raise DataError(f"{path}: line {line}: relevant must be one of the memories or '{NONE_LABEL}'")
        cases.append((row["user_prompt"], tags, None if relevant == NONE_LABEL else relevant))
    return cases


def read_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(memory tag, user prompt, graded relevance) per row of a pairs CSV."""
    pairs = []
    for line, row in enumerate(read_rows(path, PAIR_COLUMNS), start=2):
        if parse_memory_tag(row["memory_0"]) is None:
            raise DataError(f"{path}: line {line}: memory_0 is not a '[key: value]' tag")
        try:
            grade = float(row["similarity_score"])
        except ValueError:
            grade = math.nan
        if not 0.0 <= grade <= 1.0:
            raise DataError(f"{path}: line {line}: similarity_score must be a number in [0, 1]")
        pairs.append((row["memory_0"], row["user_prompt_1"], grade))
    return pairs


def retrieval_metrics(cases: list[tuple[str, list[str], str | None]], pick=most_relevant) -> dict[str, float]:
    """Top-1 accuracy (a "none" answer is right on a none-case) and precision/recall of the "none" answers."""
    picks = [pick(tags, prompt) for prompt, tags, _ in cases]
    return answer_metrics([None if pick is None else pick[0] for pick in picks], [relevant for _, _, relevant in cases])


def answer_metrics(predicted: list[str | None], gold: list[str | None]) -> dict[str, float]:
    """Top-1 accuracy and the "none" answers' precision/recall of the tags answered (None: no memory fits)."""
    said_none = sum(p is None for p in predicted)
    really_none = sum(g is None for g in gold)
    both_none = sum(p is None and g is None for p, g in zip(predicted, gold))
    return {
        "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
        "none_precision": both_none / said_none if said_none else math.nan,
        "none_recall": both_none / really_none if really_none else math.nan,
        "said_none": said_none, "really_none": really_none, "both_none": both_none,
    }


def pair_metrics(pairs: list[tuple[str, str, float]], score=relevance) -> dict[str, float]:
    """MSE, MAE and Pearson correlation of the relevance score against the graded relevance."""
    scores = [score(tag, prompt) for tag, prompt, _ in pairs]
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


def _select(rows: list, span: slice, path: Path) -> list:
    chosen = rows[span]
    if not chosen:
        raise DataError(f"{path}: --rows selects none of its rows")
    return chosen


def _rows_note(span: slice, total: int) -> str:
    start, stop, _ = span.indices(total)
    return "" if (start, stop) == (0, total) else f", rows {start}:{stop}"


def _fitted_on() -> str:
    fitted = (retrieval._MODEL or {}).get("fitted_on")
    return f"NEW was fitted on {fitted}" if fitted else "NEW: no record of what it was fitted on"


def report_pairs(path: Path, span: slice, scorers: tuple[Scorer, ...]) -> None:
    pairs = read_pairs(path)
    rows = _select(pairs, span, path)
    metrics = [pair_metrics(rows, scorer.relevance) for scorer in scorers]
    print(f"{path}: {len(rows)} pairs{_rows_note(span, len(pairs))}")
    print(f"{'':16}" + "".join(f"{scorer.name:>8}" for scorer in scorers))
    for name, label in (("mse", "MSE"), ("mae", "MAE"), ("corr", "corr")):
        print(f"{label:16}" + "".join(f"{m[name]:8.3f}" for m in metrics))


def report_cases(path: Path, span: slice, scorers: tuple[Scorer, ...]) -> None:
    cases = read_cases(path)
    rows = _select(cases, span, path)
    metrics = [retrieval_metrics(rows, scorer.most_relevant) for scorer in scorers]
    print(f"{path}: {len(rows)} cases{_rows_note(span, len(cases))}, {metrics[0]['really_none']} of them none")
    def column(number: float, count: str = "") -> str:
        return f"{number:8.3f} {count:10}"

    lines = [f"{'':16}" + "".join(f"{scorer.name:>8} {'':10}" for scorer in scorers),
             f"{'threshold':16}" + "".join(column(scorer.threshold) for scorer in scorers),
             f"{'top-1 accuracy':16}" + "".join(column(m["accuracy"]) for m in metrics),
             f"{'none precision':16}" + "".join(
                 column(m["none_precision"], f"({m['both_none']}/{m['said_none']})") for m in metrics),
             f"{'none recall':16}" + "".join(
                 column(m["none_recall"], f"({m['both_none']}/{m['really_none']})") for m in metrics)]
    print("\n".join(line.rstrip() for line in lines))


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, metavar="FILE",
                        help="retrieval cases: user_prompt, memories ('|'-separated tags), relevant (tag or "
                             f"'{NONE_LABEL}') (default when --pairs is not given: {EVAL_CSV})")
    parser.add_argument("--pairs", type=Path, metavar="FILE",
                        help="scored pairs: memory_0, user_prompt_1, similarity_score in [0, 1]")
    parser.add_argument("--rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="only these data rows of each file, counted from 0 like a Python slice (e.g. 216:)")
    parser.add_argument("--model", type=Path, default=retrieval.MODEL_JSON, metavar="FILE",
                        help="the NEW scorer's fitted model, e.g. one train_retrieval.py --out wrote "
                             "(default: %(default)s)")
    args = parser.parse_args()
    try:
        retrieval.use_model(args.model)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{args.model}: not a model written by train_retrieval.py "
                        f"({getattr(error, 'strerror', None) or error})") from None
    scorers = (OLD, new_scorer())
    cases_path = args.eval if args.eval is not None or args.pairs is not None else EVAL_CSV
    # read (and check) every file before the slow scoring, so a bad file fails at once
    for path, read in ((cases_path, read_cases), (args.pairs, read_pairs)):
        if path is not None:
            _select(read(path), args.rows, path)
    if cases_path is not None:
        report_cases(cases_path, args.rows, scorers)
    if args.pairs is not None:
        if cases_path is not None:
            print()
        report_pairs(args.pairs, args.rows, scorers)
    print(_fitted_on())
    return 0


if __name__ == "__main__":
    run_main(main)
