"""Which stored memory goes in front of a message: the scorer interface.

A scorer gives each stored "[key: value]" tag a relevance in [0, 1] to a message and recalls the best one only
when it reaches the scorer's own threshold. Two kinds exist: the fine-tuned sentence encoder (encoder_scorer.py)
and the offline scorer (offline_scorer.py, Kiwi morphemes and a fitted logistic model); chat_scorer.py says which
one the chat uses. A scorer is an object, loaded once per process and passed to whoever needs another one (a test,
the evaluation of a refit): nothing here is a module global that changes.
"""

from llm.common.cli import UserError
from llm.common.tags import normalise_part, parse_memory_tag

# Scorers read at most this many characters of a message: scoring costs a bounded time whatever was pasted, and
# what a chat message says about a memory is in its first 2,000 characters.
MAX_MESSAGE_CHARS = 2000


class ScorerError(UserError):
    """A scorer's files exist but cannot be used: one line naming the file; never a silent fallback."""


def message_text(message: str) -> str:
    """The message as the scorers read it: bounded, NFC, no invisible format characters, spaces collapsed."""
    return normalise_part(str(message)[:2 * MAX_MESSAGE_CHARS])[:MAX_MESSAGE_CHARS]


class Scorer:
    """Relevance of memory tags to a message; subclasses score parsed (key, value) memories."""

    name = "scorer"

    def __init__(self, threshold: float, fitted_on: str) -> None:
        self.threshold = threshold  # a memory is recalled only when its score reaches this
        self.fitted_on = fitted_on  # which data it was fitted on and its threshold chosen on, for the reports

    def score_memories(self, memories: list[tuple[str, str]], message: str) -> list[float]:
        """One score in [0, 1] per (key, value); `message` is non-empty and already read by message_text."""
        raise NotImplementedError

    def scores(self, tags: list[str], message: str) -> list[float]:
        """One score per tag, in order; 0 for a malformed tag and for an empty message."""
        parsed = [parse_memory_tag(tag) for tag in tags]
        text = message_text(message)
        memories = [memory for memory in parsed if memory is not None]
        if not text or not memories:
            return [0.0] * len(tags)
        scored = iter(self.score_memories(memories, text))
        return [next(scored) if memory is not None else 0.0 for memory in parsed]

    def relevance(self, tag: str, message: str) -> float:
        """Relevance in [0, 1] of one memory tag like "[일정: 면접]" to a message."""
        return self.scores([tag], message)[0]

    def most_relevant(self, tags: list[str], message: str) -> tuple[str, float] | None:
        """The best tag and its score if it reaches the threshold, else None; ties go to the earlier tag."""
        best = max(zip(tags, self.scores(tags, message)), key=lambda pair: pair[1], default=None)
        if best is None or best[1] < self.threshold:
            return None
        return best
