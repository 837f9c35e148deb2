"""Fit the offline scorer (offline_model.json): a logistic model over the Kiwi features of labelled pairs, its
threshold chosen on held-out cases.

The features (offline_scorer.FEATURES) of every pair go into scikit-learn's LogisticRegression; a graded label
(0, 0.5, 1) is a soft target, given as two weighted rows (relevant with weight g, not with 1 - g). The threshold
comes from a grouped k-fold split BY MEMORY TAG (no memory on both sides, as a blind set's memories are new):
each case is scored by a model that never saw its memories, and the threshold is the one with the best top-1
accuracy that keeps the none recall at NONE_RECALL_TARGET in every case file. The blind sets take no part.
"""

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

from llm.common.cli import UserError
from llm.common.outputs import write_text_atomically
from llm.memory import morphemes
from llm.memory.offline_scorer import FEATURES, feature_rows, relevance_of_rows
from llm.common.tags import parse_memory_tag
from llm.memory.research.data import Case, Pair, case_fold, describe_rows, fold_of, read_cases, read_pairs
from llm.memory.research.metrics import NONE_RECALL_TARGET, case_metrics, choose_threshold, pair_metrics

C = 0.3  # inverse L2 strength (scikit-learn's C)
FOLDS = 5  # the grouped folds whose held-out picks choose the threshold


@dataclass(frozen=True)
class OfflineOptions:
    pair_files: list[Path]
    case_files: list[Path]
    rows: slice  # the pair rows to fit on; the others are reported as held out
    c: float
    check_folds: int  # > 0: report the grouped check with this many folds instead of FOLDS, write nothing
    out: Path


def fit(rows: np.ndarray, grades: np.ndarray, c: float = C) -> dict:
    """Logistic regression on standardised features; a grade is a soft target."""
    from sklearn.linear_model import LogisticRegression  # only training needs scikit-learn

    mean, scale = rows.mean(axis=0), rows.std(axis=0)
    scale[scale == 0] = 1.0
    x = (rows - mean) / scale
    weights = np.concatenate([grades, 1.0 - grades])
    keep = weights > 0
    model = LogisticRegression(C=c, max_iter=5000)
    model.fit(np.vstack([x, x])[keep], np.repeat([1, 0], len(x))[keep], sample_weight=weights[keep])
    return {"features": list(FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}


def _pick(tags: list[str], rows: np.ndarray, model: dict) -> tuple[str, float]:
    scores = relevance_of_rows(rows, model)
    best = int(np.argmax(scores))
    return tags[best], float(scores[best])


def held_out(pairs: list[Pair], x: np.ndarray, grades: np.ndarray, cases: list[Case], case_rows: list[np.ndarray],
             k: int, c: float) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Each pair's score and each case's pick by the model of the folds that do not hold its memory."""
    folds = np.array([fold_of(tag, k) for tag, _, _ in pairs])
    scores, picks = np.zeros(len(pairs)), [("", 0.0)] * len(cases)
    for fold in range(k):
        model = fit(x[folds != fold], grades[folds != fold], c)
        scores[folds == fold] = relevance_of_rows(x[folds == fold], model)
        for i, case in enumerate(cases):
            if case_fold(case, k) == fold:
                picks[i] = _pick(case[1], case_rows[i], model)
    return scores, picks


def _read_all(paths: list[Path], read) -> tuple[list, list[tuple[Path, range]]]:
    rows, files = [], []
    for path in paths:
        found = read(path)
        files.append((path, range(len(rows), len(rows) + len(found))))
        rows += found
    return rows, files


def _pairs_line(scores: np.ndarray, grades: np.ndarray) -> str:
    m = pair_metrics(scores.tolist(), [("", "", g) for g in grades])
    return f"MSE {m['mse']:.3f}  MAE {m['mae']:.3f}  corr {m['corr']:.3f}"


def _cases_line(cases: list[Case], picks, threshold: float) -> str:
    m = case_metrics(cases, picks, threshold)
    return (f"top-1 {m['accuracy']:.3f}  none precision {m['none_precision']:.3f} ({m['both_none']}/{m['said_none']})"
            f"  none recall {m['none_recall']:.3f} ({m['both_none']}/{m['really_none']})")


def _report(k, pair_files, inside, scores, grades, case_files, per_file, threshold) -> None:
    print(f"grouped {k}-fold by memory tag, each row scored by a model that never saw its memory:")
    positions = np.cumsum(inside) - 1  # a fitted pair's index among the fitted ones
    for path, span in pair_files:
        chosen = [i for i in span if inside[i]]
        if chosen:
            print(f"  pairs {path.name} ({len(chosen)}): {_pairs_line(scores[positions[chosen]], grades[chosen])}")
    for (path, _), (file_cases, file_picks) in zip(case_files, per_file):
        print(f"  cases {path.name} ({len(file_cases)}) at {threshold:.2f}: "
              f"{_cases_line(file_cases, file_picks, threshold)}")


def train(options: OfflineOptions) -> int:
    pairs, pair_files = _read_all(options.pair_files, read_pairs)
    cases, case_files = _read_all(options.case_files, read_cases)
    inside = np.zeros(len(pairs), dtype=bool)
    inside[options.rows] = True
    if not inside.any():
        raise UserError("--rows selects none of the pairs")
    x = np.vstack([feature_rows([parse_memory_tag(tag)], message) for tag, message, _ in pairs])
    grades = np.array([grade for _, _, grade in pairs])
    case_rows = [feature_rows([parse_memory_tag(tag) for tag in tags], message) for message, tags, _ in cases]
    print(f"Kiwi and its vectors loaded in {morphemes.load_seconds:.1f} s; {len(pairs)} pairs, {len(cases)} cases")

    k = options.check_folds or FOLDS
    fitted = [pairs[i] for i in np.flatnonzero(inside)]
    scores, picks = held_out(fitted, x[inside], grades[inside], cases, case_rows, k, options.c)
    per_file = [([cases[i] for i in span], [picks[i] for i in span]) for _, span in case_files]
    model = fit(x[inside], grades[inside], options.c)
    # The model that ships must be as quiet as the held-out ones: fitted on more rows, it is bolder.
    shipped = [([cases[i] for i in span], [_pick(cases[i][1], case_rows[i], model) for i in span])
               for _, span in case_files]
    threshold = choose_threshold(per_file, also_quiet_on=shipped)
    _report(k, pair_files, inside, scores, grades, case_files, per_file, threshold)
    print(f"threshold {threshold:.2f}: the best held-out top-1 that keeps none recall >= {NONE_RECALL_TARGET} in "
          f"each case file,\n  held out and for the model fitted on every row")
    if options.check_folds:
        return 0
    if (~inside).any():
        print(f"pairs held out by --rows ({(~inside).sum()}): "
              f"{_pairs_line(relevance_of_rows(x[~inside], model), grades[~inside])}")
    sizes = [len(span) for _, span in pair_files]
    model |= {"threshold": threshold,
              "fitted_on": f"{describe_rows(options.pair_files, sizes, options.rows)}, threshold on "
                           f"{describe_rows(options.case_files, [len(span) for _, span in case_files])}",
              "c": options.c, "trained": date.today().isoformat(), **_versions()}
    write_text_atomically(options.out, to_json(model))
    print(f"wrote {options.out}")
    return 0


def to_json(model: dict) -> str:
    """One line per entry, numbers to 8 decimals: small, and a refit shows as a readable diff."""
    def rounded(value):
        if isinstance(value, float):
            return round(value, 8)
        return [rounded(v) for v in value] if isinstance(value, list) else value
    lines = [f"  {json.dumps(name)}: {json.dumps(rounded(value), ensure_ascii=False)}" for name, value in model.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _versions() -> dict[str, str]:
    import kiwipiepy
    import sklearn
    return {"kiwipiepy": kiwipiepy.__version__, "scikit-learn": sklearn.__version__}
