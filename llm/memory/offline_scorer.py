"""The offline scorer: relevance of a memory to a message from Korean word meaning, with nothing to download.

A message about the weather rarely repeats "날씨" ("우산 챙겨야 할까?"), and a fine-tuned model invents keys no
list foresees ("[응원하는 팀: 두산]"). So the scorer reads words, not lists: Kiwi (kiwipiepy, its model inside
the package) splits key, value and message into lemmas, and its CoNg model's morpheme embeddings
(morphemes.py) say how close their meanings are. For the key, the value and both together it measures: the
cosine of the frequency-weighted text vectors, how well each side's words find a close word on the other side
(both directions), the most unusual single-word similarity (a z-score against frequent words) and the lemmas
shared outright; then whether the value is written in the message, and the message's length. A logistic model
over these 17 numbers (offline_model.json, fitted by train_retrieval.py) gives the probability that the memory
is relevant. Nothing in it names a key: a key never seen in training is scored through the meaning of its words.
A memory with no evidence at all (no word with a vector on either side, no shared lemma, value not written)
scores 0: the model never guesses from nothing.
"""

import functools
import json
import threading
from pathlib import Path

import numpy as np

from llm.memory.morphemes import Analysis, space
from llm.memory.relevance import Scorer, ScorerError, message_text

MODEL_JSON = Path(__file__).with_name("offline_model.json")
FEATURES = tuple(f"{part}_{measure}" for part in ("key", "value", "memory")
                 for measure in ("sentence", "recall", "precision", "z", "lemma")) + ("value_written", "message_words")
NO_VECTOR_Z = -3.0  # the z feature of a part with no word vector, or of a message with none


@functools.lru_cache(maxsize=4096)
def analyse_memory(key: str, value: str) -> tuple[Analysis, Analysis]:
    """Key and value, analysed once per memory."""
    return space().analyse(key), space().analyse(value)


def _segment_max(values: np.ndarray, starts: np.ndarray, empty: np.ndarray, default: float) -> np.ndarray:
    """Max of each run of rows (the runs start at `starts`); `default` for the empty runs."""
    padded = np.concatenate([values, np.full((1,) + values.shape[1:], -np.inf)])
    return np.where(empty.reshape((-1,) + (1,) * (values.ndim - 1)), default, np.maximum.reduceat(padded, starts))


class _Parts:
    """One kind of part (the keys, or the values) of many memories, stacked so that one matrix product
    compares all of them with a message."""

    def __init__(self, parts: list[Analysis]) -> None:
        counts = np.array([int(p.has_vector.sum()) for p in parts])
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
        self.empty = counts == 0
        self.segment = np.repeat(np.arange(len(parts)), counts)
        self.centred = np.vstack([p.centred for p in parts])
        self.vectors = np.vstack([p.vectors for p in parts])
        self.mean = np.concatenate([p.background_mean for p in parts])
        self.std = np.concatenate([p.background_std for p in parts])
        self.weights = np.concatenate([p.vector_weights for p in parts])
        self.weight_sums = np.bincount(self.segment, self.weights, minlength=len(parts))
        dim = space().dim
        self.sentences = np.array([p.sentence if p.sentence is not None else np.zeros(dim) for p in parts])
        self.sums = np.array([p.centred.T @ p.vector_weights if len(p.centred) else np.zeros(dim) for p in parts])
        self.lemmas = [[m.lemma for m in p.morphemes] for p in parts]
        self.lemma_weights = [p.weights for p in parts]

    def compare(self, message: Analysis) -> dict[str, np.ndarray]:
        """Per memory: the weighted sum and the max of its words' closeness to the message, and so on."""
        n = len(self.empty)
        if message.sentence is None or not len(self.centred):
            return {"recall_sum": np.zeros(n), "column_max": np.full((n, len(message.centred)), -1.0),
                    "z": np.full(n, NO_VECTOR_Z)}
        close = self.centred @ message.centred.T  # rows: the parts' words, columns: the message's words
        raw = self.vectors @ message.vectors.T
        z = np.minimum((raw - self.mean[:, None]) / self.std[:, None],
                       (raw - message.background_mean[None, :]) / message.background_std[None, :])
        return {"recall_sum": np.bincount(self.segment, self.weights * close.max(axis=1), minlength=n),
                "column_max": _segment_max(close, self.starts, self.empty, -1.0),
                "z": _segment_max(z.max(axis=1), self.starts, self.empty, NO_VECTOR_Z)}


class MemoryBank:
    """The memories of one list of tags, ready to be scored against any message."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        analysed = [analyse_memory(key, value) for key, value in pairs]
        self.values = [value for _, value in pairs]
        self.keys, self.value_parts = _Parts([a[0] for a in analysed]), _Parts([a[1] for a in analysed])

    def __len__(self) -> int:
        return len(self.values)

    def features(self, message: str, analysed: Analysis) -> np.ndarray:
        """One row of FEATURES per memory."""
        parts = (self.keys, self.value_parts)
        found = [p.compare(analysed) for p in parts]
        lemma_found = _lemma_matches(parts, analysed)
        columns = []
        both = {"sum": self.keys.sums + self.value_parts.sums,
                "weights": self.keys.weight_sums + self.value_parts.weight_sums}
        for index in range(3):  # key, value, key and value together
            if index < 2:
                part, got = parts[index], found[index]
                sentences, weight_sums, recall_sum = part.sentences, part.weight_sums, got["recall_sum"]
                column_max, z = got["column_max"], got["z"]
                lemma_hits, lemma_weights = lemma_found[index]
            else:
                norms = np.linalg.norm(both["sum"], axis=1, keepdims=True)
                sentences = np.divide(both["sum"], norms, out=np.zeros_like(both["sum"]), where=norms > 0)
                weight_sums = both["weights"]
                recall_sum = found[0]["recall_sum"] + found[1]["recall_sum"]
                column_max = np.maximum(found[0]["column_max"], found[1]["column_max"])
                z = np.maximum(found[0]["z"], found[1]["z"])
                lemma_hits = lemma_found[0][0] + lemma_found[1][0]
                lemma_weights = lemma_found[0][1] + lemma_found[1][1]
            has = (weight_sums > 0) & (analysed.sentence is not None)
            message_weights = analysed.vector_weights
            sentence = sentences @ analysed.sentence if analysed.sentence is not None else np.zeros(len(self))
            recall = np.divide(recall_sum, weight_sums, out=np.zeros(len(self)), where=weight_sums > 0)
            precision = (column_max @ message_weights / message_weights.sum()) if analysed.sentence is not None \
                else np.zeros(len(self))
            lemma = np.divide(lemma_hits, lemma_weights, out=np.zeros(len(self)), where=lemma_weights > 0)
            columns += [np.where(has, sentence, 0.0), np.where(has, recall, 0.0), np.where(has, precision, 0.0),
                        np.where(has, z, NO_VECTOR_Z), lemma]
        compact = _compact(message)
        columns.append(np.array([float(any(_compact(word) in compact for word in value.split()))
                                 for value in self.values]))
        columns.append(np.full(len(self), float(len(analysed.morphemes))))
        return np.column_stack(columns)


def _lemma_match(lemma: str, message_lemmas: set[str]) -> float:
    """1 when the message has the lemma, 0.9 when one contains the other (two syllables or more), else 0."""
    if lemma in message_lemmas:
        return 1.0
    if len(lemma) >= 2 and any(len(other) >= 2 and (lemma in other or other in lemma) for other in message_lemmas):
        return 0.9
    return 0.0


def _lemma_matches(parts: tuple[_Parts, ...], message: Analysis) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per kind of part: (weighted lemma matches, total lemma weight) per memory."""
    message_lemmas = {m.lemma for m in message.morphemes}
    cache: dict[str, float] = {}
    result = []
    for part in parts:
        hits, totals = [], []
        for lemmas, weights in zip(part.lemmas, part.lemma_weights):
            matches = [cache[l] if l in cache else cache.setdefault(l, _lemma_match(l, message_lemmas))
                       for l in lemmas]
            hits.append(float(np.dot(weights, matches)) if lemmas else 0.0)
            totals.append(float(weights.sum()))
        result.append((np.array(hits), np.array(totals)))
    return result


def _compact(text: str) -> str:
    return "".join(text.split()).lower()


@functools.lru_cache(maxsize=8)
def memory_bank(pairs: tuple[tuple[str, str], ...]) -> MemoryBank:
    """The bank of a list of memories; the chat asks with the same list until a memory is added."""
    return MemoryBank(list(pairs))


_kiwi_lock = threading.Lock()  # Kiwi and the caches are shared by every caller in the process (the web chat's threads)


def feature_rows(memories: list[tuple[str, str]], message: str) -> np.ndarray:
    """One row of FEATURES per (key, value) memory, for one message (read as the chat reads it)."""
    message = message_text(message)
    with _kiwi_lock:
        return memory_bank(tuple(memories)).features(message, space().analyse(message))


def predict(rows: np.ndarray, model: dict) -> np.ndarray:
    """Probability of relevance per feature row (logistic regression on standardised features)."""
    scaled = (np.atleast_2d(rows) - np.array(model["mean"])) / np.array(model["scale"])
    return 1.0 / (1.0 + np.exp(-(scaled @ np.array(model["coef"]) + float(model["intercept"]))))


def relevance_of_rows(rows: np.ndarray, model: dict) -> np.ndarray:
    """The model's probability per row; 0 for a row with nothing to go on (no vector on either side, no shared
    lemma, the value not written), where a fitted intercept would otherwise be a guess from nothing."""
    column = {name: index for index, name in enumerate(FEATURES)}
    nothing = ((rows[:, column["memory_z"]] == NO_VECTOR_Z) & (rows[:, column["memory_lemma"]] == 0)
               & (rows[:, column["value_written"]] == 0))
    return np.where(nothing, 0.0, predict(rows, model))


def read_model(path: Path = MODEL_JSON) -> dict:
    """The fitted parameters written by train_retrieval.py (JSON, never pickle); ScorerError if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            model = json.load(f)
        if tuple(model["features"]) != FEATURES or len(model["coef"]) != len(FEATURES):
            raise ValueError("fitted for other features")
        float(model["intercept"]), float(model["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ScorerError(f"{path}: not an offline model written by train_retrieval.py "
                          f"({getattr(error, 'strerror', None) or error}); run llm/memory/train_retrieval.py") from None
    return model


class OfflineScorer(Scorer):
    """Kiwi features and the logistic model of one model file."""

    name = "offline"

    def __init__(self, model: dict) -> None:
        super().__init__(float(model["threshold"]), str(model.get("fitted_on", "unknown data")))
        self.model = model

    @staticmethod
    def load(path: Path = MODEL_JSON) -> "OfflineScorer":
        """The scorer of a model file, read once per process (Kiwi itself loads at the first message)."""
        return _load(Path(path).resolve())

    def score_memories(self, memories: list[tuple[str, str]], message: str) -> list[float]:
        return relevance_of_rows(feature_rows(memories, message), self.model).tolist()


@functools.cache
def _load(path: Path) -> OfflineScorer:
    return OfflineScorer(read_model(path))
