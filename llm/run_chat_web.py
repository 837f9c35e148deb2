"""Chat with Oh-LoRA in the browser: the terminal chat's model, options and memory, on a local web page.

Usage: python llm/run_chat_web.py --help   (then open http://127.0.0.1:7860/)
"""

import argparse
import sys

try:
    from llm.chat.chat import memory_file, open_memory
    from llm.chat.options import add_chat_options, add_web_options, check_can_listen, parse_chat_args
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import ArgumentParser, run_main, to_stderr


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Chat with Oh-LoRA on a web page (Gradio): the same model, memory and options as "
                    "llm/run_chat.py, a panel of what she remembers with a button to forget, one conversation per "
                    "browser tab. Listens on 127.0.0.1 only unless --host says otherwise; no public link.",
    )
    add_chat_options(parser)
    add_web_options(parser)
    return parser


def main() -> int:
    args = parse_chat_args(build_parser())
    check_can_listen(args.host, args.port)  # before the minutes a real model takes to load
    # torch, transformers and gradio load only now, so that --help and bad options answer at once.
    from llm.chat.loading import load_chat_model

    model = load_chat_model(args)
    warn = to_stderr  # notices stay off stdout's transcript
    memory, memory_off = (None, "memory is off (--no-memory)") if args.no_memory else open_memory(
        memory_file(args.memory_db, model.loaded.is_tiny), warn)
    from llm.chat.web import Backend, build_app, serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {args.host}: the page has no login; whoever reaches it can chat and clear the memory")
    backend = Backend(model.answer, too_long=model.too_long(), memory=memory, memory_off_reason=memory_off,
                      banner=model.banner)
    serve(build_app(backend), args.host, args.port, say=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    run_main(main)
