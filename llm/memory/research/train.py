"""Fit a memory scorer: the offline one (offline_model.json) or, with --encoder, a fine-tuned sentence encoder.

    python llm/memory/train_retrieval.py                     # the offline scorer on every non-blind row
    python llm/memory/train_retrieval.py --cv 5              # its grouped 5-fold check by memory tag (writes nothing)
    python llm/memory/train_retrieval.py --encoder llm/models/klue-roberta-base    # -> llm/models/retrieval_encoder/

The offline scorer fits on the in-repo and first development pairs, the encoder on the second development set's
pairs too (data.py says why); both choose their threshold on the in-repo and both development sets' cases (the best
top-1 accuracy that keeps none recall >= 0.9 in each case file). The blind sets are refused.
"""

from pathlib import Path

from llm.common.cli import SEED, ArgumentParser, UserError, float_range, int_range, positive_float, positive_int
from llm.memory import chat_scorer
from llm.memory.research.data import BLIND_DIR, ENCODER_FIT_PAIRS, FIT_CASES, FIT_PAIRS, row_slice


def _parser() -> ArgumentParser:
    chats = chat_scorer.ENCODER_DIR
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, nargs="+", metavar="FILE",
                        help="labelled pairs to fit on (default: the in-repo and first development pairs; "
                             "with --encoder, the second development set's too)")
    parser.add_argument("--eval", type=Path, nargs="+", default=list(FIT_CASES), metavar="FILE",
                        help="cases to choose the threshold on (default: the in-repo and both development sets' cases)")
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help="where to save (default: llm/memory/offline_model.json; with --encoder, "
                             f"{chats.relative_to(chats.parents[2])}/, the folder the chats use)")
    offline = parser.add_argument_group("the offline scorer")
    offline.add_argument("--rows", type=row_slice, default=slice(None), metavar="START:END",
                         help="fit on these pair rows only (over the files in order) and report the others")
    offline.add_argument("--c", type=positive_float, default=0.3, help="inverse L2 strength (default: %(default)s)")
    offline.add_argument("--cv", type=int_range(2, 50), default=0, metavar="K",
                         help="only report a grouped K-fold check by memory tag; write nothing")
    encoder = parser.add_argument_group("the encoder scorer")
    encoder.add_argument("--encoder", type=Path, metavar="DIR",
                         help="fine-tune this local encoder folder (Hugging Face layout, e.g. klue/roberta-base) "
                              "instead of fitting the offline scorer")
    encoder.add_argument("--epochs", type=positive_int, default=4, help="default: %(default)s")
    encoder.add_argument("--batch-size", type=positive_int, default=16, help="default: %(default)s")
    encoder.add_argument("--learning-rate", type=float_range(0.0, 1.0), default=2e-5, help="default: %(default)s")
    encoder.add_argument("--seed", type=SEED, default=42, help="default: %(default)s")
    encoder.add_argument("--folds", type=int_range(2, 10), default=3, metavar="K",
                         help="the threshold comes from K fine-tunings, each without a K-th of the memories, then "
                              "one on every pair is saved (default: %(default)s)")
    return parser


def _refuse_blind(paths: list[Path]) -> None:
    blind = BLIND_DIR.resolve()
    for path in paths:
        if path.resolve().is_relative_to(blind):
            raise UserError(f"{path}: the blind set only reports; nothing is fitted or chosen on it")


def main() -> int:
    args = _parser().parse_args()
    if args.pairs is None:
        args.pairs = list(ENCODER_FIT_PAIRS if args.encoder is not None else FIT_PAIRS)
    _refuse_blind(args.pairs + args.eval)
    if args.encoder is not None:
        from llm.common.logs import lines_above_bars
        from llm.memory.research.train_encoder import EncoderOptions, train
        with lines_above_bars():  # its lines (a long --out path) break between words in a terminal
            return train(EncoderOptions(args.encoder, args.pairs, args.eval, args.out or chat_scorer.ENCODER_DIR,
                                        args.epochs, args.batch_size, args.learning_rate, args.seed, args.folds))
    from llm.memory.offline_scorer import MODEL_JSON
    from llm.memory.research.train_offline import OfflineOptions, train
    return train(OfflineOptions(args.pairs, args.eval, args.rows, args.c, args.cv, args.out or MODEL_JSON))
