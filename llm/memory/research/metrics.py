"""How a scorer is judged: on cases, top-1 accuracy and the "none" answers; on pairs, error and correlation.
And the one rule every scorer's threshold is chosen by."""

import math
import statistics

import numpy as np

from llm.memory.relevance import Scorer
from llm.memory.research.data import Case, Pair

# A wrong memory put in front of a message is what a user notices first, so a threshold must keep at least
# this share of the messages that need no memory free of one, in every development case file.
NONE_RECALL_TARGET = 0.9
THRESHOLDS = np.round(np.arange(0.05, 0.991, 0.01), 2)

Pick = tuple[str, float]  # a case's best tag and its score, before the threshold


def best_picks(scorer: Scorer, cases: list[Case]) -> list[Pick]:
    """Per case: the tag the scorer ranks first and its score (ties: the earlier tag)."""
    picks = []
    for message, tags, _ in cases:
        scores = scorer.scores(tags, message)
        best = int(np.argmax(scores))
        picks.append((tags[best], float(scores[best])))
    return picks


def answer_metrics(predicted: list[str | None], gold: list[str | None]) -> dict[str, float]:
    """Top-1 accuracy (a "none" answer is right on a none case) and the "none" answers' precision/recall."""
    said_none = sum(p is None for p in predicted)
    really_none = sum(g is None for g in gold)
    both_none = sum(p is None and g is None for p, g in zip(predicted, gold))
    return {
        "accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold),
        "none_precision": both_none / said_none if said_none else math.nan,
        "none_recall": both_none / really_none if really_none else math.nan,
        "said_none": said_none, "really_none": really_none, "both_none": both_none,
    }


def case_metrics(cases: list[Case], picks: list[Pick], threshold: float) -> dict[str, float]:
    return answer_metrics([tag if score >= threshold else None for tag, score in picks],
                          [relevant for _, _, relevant in cases])


def pair_metrics(scores: list[float], pairs: list[Pair]) -> dict[str, float]:
    """MSE, MAE and Pearson correlation of the scores against the graded relevance."""
    grades = [grade for _, _, grade in pairs]
    errors = [s - g for s, g in zip(scores, grades)]
    try:
        corr = statistics.correlation(scores, grades)
    except statistics.StatisticsError:  # fewer than two pairs, or a constant column
        corr = math.nan
    return {"mse": statistics.fmean(e * e for e in errors), "mae": statistics.fmean(abs(e) for e in errors),
            "corr": corr}


def choose_threshold(files: list[tuple[list[Case], list[Pick]]],
                     also_quiet_on: list[tuple[list[Case], list[Pick]]] = ()) -> float:
    """The threshold with the best top-1 accuracy over all `files`, among those that keep none recall at
    NONE_RECALL_TARGET or above in each of them and of `also_quiet_on` (the middle one of a tie); the quietest
    threshold if none does."""
    cases = [case for file_cases, _ in files for case in file_cases]
    picks = [pick for _, file_picks in files for pick in file_picks]
    quiet_on = [*files, *also_quiet_on]
    allowed = [t for t in THRESHOLDS  # (a file without none cases: NaN, no limit)
               if not any(case_metrics(c, p, t)["none_recall"] < NONE_RECALL_TARGET for c, p in quiet_on)]
    if not allowed:
        return float(THRESHOLDS[-1])
    accuracies = np.array([case_metrics(cases, picks, t)["accuracy"] for t in allowed])
    best = [t for t, a in zip(allowed, accuracies) if a >= accuracies.max() - 1e-12]
    return float(best[len(best) // 2])
