"""Oh-LoRA behind an OpenAI-compatible API, with her memory: for SillyTavern, Open WebUI or the openai client.

Usage: python llm/run_api.py --help   (then point a client at http://127.0.0.1:8000/v1; docs/api.md)
"""

import sys

try:
    from llm.chat.api_options import ApiOptions, users_folder
    from llm.chat.chat import memory_file
    from llm.chat.options import check_can_listen, parse_chat_options
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.cli import run_main, to_stderr

DESCRIPTION = ("Serve Oh-LoRA over the OpenAI chat API (GET /v1/models, POST /v1/chat/completions, plain or "
               "streamed): the chats' model, options and memory, one memory per user (the request's `user`, or the "
               "X-OhLoRA-User header), one answer at a time with the others queued. Listens on 127.0.0.1 only "
               "unless --host says otherwise. docs/api.md shows the clients' settings.")


def main() -> int:
    options = parse_chat_options(ApiOptions, DESCRIPTION)
    check_can_listen(options.host, options.port)  # before the minutes a real model takes to load
    warn = to_stderr
    if (line := options.host_warning()) is not None:
        warn(line)
    # torch, transformers and FastAPI load only now, so that --help and bad options answer at once.
    from llm.chat.loading import load_chat_model

    model = load_chat_model(options)
    from llm.chat.api import STAND_IN_HEADER, STAND_IN_NOTICE, build_app, serve
    from llm.chat.api_model import api_answerer, prompt_tokens
    from llm.chat.api_turns import ApiServices, open_users_folder

    stand_in, model_id = model.loaded.is_tiny, options.model_id(model.loaded.is_tiny)
    if stand_in:
        # the notice above says what the stand-in is; a client reads it from every response too
        warn(f"!! Every response says so in its {STAND_IN_HEADER} header; the model id is {model_id}.")
    folder, memory_off = (None, "memory is off (--no-memory)") if options.no_memory else open_users_folder(
        users_folder(memory_file(options.memory_db, stand_in)), warn)
    if folder is not None:
        from llm.memory.chat_scorer import load_scorer

        load_scorer()  # a broken encoder folder is one line now, not a failure at the first request
    services = ApiServices(api_answerer(model), model_id, too_long=model.too_long(), prompt_tokens=prompt_tokens(model),
                           users_folder=folder, memory_off_reason=memory_off, api_key=options.key,
                           queue_limit=options.queue_limit, stand_in=STAND_IN_NOTICE if stand_in else None)
    serve(build_app(services), options.host, options.port, say=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    run_main(main)
