"""Talk to the fine-tuned Oh-LoRA in the terminal; she remembers what you tell her.

Usage: python llm/run_chat.py --help
"""

import argparse
import sys

try:
    from llm.chat.chat import HINT, Chat, memory_file, open_memory, run_interactive, run_prompts
    from llm.chat.options import add_chat_options, parse_chat_args
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import ArgumentParser, run_main, to_stderr


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Chat with Oh-LoRA: the base model with the LoRA adapter saved by fine-tuning (or a merged "
                    f"folder, --merged). Interactive unless --prompt is given; {HINT}.",
    )
    add_chat_options(parser)
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="answer this and exit instead of chatting (repeatable: answered in order; /memory and "
                             "/forget work too)")
    parser.add_argument("--show-recall", action="store_true",
                        help="before each answer, show which memory was put in front of the message (/why does it once)")
    return parser


def main() -> int:
    args = parse_chat_args(build_parser())
    # torch and transformers load only now, so that --help and bad options answer at once.
    from llm.chat.loading import load_chat_model

    model = load_chat_model(args)
    warn = to_stderr  # notices stay off stdout's transcript
    memory, memory_off = (None, "memory is off (--no-memory)") if args.no_memory else open_memory(
        memory_file(args.memory_db, model.loaded.is_tiny), warn)
    chat = Chat(model.answer, memory, say=lambda text: print(text, flush=True), warn=warn, memory_off_reason=memory_off,
                too_long=model.too_long(), show_recall=args.show_recall)
    if args.prompt:
        run_prompts(chat, args.prompt)
    else:
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad byte becomes a notice, not a crash
        run_interactive(chat)
    return 0


if __name__ == "__main__":
    run_main(main)
