"""Talk to the fine-tuned Oh-LoRA in the terminal; she remembers what you tell her.

Usage: python llm/run_chat.py --help
"""

import argparse
import sys
from pathlib import Path

try:
    from llm.chat.chat import DEFAULT_MEMORY_DB, HINT, Chat, open_memory, run_interactive, run_prompts
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import TEMPERATURE, SEED, ArgumentParser, add_trust_pickled_option, positive_int, run_main
from llm.common.specs import SPECS, Recipe


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Chat with Oh-LoRA: the base model with the LoRA adapter saved by fine-tuning. "
                    f"Interactive unless --prompt is given; {HINT}.",
    )
    parser.add_argument("--model", choices=sorted(SPECS), default="polyglot",
                        help="which base model (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="folder with the base weights (default: the model's folder under llm/models/; "
                             "without weights, the tiny stand-in the adapter was trained on)")
    parser.add_argument("--adapter-dir", type=Path, default=None,
                        help="the saved adapter (default: the fine-tuning script's output folder under llm/models/)")
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="answer this and exit instead of chatting (repeatable: answered in order; /memory and "
                             "/forget work too)")
    # Sampling as in the training run's valid-prompt test.
    parser.add_argument("--temperature", type=TEMPERATURE, default=Recipe.temperature,
                        help="sampling temperature (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, default=None, help="random seed, for answers that repeat (default: none)")
    parser.add_argument("--max-trials", type=positive_int, default=Recipe.max_trials,
                        help="generations per message while the answer is empty (default: %(default)s)")
    parser.add_argument("--memory-db", type=Path, default=DEFAULT_MEMORY_DB,
                        help="the SQLite file of what she remembers (default: %(default)s)")
    parser.add_argument("--no-memory", action="store_true", help="chat without memory: nothing stored or recalled")
    parser.add_argument("--show-recall", action="store_true",
                        help="before each answer, show which memory was put in front of the message (/why does it once)")
    add_trust_pickled_option(parser)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    spec = SPECS[args.model]
    # torch and transformers load only now, so that --help and bad options answer at once.
    from transformers import set_seed

    from llm.common.adapters import load_fine_tuned
    from llm.common.inference import generate_answers, length_guard
    from llm.common.models import pick_device

    device, dtype = pick_device()
    loaded = load_fine_tuned(spec, args.model_dir or spec.model_dir, args.adapter_dir or spec.adapter_dir,
                             device, dtype, trust_pickled=args.trust_pickled_weights)
    if args.seed is not None:
        set_seed(args.seed)  # after loading: peft's LoRA init draws random numbers

    def answer(model_input: str):
        return generate_answers(loaded.model, loaded.tokenizer, [model_input], temperature=args.temperature,
                                max_trials=args.max_trials)[0]

    warn = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731 (notices stay off stdout's transcript)
    memory, memory_off = (None, "memory is off (--no-memory)") if args.no_memory else open_memory(args.memory_db, warn)
    chat = Chat(answer, memory, say=lambda text: print(text, flush=True), warn=warn, memory_off_reason=memory_off,
                too_long=length_guard(loaded.tokenizer, loaded.model.config.max_position_embeddings),
                show_recall=args.show_recall)
    if args.prompt:
        run_prompts(chat, args.prompt)
    else:
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad byte becomes a notice, not a crash
        run_interactive(chat)
    return 0


if __name__ == "__main__":
    run_main(main)
