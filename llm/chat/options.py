"""The options of the chats (llm/run_chat.py, llm/run_chat_web.py) and of llm/export_model.py, declared once as
dataclasses and parsed into them: worded once, checked once.

Light on purpose (no torch): the scripts build their parsers before importing anything heavy, so that --help
and a bad option answer at once.
"""

import dataclasses
import errno
import socket
from pathlib import Path

from llm.chat.chat import DEFAULT_MEMORY_DB, STAND_IN_MEMORY_DB
from llm.common.cli import SEED, TEMPERATURE, TRUST_PICKLED_HELP, ArgumentParser, UserError, int_range, positive_int
from llm.common.folders import read_adapter
from llm.common.options import add_options, from_args, list_option, option
from llm.common.specs import SPECS, ModelSpec, Recipe, repo_relative

_MERGED_PLACES = ", ".join(f"{name}: {repo_relative(spec.merged_dir)}" for name, spec in sorted(SPECS.items()))


@dataclasses.dataclass(frozen=True)
class ModelChoice:
    """Which fine-tuned model: a base and the adapter trained on it."""

    model: str = option("polyglot", "which base model", choices=sorted(SPECS))
    model_dir: Path | None = option(None, "folder with the base weights (default: the model's folder under "
                                    "llm/models/; without weights, the tiny stand-in the adapter was trained on)",
                                    type=Path)
    adapter_dir: Path | None = option(None, "the saved adapter (default: the fine-tuning script's output folder "
                                      "under llm/models/)", type=Path)
    trust_pickled_weights: bool = option(False, TRUST_PICKLED_HELP)

    @property
    def spec(self) -> ModelSpec:
        return SPECS[self.model]

    @property
    def base_dir(self) -> Path:
        return self.model_dir or self.spec.model_dir

    @property
    def adapter(self) -> Path:
        return self.adapter_dir or self.spec.adapter_dir


@dataclasses.dataclass(frozen=True)
class ChatOptions(ModelChoice):
    """The model, sampling and memory options every chat takes."""

    merged: Path | None = option(None, "chat with a merged folder written by llm/export_model.py (the adapter is in "
                                 f"its weights) instead of base + adapter; its usual place is {_MERGED_PLACES}",
                                 type=Path, metavar="DIR")
    # Sampling as in the training run's valid-prompt test.
    temperature: float = option(Recipe.temperature, "sampling temperature", type=TEMPERATURE)
    seed: int | None = option(None, "random seed, for answers that repeat (default: none)", type=SEED)
    max_trials: int = option(Recipe.max_trials, "generations per message while the answer is empty", type=positive_int)
    memory_db: Path | None = option(None, f"the SQLite file of what she remembers (default: "
                                    f"{repo_relative(DEFAULT_MEMORY_DB)}; on the tiny stand-in its own file, "
                                    f"{repo_relative(STAND_IN_MEMORY_DB)})", type=Path)
    no_memory: bool = option(False, "chat without memory: nothing stored or recalled")


@dataclasses.dataclass(frozen=True)
class TerminalChatOptions(ChatOptions):
    prompt: list = list_option("answer this and exit instead of chatting (repeatable: answered in order; /memory "
                               "and /forget work too)", metavar="TEXT")
    show_recall: bool = option(False, "before each answer, show which memory was put in front of the message, or "
                               "that none was (/why does it once)")


@dataclasses.dataclass(frozen=True)
class ServerOptions(ChatOptions):
    """Where a chat server listens: this machine only, unless --host says otherwise."""

    host: str = option("127.0.0.1", "address to listen on (this machine only by default; whoever can reach "
                       "another address can chat and make her forget)")
    port: int = option(7860, "port to listen on", type=int_range(1, 65535))


def parse_chat_options(cls: type, description: str, argv: list[str] | None = None) -> ChatOptions:
    """The parsed options, once the combinations are known to make sense and the adapter folder to be one."""
    parser = ArgumentParser(description=description)
    add_options(parser, cls)
    options = from_args(cls, parser.parse_args(argv))
    if options.merged is not None:
        if options.model_dir is not None or options.adapter_dir is not None:
            parser.error("argument --merged: not with --model-dir or --adapter-dir (the merged folder holds the base "
                         "and the adapter in one)")
    else:  # a missing or broken adapter: one line before torch's seconds of import
        read_adapter(options.spec, options.adapter)
    return options


def check_can_listen(host: str, port: int) -> None:
    """One line, before the model loads, when the address cannot be listened on (a port in use, a bad host)."""
    if not host.strip():
        raise UserError("--host: empty; give an address such as 127.0.0.1, or 0.0.0.0 for every interface")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is fine
            probe.bind((host, port))
    except OSError as error:
        why = "in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise UserError(f"--host {host} --port {port}: cannot listen there ({why}); choose another port with --port"
                        + ("" if error.errno == errno.EADDRINUSE else " or another address with --host")) from None
