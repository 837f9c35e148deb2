"""Time the memory scorer: model load, and milliseconds to score one message against N stored memories.

    python llm/memory/benchmark_retrieval.py                      # 100 memories, 20 messages, 7 runs

The memories are distinct tags of the evaluation CSVs (numbered copies when there are fewer than asked for),
the messages the first user prompts of retrieval_eval.csv. The first message also analyses every memory
(once per process); each later run clears the cache of word vectors first, so every message pays for its own
words as a new chat message would, while the memories stay analysed, as in a chat.
"""

import argparse
import statistics
import time
from pathlib import Path

import sys

try:
    from llm.common.cli import ArgumentParser, UserError, run_main
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")

HERE = Path(__file__).parent
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
    from llm.memory.evaluate_retrieval import EVAL_CSV, read_cases, read_pairs
    tags = [tag for _, tags, _ in read_cases(EVAL_CSV) for tag in tags]
    tags += [tag for tag, _, _ in read_pairs(HERE / "relevance_pairs.csv")]
    distinct = list(dict.fromkeys(tags))
    copies = [f"[{tag[1:].split(':', 1)[0]} {i}:{tag.split(':', 1)[1]}" for i in range(1, n) for tag in distinct]
    return (distinct + copies)[:n]


def sample_messages(n: int) -> list[str]:
    from llm.memory.evaluate_retrieval import EVAL_CSV, read_cases
    prompts = list(dict.fromkeys(prompt for prompt, _, _ in read_cases(EVAL_CSV)))
    if n > len(prompts):
        raise UserError(f"--messages {n}: retrieval_eval.csv has only {len(prompts)} distinct prompts")
    return prompts[:n]


def main() -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=count, default=100, help="stored memories (default: %(default)s)")
    parser.add_argument("--messages", type=count, default=20, help="messages per run (default: %(default)s)")
    parser.add_argument("--runs", type=count, default=7,
                        help="timed runs; the median is reported (default: %(default)s)")
    args = parser.parse_args()
    memories, messages = sample_memories(args.memories), sample_messages(args.messages)

    start = time.perf_counter()
    from llm.memory import morphemes, retrieval
    morphemes.space()
    load_s = time.perf_counter() - start
    print(f"model load {load_s:.2f} s (Kiwi with its CoNg model, anchors and vectors; budget {BUDGET_LOAD_S:.0f} s)")

    start = time.perf_counter()
    retrieval.most_relevant(memories, messages[0])
    print(f"first message, analysing the {len(memories)} memories once: {(time.perf_counter() - start) * 1000:.1f} ms")

    per_message = []
    for _ in range(args.runs):
        morphemes.space().clear_word_vectors()  # each run's message words are new to it
        start = time.perf_counter()
        for message in messages:
            retrieval.most_relevant(memories, message)
        per_message.append((time.perf_counter() - start) * 1000 / len(messages))
    median = statistics.median(per_message)
    print(f"ms per message against {len(memories)} stored memories: {median:.2f} "
          f"(median of {args.runs} runs of {len(messages)} messages; min {min(per_message):.2f}, "
          f"max {max(per_message):.2f}; budget {BUDGET_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    run_main(main)
