"""Talk to the fine-tuned Oh-LoRA in the terminal; she remembers what you tell her.

Usage: python llm/run_chat.py --help
"""

import sys

try:
    from llm.chat.chat import HINT, Chat, memory_file, open_memory, run_interactive, run_prompts
    from llm.chat.options import TerminalChatOptions, parse_chat_options
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import run_main, to_stderr

DESCRIPTION = ("Chat with Oh-LoRA: the base model with the LoRA adapter saved by fine-tuning (or a merged folder, "
               f"--merged). Interactive unless --prompt is given; {HINT}.")


def main() -> int:
    options = parse_chat_options(TerminalChatOptions, DESCRIPTION)
    # torch and transformers load only now, so that --help and bad options answer at once.
    from llm.chat.loading import load_chat_model

    model = load_chat_model(options)
    warn = to_stderr  # notices stay off stdout's transcript
    memory, memory_off = (None, "memory is off (--no-memory)") if options.no_memory else open_memory(
        memory_file(options.memory_db, model.loaded.is_tiny), warn)
    chat = Chat(model.answer, memory, say=lambda text: print(text, flush=True), warn=warn, memory_off_reason=memory_off,
                too_long=model.too_long(), show_recall=options.show_recall)
    if options.prompt:
        run_prompts(chat, options.prompt)
    else:
        sys.stdin.reconfigure(errors="surrogateescape")  # a bad byte becomes a notice, not a crash
        run_interactive(chat)
    return 0


if __name__ == "__main__":
    run_main(main)
