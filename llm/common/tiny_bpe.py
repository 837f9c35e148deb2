"""The tiny stand-in's tokenizer: a byte-level BPE trained on the dataset, the same kind Polyglot-Ko and GPT-2
use. Light (the tokenizers library alone): --dry-run counts the dataset's tokens with it without loading torch."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from llm.common.data import Splits
from llm.common.specs import ModelSpec

TINY_VOCAB_SIZE = 2000


def dataset_texts(splits: Splits) -> list[str]:
    """Every row's prompt and answer, as the model reads them."""
    return [example.prompt + example.completion for example in splits.train + splits.valid]


def tiny_bpe(spec: ModelSpec, texts: list[str]) -> Tokenizer:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    special = list(dict.fromkeys(spec.special_tokens.values()))
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE, special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    return bpe
