"""Measure every memory scorer side by side: the old cue lists, the offline scorer, the encoder when there is one.

    python llm/memory/evaluate_retrieval.py                  # the five blind sets (cases and pairs): never fitted on
    python llm/memory/evaluate_retrieval.py --eval llm/memory/research/dev/retrieval_cases_dev.csv \\
        --pairs llm/memory/research/dev/relevance_pairs_dev.csv        # the development set (fitted on)
    python llm/memory/evaluate_retrieval.py --model /tmp/refit.json --encoder /tmp/encoder   # try a refit

Cases (--eval): top-1 accuracy (a "none" answer is right when no memory is relevant) and precision/recall of the
"none" answers, at each scorer's own threshold; pairs (--pairs): MSE, MAE and correlation against the graded
relevance. The last lines say what each scorer was fitted on: figures on rows it was fitted on are no test of it.
"""

import textwrap
from pathlib import Path

from llm.common.cli import ArgumentParser
from llm.memory import chat_scorer
from llm.memory.relevance import Scorer
from llm.memory.research.data import BLIND_SETS, read_cases, read_pairs, row_slice, select_rows
from llm.memory.research.metrics import best_picks, case_metrics, pair_metrics

LABEL_WIDTH = 16
FITTED_ON_WIDTH = 100  # what each scorer was fitted on, in whole words on lines that fit a terminal of 100 columns


def _parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, metavar="FILE",
                        help="cases: user_prompt, memories ('|'-separated tags), relevant (a tag or 'none') "
                             "(default when neither file is given: each blind set's)")
    parser.add_argument("--pairs", type=Path, metavar="FILE",
                        help="pairs: memory_0, user_prompt_1, similarity_score in [0, 1] (default when neither "
                             "file is given: each blind set's)")
    parser.add_argument("--rows", type=row_slice, default=slice(None), metavar="START:END",
                        help="only these data rows of each file, counted from 0 like a Python slice (e.g. 216:)")
    parser.add_argument("--model", type=Path, metavar="FILE",
                        help="the offline scorer's model file, e.g. one train_retrieval.py --out wrote "
                             "(default: llm/memory/offline_model.json)")
    parser.add_argument("--encoder", type=Path, metavar="DIR",
                        help="an encoder folder train_retrieval.py --encoder saved (default: "
                             "llm/models/retrieval_encoder/ when it exists)")
    return parser


def scorers(model: Path | None, encoder: Path | None) -> list[Scorer]:
    """The old lists, the offline scorer, and the encoder when one is given or the chats have one."""
    from llm.memory.offline_scorer import MODEL_JSON, OfflineScorer
    from llm.memory.research.cue_scorer import CueScorer

    chosen: list[Scorer] = [CueScorer(), OfflineScorer.load(model or MODEL_JSON)]
    chats = chat_scorer.ENCODER_DIR
    encoder = encoder if encoder is not None else chats if chats.exists() else None
    if encoder is not None:
        from llm.memory.encoder_scorer import EncoderScorer
        chosen.append(EncoderScorer.load(encoder))
    return chosen


def _row(label: str, cells: list[str]) -> str:
    return (f"{label:{LABEL_WIDTH}}" + "".join(f"{cell:>20}" for cell in cells)).rstrip()


def _progress(rows: list, path: Path, scorer: Scorer):
    """The rows, with a bar in a terminal while one scorer goes through them (gone when done)."""
    from tqdm import tqdm
    return tqdm(rows, desc=f"{path.name}: {scorer.name}", unit="row", leave=False, disable=None, dynamic_ncols=True)


def report_cases(path: Path, span: slice, scorers: list[Scorer]) -> None:
    every = read_cases(path)
    cases = select_rows(every, span, path)
    metrics = [case_metrics(cases, best_picks(scorer, _progress(cases, path, scorer)), scorer.threshold)
               for scorer in scorers]
    note = "" if len(cases) == len(every) else f", rows {span.indices(len(every))[0]}:{span.indices(len(every))[1]}"
    print(f"{path.name}: {len(cases)} cases{note}, {metrics[0]['really_none']} of them none")
    print(_row("", [scorer.name for scorer in scorers]))
    print(_row("threshold", [f"{scorer.threshold:.2f}" for scorer in scorers]))
    print(_row("top-1 accuracy", [f"{m['accuracy']:.3f}" for m in metrics]))
    print(_row("none precision", [f"{m['none_precision']:.3f} ({m['both_none']}/{m['said_none']})" for m in metrics]))
    print(_row("none recall", [f"{m['none_recall']:.3f} ({m['both_none']}/{m['really_none']})" for m in metrics]))


def report_pairs(path: Path, span: slice, scorers: list[Scorer]) -> None:
    every = read_pairs(path)
    pairs = select_rows(every, span, path)
    metrics = [pair_metrics([scorer.relevance(tag, message) for tag, message, _ in _progress(pairs, path, scorer)],
                            pairs) for scorer in scorers]
    note = "" if len(pairs) == len(every) else f", rows {span.indices(len(every))[0]}:{span.indices(len(every))[1]}"
    print(f"{path.name}: {len(pairs)} pairs{note}")
    print(_row("", [scorer.name for scorer in scorers]))
    for name, label in (("mse", "MSE"), ("mae", "MAE"), ("corr", "corr")):
        print(_row(label, [f"{m[name]:.3f}" for m in metrics]))


def main() -> int:
    args = _parser().parse_args()
    sets = [(args.eval, args.pairs)] if args.eval is not None or args.pairs is not None else list(BLIND_SETS)
    # every file read and checked before the slow loading and scoring, so that a bad one fails at once
    for cases_path, pairs_path in sets:
        for path, read in ((cases_path, read_cases), (pairs_path, read_pairs)):
            if path is not None:
                select_rows(read(path), args.rows, path)
    chosen = scorers(args.model, args.encoder)
    reports = [(report, path) for cases_path, pairs_path in sets
               for report, path in ((report_cases, cases_path), (report_pairs, pairs_path)) if path is not None]
    for index, (report, path) in enumerate(reports):
        if index:
            print()
        report(path, args.rows, chosen)
    print("\nfitted on:")
    for scorer in chosen:
        print(textwrap.fill(f"{scorer.name}: {scorer.fitted_on}", FITTED_ON_WIDTH, initial_indent="  ",
                            subsequent_indent="    ", break_long_words=False, break_on_hyphens=False))
    return 0
