"""Fine-tune a local Korean encoder into the chat's encoder scorer, with sentence-transformers.

The original project's recipe: a pretrained encoder (klue/roberta-base) with mean pooling, trained so that the
cosine of a memory's and a message's embeddings matches their graded relevance (CosineSimilarityLoss) on the
project's labelled pairs. The threshold is chosen on the development cases by the rule every scorer follows
(metrics.choose_threshold), from held-out picks as for the offline scorer: the encoder is fine-tuned once per fold
of a split grouped by memory, each case scored by the one that never saw its memory; then once on every pair, and
that one, which is saved, must be as quiet on the cases. The blind sets take no part. The result is saved,
atomically, as a sentence-transformers folder with the threshold beside it (encoder_scorer.INFO_FILE).
"""

import json
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from llm.common.cli import UserError
from llm.common.outputs import check_replaceable, save_folder_atomically
from llm.memory.encoder_scorer import INFO_FILE, EncoderScorer, memory_text
from llm.memory import chat_scorer
from llm.memory.relevance import message_text
from llm.common.tags import parse_memory_tag
from llm.memory.research.data import Case, Pair, case_fold, describe_rows, fold_of, read_cases, read_pairs
from llm.memory.research.metrics import NONE_RECALL_TARGET, best_picks, case_metrics, choose_threshold, pair_metrics

MAX_SEQ_LENGTH = 64  # tokens: a memory or a chat message; longer ones are cut


@dataclass(frozen=True)
class EncoderOptions:
    base: Path  # a Hugging Face model folder (config.json, tokenizer, safetensors weights)
    pair_files: list[Path]
    case_files: list[Path]
    out: Path
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    folds: int  # the grouped folds whose held-out picks choose the threshold


def check_base(folder: Path) -> None:
    """Refuse, before any heavy import, a base folder that cannot hold an encoder."""
    if not folder.is_dir():
        raise UserError(f"--encoder {folder}: no such folder; download the encoder first (docs/chat.md)")
    if not (folder / "config.json").is_file():
        raise UserError(f"--encoder {folder}: config.json is missing (a Hugging Face model folder is needed)")
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise UserError(f"--encoder {folder}: no model.safetensors (pickled .bin weights are not loaded)")


def _training_pairs(pairs: list[Pair]):
    from datasets import Dataset

    memories = [memory_text(*parse_memory_tag(tag)) for tag, _, _ in pairs]
    return Dataset.from_dict({"memory": memories, "message": [message_text(m) for _, m, _ in pairs],
                              "score": [grade for _, _, grade in pairs]})


def _build(base: Path):
    from sentence_transformers import SentenceTransformer, SentenceTransformerModelCardData
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from llm.common.models import no_progress_bars

    try:
        with no_progress_bars():
            transformer = Transformer(str(base), max_seq_length=MAX_SEQ_LENGTH,
                                      model_kwargs={"local_files_only": True, "trust_remote_code": False},
                                      processor_kwargs={"local_files_only": True, "trust_remote_code": False})
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UserError(f"--encoder {base}: cannot be loaded as an encoder ({line})") from None
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    # local_files_only: the model card never looks the base model up on the Hub
    return SentenceTransformer(modules=[transformer, pooling],
                               model_card_data=SentenceTransformerModelCardData(local_files_only=True))


def _fine_tune(model, pairs: list[Pair], options: EncoderOptions, scratch: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

    class Trainer(SentenceTransformerTrainer):
        """Without two by-products unused here: the model card's data (no card is saved) and the metrics dict the
        trainer prints when it ends (the caller prints its own line; the dict wrapped mid-number in a terminal)."""

        def add_model_card_callback(self, default_args_dict) -> None:  # the subclassing its docs suggest
            pass

        def log(self, logs, *args, **kwargs) -> None:  # with logging_strategy "no", only that final dict comes here
            pass

    args = SentenceTransformerTrainingArguments(
        output_dir=str(scratch), num_train_epochs=options.epochs, per_device_train_batch_size=options.batch_size,
        learning_rate=options.learning_rate, warmup_steps=0.1, seed=options.seed, data_seed=options.seed,
        save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=torch.cuda.is_available())  # (warmup_steps below 1: a share of the steps)
    trainer = Trainer(model=model, args=args, train_dataset=_training_pairs(pairs), loss=CosineSimilarityLoss(model))
    trainer.train()


def _fitted(options: EncoderOptions, pairs: list[Pair], scratch_beside: Path, what: str):
    """A new model from the base, fine-tuned on `pairs` (a line says how long it took)."""
    start = time.perf_counter()
    model = _build(options.base)
    with _scratch_folder(scratch_beside) as scratch:
        _fine_tune(model, pairs, options, scratch)
    print(f"fine-tuned {options.base.name} on {len(pairs)} pairs{what} in {time.perf_counter() - start:.1f} s")
    return model


def _held_out_picks(options: EncoderOptions, pairs: list[Pair], case_files: list[list[Case]], out: Path):
    """Per case file: each case's pick by the model fine-tuned without its memory's fold."""
    k = options.folds
    folds = [fold_of(tag, k) for tag, _, _ in pairs]
    picks = [[None] * len(cases) for cases in case_files]
    for fold in range(k):
        model = _fitted(options, [p for p, f in zip(pairs, folds) if f != fold], out, f" (fold {fold + 1} of {k})")
        scorer = _TrainedScorer(model)
        for cases, file_picks in zip(case_files, picks):
            held = [i for i, case in enumerate(cases) if case_fold(case, k) == fold]
            for i, pick in zip(held, best_picks(scorer, [cases[i] for i in held])):
                file_picks[i] = pick
    return [(cases, file_picks) for cases, file_picks in zip(case_files, picks)]


def train(options: EncoderOptions) -> int:
    check_base(options.base)
    out = check_replaceable(options.out, "--out")
    pair_files = [read_pairs(path) for path in options.pair_files]
    pairs = [pair for file_pairs in pair_files for pair in file_pairs]
    case_files = [(path, read_cases(path)) for path in options.case_files]
    held_out = _held_out_picks(options, pairs, [cases for _, cases in case_files], out)
    model = _fitted(options, pairs, out, "")

    scorer = _TrainedScorer(model)
    # The model that is saved must be as quiet as the held-out ones: fitted on more pairs, it is bolder.
    saved = [(cases, best_picks(scorer, cases)) for _, cases in case_files]
    threshold = choose_threshold(held_out, also_quiet_on=saved)
    fitted = pair_metrics([scorer.relevance(tag, message) for tag, message, _ in pairs], pairs)
    print(f"pairs fitted on ({len(pairs)}): MSE {fitted['mse']:.3f}  MAE {fitted['mae']:.3f}  "
          f"corr {fitted['corr']:.3f}")
    for (path, cases), (_, picks) in zip(case_files, held_out):
        m = case_metrics(cases, picks, threshold)
        print(f"cases {path.name} ({len(cases)}) held out, at {threshold:.2f}: top-1 {m['accuracy']:.3f}  "
              f"none recall {m['none_recall']:.3f} ({m['both_none']}/{m['really_none']})")
    print(f"threshold {threshold:.2f}: the best held-out top-1 that keeps none recall >= {NONE_RECALL_TARGET} in "
          f"each case file,\n  held out and for the model saved")

    info = {"threshold": threshold, "base_encoder": options.base.name,
            "fitted_on": f"{describe_rows(options.pair_files, [len(p) for p in pair_files])}, "
                         f"threshold on {describe_rows(options.case_files, [len(c) for _, c in case_files])}",
            "epochs": options.epochs, "batch_size": options.batch_size, "learning_rate": options.learning_rate,
            "folds": options.folds,
            "trained": date.today().isoformat()}

    def write(staging: Path) -> None:
        from llm.common.models import no_progress_bars
        with no_progress_bars():
            model.save_pretrained(str(staging), create_model_card=False)
        (staging / INFO_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    save_folder_atomically(out, write, "retrieval encoder")
    chats = chat_scorer.ENCODER_DIR
    print(f"saved {out}: " + ("the chats use it from now on" if out == chats.resolve() else
                              f"the chats use only {chats}; evaluate_retrieval.py --encoder {out} measures it"))
    return 0


class _TrainedScorer(EncoderScorer):
    """The model just trained, scored as the chat will score it (threshold chosen afterwards)."""

    def __init__(self, model) -> None:
        super().__init__(Path("."), {"threshold": 1.0})
        self._model = model


def _scratch_folder(out: Path):
    """Where the trainer may write its files: beside the output, removed afterwards."""
    import tempfile
    out.parent.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{out.name}.trainer-", dir=out.parent)
