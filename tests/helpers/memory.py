"""A memory scorer for tests of the store's and the chats' plumbing, independent of the fitted model."""

from llm.memory.relevance import Scorer


class ValueScorer(Scorer):
    """Relevance 1 when the memory's value is written in the message, else 0."""

    name = "value"

    def __init__(self) -> None:
        super().__init__(threshold=0.5, fitted_on="nothing")
        self.offered: list[list[tuple[str, str]]] = []

    def score_memories(self, memories, message):
        self.offered.append(list(memories))
        return [1.0 if value in message else 0.0 for _, value in memories]
