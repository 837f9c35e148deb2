"""Time the memory scorers: the load, and milliseconds to score one message against N stored memories.

    python llm/memory/benchmark_retrieval.py                     # 100 memories, 20 messages, 7 runs
    python llm/memory/benchmark_retrieval.py --encoder llm/models/retrieval_encoder

The memories are distinct tags of the in-repo sets (numbered copies when there are fewer than asked for), the
messages the first prompts of retrieval_eval.csv. The first message also analyses every memory (once per
process, as in a chat); each later run of the offline scorer clears its cache of word vectors first, so every
message pays for its own words as a new chat message would.
"""

import argparse
import statistics
import time
from pathlib import Path

from llm.common.cli import ArgumentParser, UserError
from llm.memory.research.data import CASES_CSV, PAIRS_CSV, read_cases, read_pairs

BUDGET_LOAD_S = 10.0
BUDGET_MS = 20.0


def count(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def sample_memories(n: int) -> list[str]:
    tags = [tag for _, tags, _ in read_cases(CASES_CSV) for tag in tags] + [tag for tag, _, _ in read_pairs(PAIRS_CSV)]
    distinct = list(dict.fromkeys(tags))
    copies = [f"[{tag[1:].split(':', 1)[0]} {i}:{tag.split(':', 1)[1]}" for i in range(1, n) for tag in distinct]
    return (distinct + copies)[:n]


def sample_messages(n: int) -> list[str]:
    prompts = list(dict.fromkeys(prompt for prompt, _, _ in read_cases(CASES_CSV)))
    if n > len(prompts):
        raise UserError(f"--messages {n}: {CASES_CSV.name} has only {len(prompts)} distinct prompts")
    return prompts[:n]


def _time_ms(work) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) * 1000


def benchmark(scorer, memories: list[str], messages: list[str], runs: int, clear_caches) -> None:
    name = f"{scorer.name} scorer"
    load_ms = _time_ms(lambda: scorer.relevance("[취미: 독서]", "책 읽는 중"))
    print(f"{name}: load {load_ms / 1000:.2f} s (first message ever; budget {BUDGET_LOAD_S:.0f} s)")
    first_ms = _time_ms(lambda: scorer.most_relevant(memories, messages[0]))
    print(f"{name}: first message, analysing the {len(memories)} memories once: {first_ms:.1f} ms")
    per_message = []
    for _ in range(runs):
        clear_caches()  # each run's message words are new to it
        per_message.append(_time_ms(lambda: [scorer.most_relevant(memories, m) for m in messages]) / len(messages))
    print(f"{name}: ms per message against {len(memories)} stored memories: {statistics.median(per_message):.2f}\n"
          f"  (median of {runs} runs of {len(messages)} messages; min {min(per_message):.2f}, "
          f"max {max(per_message):.2f}; budget {BUDGET_MS:.0f} ms)")


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=count, default=100, help="stored memories (default: %(default)s)")
    parser.add_argument("--messages", type=count, default=20, help="messages per run (default: %(default)s)")
    parser.add_argument("--runs", type=count, default=7,
                        help="timed runs; the median is reported (default: %(default)s)")
    parser.add_argument("--encoder", type=Path, metavar="DIR", help="also time this encoder folder")
    args = parser.parse_args()
    memories, messages = sample_memories(args.memories), sample_messages(args.messages)

    from llm.memory import morphemes
    from llm.memory.offline_scorer import OfflineScorer
    benchmark(OfflineScorer.load(), memories, messages, args.runs, lambda: morphemes.space().clear_word_vectors())
    if args.encoder is not None:
        from llm.memory.encoder_scorer import EncoderScorer
        benchmark(EncoderScorer.load(args.encoder), memories, messages, args.runs, lambda: None)
    return 0
