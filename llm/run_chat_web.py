"""Chat with Oh-LoRA in the browser: the terminal chat's model, options and memory, on a local web page.

Usage: python llm/run_chat_web.py --help   (then open http://127.0.0.1:7860/)
"""

import sys

try:
    from llm.chat.chat import memory_file, open_memory
    from llm.chat.options import ServerOptions, check_can_listen, parse_chat_options
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import run_main, to_stderr

DESCRIPTION = ("Chat with Oh-LoRA on a web page (Gradio): the same model, memory and options as llm/run_chat.py, a "
               "panel of what she remembers with a button to forget, one conversation per browser tab. Listens on "
               "127.0.0.1 only unless --host says otherwise; no public link.")


def main() -> int:
    options = parse_chat_options(ServerOptions, DESCRIPTION)
    check_can_listen(options.host, options.port)  # before the minutes a real model takes to load
    # torch, transformers and gradio load only now, so that --help and bad options answer at once.
    from llm.chat.loading import load_chat_model

    model = load_chat_model(options)
    warn = to_stderr  # notices stay off stdout's transcript
    memory, memory_off = (None, "memory is off (--no-memory)") if options.no_memory else open_memory(
        memory_file(options.memory_db, model.loaded.is_tiny), warn)
    from llm.chat.web import PageServices, build_app, serve

    if options.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {options.host}: the page has no login; whoever reaches it can chat and clear the memory")
    services = PageServices(model.answer, too_long=model.too_long(), memory=memory, memory_off_reason=memory_off,
                            banner=model.banner)
    serve(build_app(services), options.host, options.port, say=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    run_main(main)
