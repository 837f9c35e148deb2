"""Korean words as Kiwi sees them: lemmas of a text and the meaning vectors of its morphemes.

kiwipiepy's morphological analyser gives each content word's lemma ("떨려" -> 떨리다, "떡볶이를" -> 떡볶이)
and its built-in CoNg language model gives the cosine similarity of any two morphemes
(`Kiwi.morpheme_similarity`; 강아지~반려동물 0.67). The model is inside the kiwipiepy_model package: nothing
is downloaded. Only pairwise similarities are public, but they are cosines of 256-dimensional embeddings, so
the similarities of a morpheme to ANCHORS fixed frequent morphemes give back its vector exactly (up to a
rotation that all vectors share): the anchors' Gram matrix is factorised once, and each new morpheme costs
ANCHORS similarity calls (cached). Vectors let a whole text become one vector (a frequency-weighted mean,
with the direction every word shares removed) and make the scorer's arithmetic a few matrix products.
"""

import functools
import itertools
import math
import threading
import time
from dataclasses import dataclass

import numpy as np

ANCHORS = 300  # >= the embedding size (256) so the anchors span the space; more only cost time
VOCABULARY = 8000  # frequent morphemes: every VOCABULARY_STEP-th of them gives the mean and the principal
VOCABULARY_STEP = 4  # directions removed from every vector (a spread of frequencies, at a quarter of the cost)
BACKGROUND = 400  # frequent morphemes against which a similarity is judged typical or not (a z-score)
COMMON_DIRECTIONS = 2  # principal directions of the vocabulary removed with the mean
SIF_A = 1000.0  # a word's weight is id / (id + SIF_A): Kiwi numbers morphemes roughly by frequency, rare = large
NOUN_WEIGHT = 2.0  # nouns carry a topic more than verbs and adverbs do

CONTENT_TAGS = frozenset({"NNG", "NNP", "VV", "VA", "XR", "SL", "SH", "MAG", "NR", "SN"})
NOUN_TAGS = frozenset({"NNG", "NNP", "XR", "SL", "SH", "NR", "SN"})


@dataclass(frozen=True)
class Morpheme:
    lemma: str  # the dictionary form: 떨리다 for 떨려, 떡볶이 for 떡볶이를, lower case for Latin
    tag: str  # part of speech without its irregular-conjugation suffix (VV, not VV-R)
    id: int  # Kiwi's morpheme id


@dataclass(frozen=True)
class Analysis:
    """The content morphemes of a text and what the scorer needs of them, computed once per text."""

    morphemes: tuple[Morpheme, ...]
    weights: np.ndarray  # per morpheme: frequency weight (x NOUN_WEIGHT for nouns)
    has_vector: np.ndarray  # per morpheme: bool
    vectors: np.ndarray  # rows for the morphemes with a vector: unit CoNg embeddings (n x 256)
    centred: np.ndarray  # the same with the common directions removed, unit length
    background_mean: np.ndarray  # per vector row: mean similarity to the background words
    background_std: np.ndarray
    sentence: np.ndarray | None  # weighted sum of the centred rows, unit length; None with no vector

    @property
    def vector_weights(self) -> np.ndarray:
        return self.weights[self.has_vector]


def _sentence(centred: np.ndarray, weights: np.ndarray) -> np.ndarray | None:
    if not len(centred):
        return None
    total = weights @ centred
    norm = float(np.linalg.norm(total))
    return total / norm if norm > 0 else None


class MorphemeSpace:
    """Kiwi with its CoNg model, and the anchors that turn similarities into vectors. Build it once."""

    def __init__(self) -> None:
        from kiwipiepy import Kiwi  # imported here so that importing the scorer stays cheap

        self.kiwi = Kiwi(model_type="cong")
        self.kiwi.tokenize("")  # Kiwi initialises lazily: do it now, not on the first message
        self._similarity = self.kiwi.morpheme_similarity
        # Kiwi's first ids are placeholders, one per part of speech, with no form: every unknown Latin word
        # ("ok", "INFP") is the SL placeholder, so their vectors would all be one and the same.
        self.first_word_id = next(i for i in itertools.count() if self.kiwi.morpheme(i).form)
        self._vector_cache = functools.lru_cache(maxsize=200_000)(self._vector)
        frequent = self._frequent_morphemes(max(ANCHORS, BACKGROUND, VOCABULARY))
        self.anchors = frequent[:ANCHORS]
        gram = np.array([[self._similarity(a, b) for b in self.anchors] for a in self.anchors])
        values, vectors = np.linalg.eigh(gram)
        keep = values > 1e-6 * values.max()
        self._from_similarities = np.linalg.pinv(vectors[:, keep] * np.sqrt(values[keep]))
        self.dim = int(keep.sum())
        vocabulary = np.array([self.vector(i) for i in frequent[:VOCABULARY:VOCABULARY_STEP]])
        self.mean = vocabulary.mean(axis=0)
        _, _, directions = np.linalg.svd(vocabulary - self.mean, full_matrices=False)
        self.common = directions[:COMMON_DIRECTIONS]
        self.background = np.array([self.vector(i) for i in frequent[:BACKGROUND]])

    def _frequent_morphemes(self, count: int) -> list[int]:
        """Ids of the most frequent nouns, verbs, adjectives and adverbs that have a vector."""
        found, morpheme_id = [], self.first_word_id
        while len(found) < count:
            tag = self.kiwi.morpheme(morpheme_id).tag.split("-")[0]
            if tag in ("NNG", "NNP", "VV", "VA", "MAG", "XR") and self.has_vector(morpheme_id):
                found.append(morpheme_id)
            morpheme_id += 1
        return found

    def has_vector(self, morpheme_id: int) -> bool:
        return morpheme_id >= self.first_word_id and not math.isnan(self._similarity(morpheme_id, morpheme_id))

    def _vector(self, morpheme_id: int) -> np.ndarray:
        similarities = np.array([self._similarity(morpheme_id, a) for a in self.anchors])
        vector = self._from_similarities @ similarities
        return vector / np.linalg.norm(vector)

    def vector(self, morpheme_id: int) -> np.ndarray:
        """The unit CoNg embedding of a morpheme that has one (cached)."""
        return self._vector_cache(morpheme_id)

    def clear_word_vectors(self) -> None:
        """Forget the cached vectors of single words (the benchmark's runs start cold)."""
        self._vector_cache.cache_clear()

    def morphemes(self, text: str) -> list[Morpheme]:
        """Content morphemes of a text; a long noun the model has no vector for adds its known common nouns."""
        found = []
        for token in self.kiwi.tokenize(text):
            tag = token.tag.split("-")[0]
            if tag not in CONTENT_TAGS:
                continue
            lemma = token.lemma if tag in ("VV", "VA") else token.form.lower()
            found.append(Morpheme(lemma, tag, token.id))
            if tag in ("NNG", "NNP") and len(token.form) > 2 and not self.has_vector(token.id):
                # 한강공원 -> 공원: analysed again with the whole word forbidden; common nouns only, since the
                # proper nouns of such a split are mostly wrong guesses (마라탕 -> 마라, a name)
                for part in self.kiwi.tokenize(token.form, blocklist=[token.form]):
                    if part.tag == "NNG" and len(part.form) >= 2 and self.has_vector(part.id):
                        found.append(Morpheme(part.form, part.tag, part.id))
        return found

    def analyse(self, text: str) -> Analysis:
        morphemes = tuple(self.morphemes(text))
        has_vector = np.array([self.has_vector(m.id) for m in morphemes], dtype=bool)
        # a word the model does not know is rare: full frequency weight
        weights = np.array([(m.id / (m.id + SIF_A) if has else 1.0) * (NOUN_WEIGHT if m.tag in NOUN_TAGS else 1.0)
                            for m, has in zip(morphemes, has_vector)], dtype=float)
        ids = [m.id for m, has in zip(morphemes, has_vector) if has]
        vectors = np.array([self.vector(i) for i in ids]).reshape(len(ids), self.dim)
        centred = vectors - self.mean
        centred -= (centred @ self.common.T) @ self.common
        centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        typical = vectors @ self.background.T
        return Analysis(morphemes, weights, has_vector, vectors, centred, typical.mean(axis=1),
                        typical.std(axis=1) + 1e-6, _sentence(centred, weights[has_vector]))


_space: MorphemeSpace | None = None
_space_lock = threading.Lock()
load_seconds: float | None = None  # how long the one load took, once it happened


def space() -> MorphemeSpace:
    """The process's one MorphemeSpace, built on first use."""
    global _space, load_seconds
    if _space is None:
        with _space_lock:
            if _space is None:
                start = time.perf_counter()
                _space = MorphemeSpace()
                load_seconds = time.perf_counter() - start
    return _space


def lemmas(text: str) -> list[str]:
    """The lemmas of a text's content words: "떡볶이를 먹었어" -> ["떡볶이", "먹다"]."""
    return [m.lemma for m in space().morphemes(text)]
