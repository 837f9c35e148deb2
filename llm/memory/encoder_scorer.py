"""The encoder scorer: a Korean sentence encoder fine-tuned on the project's labelled pairs (sentence-transformers).

The original project's path: a pretrained encoder (klue/roberta-base, mean pooling) fine-tuned so that the cosine
of a memory's embedding and a message's embedding is their graded relevance. train_retrieval.py --encoder saves
it, with the threshold it chose, in a sentence-transformers folder (ENCODER_DIR by default); the chats use it
whenever that folder exists. Its files are checked when the scorer is made (no torch yet); the model itself loads
at the first message, from local files only and never with remote code.
"""

import functools
import json
import threading
from pathlib import Path

import numpy as np

from llm.memory.relevance import Scorer, ScorerError

INFO_FILE = "ohlora_retrieval.json"  # written by train_retrieval.py --encoder: threshold, data, base encoder
REQUIRED_FILES = ("modules.json", "config.json", "model.safetensors", INFO_FILE)
TRAIN_HINT = ("train one with `python llm/memory/train_retrieval.py --encoder DIR` (docs/chat.md), or move the "
              "folder away to use the offline scorer")


def memory_text(key: str, value: str) -> str:
    """A memory as the encoder reads it, in training and in the chat alike."""
    return f"{key}: {value}"


def read_info(folder: Path) -> dict:
    """The folder's INFO_FILE, after checking that the files a load needs are there; ScorerError otherwise."""
    if not folder.is_dir():
        raise ScorerError(f"retrieval encoder {folder}: not a folder; {TRAIN_HINT}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ScorerError(f"retrieval encoder {folder}: {', '.join(missing)} missing; {TRAIN_HINT}")
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        threshold = float(info["threshold"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
        raise ScorerError(f"retrieval encoder {folder}: {INFO_FILE} is unreadable ({error}); {TRAIN_HINT}") from None
    if not 0.0 <= threshold <= 1.0:
        raise ScorerError(f"retrieval encoder {folder}: threshold {threshold} is not in [0, 1]; {TRAIN_HINT}")
    from safetensors import SafetensorError, safe_open  # reads the header only; no torch
    try:
        with safe_open(str(folder / "model.safetensors"), framework="numpy"):
            pass
    except (OSError, SafetensorError) as error:
        raise ScorerError(f"retrieval encoder {folder}: model.safetensors is corrupt ({error}); {TRAIN_HINT}") from None
    return info


def load_encoder(folder: Path):
    """The SentenceTransformer saved in a folder: local files only, no remote code; ScorerError if it fails."""
    from safetensors import SafetensorError
    from sentence_transformers import SentenceTransformer

    from llm.common.models import no_progress_bars

    try:
        with no_progress_bars():
            return SentenceTransformer(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ScorerError(f"retrieval encoder {folder}: cannot be loaded ({line}); {TRAIN_HINT}") from None


class EncoderScorer(Scorer):
    """Cosine of the fine-tuned encoder's embeddings, clipped to [0, 1]; each memory is embedded once."""

    name = "encoder"

    def __init__(self, folder: Path, info: dict) -> None:
        base = info.get("base_encoder", "an unknown encoder")
        super().__init__(float(info["threshold"]), f"{base} fine-tuned on {info.get('fitted_on', 'unknown data')}")
        self.folder = folder
        self._model = None
        self._memory_vectors: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()  # the web chat scores from several threads

    @staticmethod
    def load(folder: Path) -> "EncoderScorer":
        """The scorer of a folder, checked and made once per process (the model loads at the first message)."""
        return _load(Path(folder).resolve())

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            self._model = load_encoder(self.folder)
        return self._model.encode(texts, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)

    def score_memories(self, memories: list[tuple[str, str]], message: str) -> list[float]:
        texts = [memory_text(key, value) for key, value in memories]
        with self._lock:
            new = [text for text in dict.fromkeys(texts) if text not in self._memory_vectors]
            vectors = self._encode(new + [message])
            self._memory_vectors.update(zip(new, vectors[:-1]))
            memory_vectors = np.array([self._memory_vectors[text] for text in texts])
        return np.clip(memory_vectors @ vectors[-1], 0.0, 1.0).tolist()


@functools.cache
def _load(folder: Path) -> EncoderScorer:
    return EncoderScorer(folder, read_info(folder))
