"""A tiny BERT stand-in for the sentence encoder, built by the project: the encoder path runs without a download.

As the LLM's stand-in (llm/common/models.py), it has the real architecture family and random weights, with a
WordPiece tokenizer trained on the project's labelled pairs; it is built deterministically and cached under
OHLORA_TINY_CACHE. train_retrieval.py --encoder takes its folder as it takes klue/roberta-base's. Its scores
mean nothing: it is there so that tests run the whole path (train, save, load, score, the chat's recall).
"""

import hashlib
import json
import os
from pathlib import Path

from llm.common.outputs import save_folder_atomically
from llm.memory.research.data import ENCODER_FIT_PAIRS, read_pairs

TINY_ENCODER_CONFIG = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                       "max_position_embeddings": 128}
TINY_ENCODER_VOCAB = 1500
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}


def _texts() -> list[str]:
    return [text for path in ENCODER_FIT_PAIRS for tag, message, _ in read_pairs(path) for text in (tag, message)]


def _build(texts: list[str], folder: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from llm.common.models import TINY_SEED, no_progress_bars

    wordpiece = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    wordpiece.normalizer = normalizers.NFC()
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.decoder = decoders.WordPiece()
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=TINY_ENCODER_VOCAB, special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False))
    cls, sep = (wordpiece.token_to_id(SPECIAL_TOKENS[name]) for name in ("cls_token", "sep_token"))
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, model_max_length=128, **SPECIAL_TOKENS)
    torch.manual_seed(TINY_SEED)
    model = BertModel(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                 **TINY_ENCODER_CONFIG))
    with no_progress_bars():
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)


def ensure_tiny_encoder() -> Path:
    """The stand-in's folder, built once per recipe and data (a second or two) and then reused."""
    from llm.common.models import DEFAULT_TINY_CACHE_DIR, TINY_SEED

    texts = _texts()
    recipe = json.dumps([TINY_ENCODER_CONFIG, TINY_ENCODER_VOCAB, SPECIAL_TOKENS, TINY_SEED], sort_keys=True)
    digest = hashlib.sha256("\n".join([recipe, *texts]).encode("utf-8")).hexdigest()[:12]
    folder = Path(os.environ.get("OHLORA_TINY_CACHE", DEFAULT_TINY_CACHE_DIR)) / f"retrieval-encoder-{digest}"
    if not (folder / "config.json").is_file():
        save_folder_atomically(folder, lambda staging: _build(texts, staging), "tiny encoder stand-in")
    return folder
