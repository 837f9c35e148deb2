"""Fit the memory-relevance model (retrieval_model.json) on labelled pairs; choose the threshold on cases.

    python llm/memory/train_retrieval.py                                  # every row: the committed model
    python llm/memory/train_retrieval.py --rows 0:640 --case-rows 0:216 --out /tmp/m.json  # honest check

The features (retrieval.FEATURES, computed from Kiwi's analysis) of each pair of relevance_pairs.csv go into a
multinomial logistic regression over the grades 0, 0.5 and 1 (L2-regularised, plain numpy); its expected grade
is the score. The threshold is the one with the best top-1 accuracy on retrieval_eval.csv's cases. With
--rows / --case-rows it fits on those rows only and reports the rows left out, which it never saw.
"""

import json
import math
import sys
from datetime import date
from pathlib import Path

try:
    from llm.common.cli import ArgumentParser, UserError, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
import numpy as np  # noqa: E402 (after the line that explains a missing virtualenv)

from llm.memory import morphemes
from llm.memory.evaluate_retrieval import EVAL_CSV, _row_slice, read_cases, read_pairs
from llm.memory.retrieval import FEATURES, MODEL_JSON, features, memory_key_value, predict

PAIRS_CSV = Path(__file__).with_name("relevance_pairs.csv")
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
    rows = [features(*memory_key_value(tag), prompt) for tag, prompt, _ in pairs]
    return np.array(rows), np.array([grade for _, _, grade in pairs])


def best_picks(cases, model: dict) -> list[tuple[str | None, float]]:
    """Per case: the best tag by the model and its score."""
    picks = []
    for prompt, tags, _ in cases:
        scores = predict(np.array([features(*memory_key_value(tag), prompt) for tag in tags]), model)
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


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=PAIRS_CSV, metavar="FILE", help="default: %(default)s")
    parser.add_argument("--rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="fit on these pair rows only and report the others (default: all)")
    parser.add_argument("--eval", type=Path, default=EVAL_CSV, metavar="FILE", help="default: %(default)s")
    parser.add_argument("--case-rows", type=_row_slice, default=slice(None), metavar="START:END",
                        help="choose the threshold on these cases only and report the others (default: all)")
    parser.add_argument("--c", type=float, default=C, help="inverse L2 strength (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=MODEL_JSON, metavar="FILE", help="default: %(default)s")
    args = parser.parse_args()
    pairs, cases = read_pairs(args.pairs), read_cases(args.eval)
    fit_pairs = set(range(len(pairs))[args.rows])
    fit_cases = set(range(len(cases))[args.case_rows])
    if not fit_pairs or not fit_cases:
        raise UserError("--rows and --case-rows must each select at least one row")

    x, grades = pair_rows(pairs)
    print(f"Kiwi and its vectors loaded in {morphemes.load_seconds:.1f} s; {len(pairs)} pairs, {len(cases)} cases")
    inside = np.array([i in fit_pairs for i in range(len(pairs))])
    model = fit(x[inside], grades[inside], args.c)
    scores = predict(x, model)
    print(f"pairs fitted on ({inside.sum()}, rows {_span(args.rows, len(pairs))}): "
          f"{pair_report(scores[inside], grades[inside])}")
    if (~inside).any():
        print(f"pairs held out ({(~inside).sum()}): {pair_report(scores[~inside], grades[~inside])}")

    picks = best_picks(cases, model)
    tuning = [i for i in range(len(cases)) if i in fit_cases]
    held = [i for i in range(len(cases)) if i not in fit_cases]
    model["threshold"] = choose_threshold([cases[i] for i in tuning], [picks[i] for i in tuning])
    tuned_accuracy = accuracy([cases[i] for i in tuning], [picks[i] for i in tuning], model["threshold"])
    print(f"threshold {model['threshold']:.2f}: top-1 accuracy {tuned_accuracy:.3f} on the {len(tuning)} cases "
          f"it was chosen on (rows {_span(args.case_rows, len(cases))})")
    if held:
        held_accuracy = accuracy([cases[i] for i in held], [picks[i] for i in held], model["threshold"])
        print(f"cases held out ({len(held)}): top-1 accuracy {held_accuracy:.3f}")
    model["fitted_on"] = (f"{args.pairs.name} rows {_span(args.rows, len(pairs))}, threshold on "
                          f"{args.eval.name} rows {_span(args.case_rows, len(cases))}")
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
