"""Fit the memory-relevance model (retrieval_model.json) on labelled pairs; choose the threshold on cases.

    python llm/memory/train_retrieval.py                 # every non-blind row: the committed model
    python llm/memory/train_retrieval.py --cv 5          # grouped 5-fold check by memory tag (writes nothing)
    python llm/memory/train_retrieval.py --pairs llm/memory/relevance_pairs.csv --rows 0:640 \
        --eval llm/memory/retrieval_eval.csv --case-rows 0:216 --out /tmp/m.json     # a row-range check

The features (retrieval.FEATURES, computed from Kiwi's analysis) of each pair of relevance_pairs.csv go into a
multinomial logistic regression over the grades 0, 0.5 and 1 (L2-regularised, plain numpy); its expected grade
is the score. By default it fits on relevance_pairs.csv and dev/relevance_pairs_dev.csv and picks the threshold
with the best top-1 accuracy on retrieval_eval.csv and dev/retrieval_cases_dev.csv (never on blind/). With
--rows / --case-rows (counted over the files in the order given) it fits on those rows only and reports the rows
left out. With --cv K it splits BY MEMORY TAG into K folds (no tag on both sides, as a blind set's memories are
new), scores each fold with a model fitted on the others, picks each fold's threshold on the other folds' cases,
and reports the held-out figures per file.
"""

import json
import math
import sys
import zlib
from datetime import date
from pathlib import Path

try:
    from llm.common.cli import ArgumentParser, UserError, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
import numpy as np  # noqa: E402 (after the line that explains a missing virtualenv)

from llm.memory import morphemes
from llm.memory.evaluate_retrieval import EVAL_CSV, _row_slice, answer_metrics, read_cases, read_pairs
from llm.common.tags import parse_memory_tag
from llm.memory.retrieval import FEATURES, MODEL_JSON, features, predict

PAIRS_CSV = Path(__file__).with_name("relevance_pairs.csv")
DEV_PAIRS_CSV = Path(__file__).parent / "dev" / "relevance_pairs_dev.csv"
DEV_CASES_CSV = Path(__file__).parent / "dev" / "retrieval_cases_dev.csv"
GRADES = (0.0, 0.5, 1.0)
C = 0.3  # inverse L2 strength, as scikit-learn's LogisticRegression counts it
THRESHOLDS = np.round(np.arange(0.20, 0.901, 0.01), 2)


def soft_targets(grades: np.ndarray) -> np.ndarray:
    """Each grade as weights over GRADES (0.25 -> half 0, half 0.5)."""
    targets = np.zeros((len(grades), len(GRADES)))
    for row, grade in enumerate(grades):
        upper = min(int(np.searchsorted(GRADES, grade)), len(GRADES) - 1)
        if GRADES[upper] == grade or upper == 0:
            targets[row, upper] = 1.0
        else:
            share = (grade - GRADES[upper - 1]) / (GRADES[upper] - GRADES[upper - 1])
            targets[row, upper - 1], targets[row, upper] = 1 - share, share
    return targets


def fit(rows: np.ndarray, grades: np.ndarray, c: float = C, steps: int = 4000) -> dict:
    """Multinomial logistic regression on standardised features, by Nesterov gradient descent."""
    mean, scale = rows.mean(axis=0), rows.std(axis=0)
    scale[scale == 0] = 1.0
    x = (rows - mean) / scale
    targets = soft_targets(grades)
    n, k = len(x), len(GRADES)
    weights, velocity = np.zeros((x.shape[1] + 1, k)), np.zeros((x.shape[1] + 1, k))
    x1 = np.hstack([x, np.ones((n, 1))])
    l2 = np.ones_like(weights) / (c * n)
    l2[-1] = 0.0  # the intercept is not penalised
    step = 1.0 / (0.5 * np.linalg.eigvalsh(x1.T @ x1 / n).max() + l2.max())
    for _ in range(steps):
        ahead = weights + 0.9 * velocity
        logits = x1 @ ahead
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        gradient = x1.T @ (p - targets) / n + l2 * ahead
        velocity = 0.9 * velocity - step * gradient
        weights = weights + velocity
    return {"features": list(FEATURES), "grades": list(GRADES), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": weights[:-1].T.tolist(), "intercept": weights[-1].tolist()}


def pair_rows(pairs: list[tuple[str, str, float]]) -> tuple[np.ndarray, np.ndarray]:
    rows = [features(*parse_memory_tag(tag), prompt) for tag, prompt, _ in pairs]
    return np.array(rows), np.array([grade for _, _, grade in pairs])


def best_picks(cases, model: dict) -> list[tuple[str | None, float]]:
    """Per case: the best tag by the model and its score."""
    picks = []
    for prompt, tags, _ in cases:
        scores = predict(np.array([features(*parse_memory_tag(tag), prompt) for tag in tags]), model)
        best = int(np.argmax(scores))
        picks.append((tags[best], float(scores[best])))
    return picks


def accuracy(cases, picks, threshold: float) -> float:
    return float(np.mean([(tag if score >= threshold else None) == relevant
                          for (_, _, relevant), (tag, score) in zip(cases, picks)]))


def choose_threshold(cases, picks) -> float:
    """The middle of the thresholds with the best top-1 accuracy."""
    accuracies = np.array([accuracy(cases, picks, t) for t in THRESHOLDS])
    best = THRESHOLDS[accuracies >= accuracies.max() - 1e-12]
    return float(best[len(best) // 2])


def pair_report(scores: np.ndarray, grades: np.ndarray) -> str:
    errors = scores - grades
    corr = float(np.corrcoef(scores, grades)[0, 1]) if len(grades) > 1 else math.nan
    return f"MSE {np.mean(errors ** 2):.3f}  MAE {np.mean(np.abs(errors)):.3f}  corr {corr:.3f}"


def _span(span: slice, total: int) -> str:
    start, stop, _ = span.indices(total)
    return f"{start}:{stop}"


def _files_span(paths: list[Path], sizes: list[int], span: slice) -> str:
    """"a.csv rows 0:10 + b.csv rows 0:5": the rows of each file that a slice of their concatenation selects."""
    start, stop, _ = span.indices(sum(sizes))
    parts, offset = [], 0
    for path, size in zip(paths, sizes):
        low, high = min(max(start - offset, 0), size), min(max(stop - offset, 0), size)
        if high > low or len(paths) == 1:
            parts.append(f"{path.name} rows {low}:{high}")
        offset += size
    return " + ".join(parts)


def fold_of(tag: str, k: int) -> int:
    """The fold of a memory tag: every row of one memory lands in the same fold."""
    return zlib.crc32(tag.encode("utf-8")) % k


def case_fold(case, k: int) -> int:
    """A case goes with its relevant memory; a none case by its prompt."""
    prompt, _, relevant = case
    return fold_of(relevant, k) if relevant is not None else zlib.crc32(prompt.encode("utf-8")) % k


def none_report(cases, picks, threshold_of) -> str:
    """Top-1 accuracy and the "none" answers' precision/recall; threshold_of(i) is case i's threshold."""
    m = answer_metrics([tag if score >= threshold_of(i) else None for i, (tag, score) in enumerate(picks)],
                       [relevant for _, _, relevant in cases])
    return (f"top-1 {m['accuracy']:.3f}  none precision {m['none_precision']:.3f} ({m['both_none']}/{m['said_none']})"
            f"  none recall {m['none_recall']:.3f} ({m['both_none']}/{m['really_none']})")


def cross_validate(pair_files, pairs, x, grades, case_files, cases, k: int, c: float) -> None:
    """Grouped k-fold by memory tag: held-out pair figures and case figures per file."""
    folds = np.array([fold_of(tag, k) for tag, _, _ in pairs])
    scores = np.zeros(len(pairs))
    picks: list = [None] * len(cases)
    for fold in range(k):
        model = fit(x[folds != fold], grades[folds != fold], c)
        scores[folds == fold] = predict(x[folds == fold], model)
        held = [i for i, case in enumerate(cases) if case_fold(case, k) == fold]
        for i, pick in zip(held, best_picks([cases[i] for i in held], model)):
            picks[i] = pick
    case_folds = [case_fold(case, k) for case in cases]
    thresholds = [choose_threshold([cs for cs, f in zip(cases, case_folds) if f != fold],
                                   [p for p, f in zip(picks, case_folds) if f != fold]) for fold in range(k)]
    print(f"grouped {k}-fold by memory tag; thresholds per fold {' '.join(f'{t:.2f}' for t in thresholds)}")
    for name, rows in pair_files:
        print(f"pairs held out, {name} ({len(rows)}): {pair_report(scores[rows], grades[rows])}")
    for name, rows in case_files:
        print(f"cases held out, {name} ({len(rows)}): "
              f"{none_report([cases[i] for i in rows], [picks[i] for i in rows], lambda j: thresholds[case_folds[rows[j]]])}")


def _read_all(paths: list[Path], read) -> tuple[list, list[tuple[str, list[int]]]]:
    rows, files = [], []
    for path in paths:
        found = read(path)
        files.append((path.name, list(range(len(rows), len(rows) + len(found)))))
        rows += found
    return rows, files


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, nargs="+", default=[PAIRS_CSV, DEV_PAIRS_CSV], metavar="FILE",
                        help="labelled pairs (default: %(default)s)")
    parser.add_argument("--rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="fit on these pair rows only and report the others (default: all)")
    parser.add_argument("--eval", type=Path, nargs="+", default=[EVAL_CSV, DEV_CASES_CSV], metavar="FILE",
                        help="retrieval cases for the threshold (default: %(default)s)")
    parser.add_argument("--case-rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="choose the threshold on these cases only and report the others (default: all)")
    parser.add_argument("--c", type=float, default=C, help="inverse L2 strength (default: %(default)s)")
    parser.add_argument("--cv", type=int, default=0, metavar="K",
                        help="only report a grouped K-fold check by memory tag; write nothing")
    parser.add_argument("--out", type=Path, default=MODEL_JSON, metavar="FILE", help="default: %(default)s")
    args = parser.parse_args()
    pairs, pair_files = _read_all(args.pairs, read_pairs)
    cases, case_files = _read_all(args.eval, read_cases)
    fit_pairs = set(range(len(pairs))[args.rows])
    fit_cases = set(range(len(cases))[args.case_rows])
    if not fit_pairs or not fit_cases:
        raise UserError("--rows and --case-rows must each select at least one row")
    if args.cv == 1 or args.cv < 0:
        raise UserError("--cv needs at least 2 folds")

    x, grades = pair_rows(pairs)
    print(f"Kiwi and its vectors loaded in {morphemes.load_seconds:.1f} s; {len(pairs)} pairs, {len(cases)} cases")
    if args.cv:
        cross_validate(pair_files, pairs, x, grades, case_files, cases, args.cv, args.c)
        return 0
    inside = np.array([i in fit_pairs for i in range(len(pairs))])
    model = fit(x[inside], grades[inside], args.c)
    scores = predict(x, model)
    pair_sizes, case_sizes = [len(r) for _, r in pair_files], [len(r) for _, r in case_files]
    pairs_span = _files_span(args.pairs, pair_sizes, args.rows)
    cases_span = _files_span(args.eval, case_sizes, args.case_rows)
    print(f"pairs fitted on ({inside.sum()}, {pairs_span}): {pair_report(scores[inside], grades[inside])}")
    if (~inside).any():
        print(f"pairs held out ({(~inside).sum()}): {pair_report(scores[~inside], grades[~inside])}")

    picks = best_picks(cases, model)
    tuning = [i for i in range(len(cases)) if i in fit_cases]
    held = [i for i in range(len(cases)) if i not in fit_cases]
    model["threshold"] = choose_threshold([cases[i] for i in tuning], [picks[i] for i in tuning])
    tuned_accuracy = accuracy([cases[i] for i in tuning], [picks[i] for i in tuning], model["threshold"])
    print(f"threshold {model['threshold']:.2f}: top-1 accuracy {tuned_accuracy:.3f} on the {len(tuning)} cases "
          f"it was chosen on ({cases_span})")
    if held:
        held_accuracy = accuracy([cases[i] for i in held], [picks[i] for i in held], model["threshold"])
        print(f"cases held out ({len(held)}): top-1 accuracy {held_accuracy:.3f}")
    model["fitted_on"] = f"{pairs_span}, threshold on {cases_span}"
    model["kiwipiepy"] = _kiwi_version()
    model["trained"] = date.today().isoformat()
    model["c"] = args.c
    args.out.write_text(to_json(model), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def to_json(model: dict) -> str:
    """One line per entry, numbers to 8 decimals: small, and a refit shows as a readable diff."""
    def rounded(value):
        if isinstance(value, float):
            return round(value, 8)
        return [rounded(v) for v in value] if isinstance(value, list) else value
    lines = [f"  {json.dumps(name)}: {json.dumps(rounded(value), ensure_ascii=False)}" for name, value in model.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _kiwi_version() -> str:
    import kiwipiepy
    return kiwipiepy.__version__


if __name__ == "__main__":
    run_main(main)
