"""The options the terminal chat (llm/run_chat.py) and the web chat (llm/run_chat_web.py) share, and the model
options of llm/export_model.py: worded once, checked once.

Light on purpose (no torch): the scripts build their parsers before importing anything heavy, so that --help
and a bad option answer at once.
"""

import argparse
import errno
import socket
from pathlib import Path

from llm.chat.chat import DEFAULT_MEMORY_DB, STAND_IN_MEMORY_DB
from llm.common.cli import SEED, TEMPERATURE, UserError, add_trust_pickled_option, int_range, positive_int
from llm.common.folders import read_adapter
from llm.common.specs import SPECS, Recipe, repo_relative


def add_model_options(parser: argparse.ArgumentParser, merged: bool = True) -> None:
    """--model, --model-dir, --adapter-dir (and, for the chats, --merged), --trust-pickled-weights."""
    parser.add_argument("--model", choices=sorted(SPECS), default="polyglot",
                        help="which base model (default: %(default)s)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="folder with the base weights (default: the model's folder under llm/models/; "
                             "without weights, the tiny stand-in the adapter was trained on)")
    parser.add_argument("--adapter-dir", type=Path, default=None,
                        help="the saved adapter (default: the fine-tuning script's output folder under llm/models/)")
    if merged:
        defaults = ", ".join(f"{name}: {repo_relative(spec.merged_dir)}" for name, spec in sorted(SPECS.items()))
        parser.add_argument("--merged", type=Path, default=None, metavar="DIR",
                            help="chat with a merged folder written by llm/export_model.py (the adapter is in its "
                                 f"weights) instead of base + adapter; its usual place is {defaults}")
    add_trust_pickled_option(parser)


def add_chat_options(parser: argparse.ArgumentParser) -> None:
    """The model, sampling and memory options of both chats."""
    add_model_options(parser)
    # Sampling as in the training run's valid-prompt test.
    parser.add_argument("--temperature", type=TEMPERATURE, default=Recipe.temperature,
                        help="sampling temperature (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, default=None, help="random seed, for answers that repeat (default: none)")
    parser.add_argument("--max-trials", type=positive_int, default=Recipe.max_trials,
                        help="generations per message while the answer is empty (default: %(default)s)")
    parser.add_argument("--memory-db", type=Path, default=None,
                        help=f"the SQLite file of what she remembers (default: {repo_relative(DEFAULT_MEMORY_DB)}; "
                             f"on the tiny stand-in its own file, {repo_relative(STAND_IN_MEMORY_DB)})")
    parser.add_argument("--no-memory", action="store_true", help="chat without memory: nothing stored or recalled")


def parse_chat_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The parsed options, once the combinations are known to make sense and the adapter folder to be one."""
    args = parser.parse_args()
    if args.merged is not None:
        if args.model_dir is not None or args.adapter_dir is not None:
            parser.error("argument --merged: not with --model-dir or --adapter-dir (the merged folder holds the base "
                         "and the adapter in one)")
    else:  # a missing or broken adapter: one line before torch's seconds of import
        spec = SPECS[args.model]
        read_adapter(spec, args.adapter_dir or spec.adapter_dir)
    return args


def add_web_options(parser: argparse.ArgumentParser) -> None:
    """Where the web chat listens: this machine only, unless --host says otherwise."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s, this machine only; the page has no login, "
                             "so anyone who can reach another address can chat and make her forget)")
    parser.add_argument("--port", type=int_range(1, 65535), default=7860,
                        help="port to listen on (default: %(default)s)")


def check_can_listen(host: str, port: int) -> None:
    """One line, before the model loads, when the address cannot be listened on (a port in use, a bad host)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
            probe.bind((host, port))
    except OSError as error:
        why = "in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise UserError(f"--host {host} --port {port}: cannot listen there ({why}); choose another port with --port"
                        + ("" if error.errno == errno.EADDRINUSE else " or another address with --host")) from None
