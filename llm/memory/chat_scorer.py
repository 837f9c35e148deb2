"""The scorer the chats use: the fine-tuned encoder when its folder exists, else the offline scorer."""

from pathlib import Path

from llm.common.specs import MODELS_DIR
from llm.memory.relevance import Scorer

ENCODER_DIR = MODELS_DIR / "retrieval_encoder"  # train_retrieval.py --encoder saves here; git-ignored


def load_scorer(encoder_dir: Path | None = None) -> Scorer:
    """The chat's scorer: the encoder of `encoder_dir` (default ENCODER_DIR) when that folder exists (ScorerError
    when it is broken), else the offline scorer. Each is loaded once per process; its heavy part (Kiwi or torch)
    at the first message."""
    encoder_dir = ENCODER_DIR if encoder_dir is None else Path(encoder_dir)
    if encoder_dir.exists():
        from llm.memory.encoder_scorer import EncoderScorer
        return EncoderScorer.load(encoder_dir)
    from llm.memory.offline_scorer import OfflineScorer
    return OfflineScorer.load()
