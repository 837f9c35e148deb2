"""The options of llm/run_api.py: the web chat's (model, sampling, memory, --host, --port) and the API's own.

Light on purpose (no torch, no FastAPI): --help and a bad option answer before the heavy imports.
"""

import argparse
import dataclasses
import os
from pathlib import Path

from llm.chat.chat import DEFAULT_MEMORY_DB, STAND_IN_MEMORY_DB
from llm.chat.options import ServerOptions
from llm.common.cli import SEED, TEMPERATURE, int_range
from llm.common.options import option
from llm.common.specs import Recipe, repo_relative

DEFAULT_PORT = 8000  # the web chat has 7860: both can run side by side
API_KEY_ENV = "OHLORA_API_KEY"
STAND_IN_SUFFIX = "-tiny-stand-in"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
USERS_FOLDER_SUFFIX = "_api_users"


def users_folder(memory_db: Path) -> Path:
    """Where the API keeps one memory file per user: beside the chats' file, named after it, so that the stand-in's
    users (beside the stand-in's file) never share a folder with the real model's."""
    return memory_db.with_name(memory_db.stem + USERS_FOLDER_SUFFIX)


_USERS_HELP = (f"the users' memories are kept in the folder named after this file + {USERS_FOLDER_SUFFIX}/ beside it, "
               f"one SQLite file per user (default: {repo_relative(users_folder(DEFAULT_MEMORY_DB))}/; on the tiny "
               f"stand-in {repo_relative(users_folder(STAND_IN_MEMORY_DB))}/)")


def _model_id(text: str) -> str:
    if not text.strip() or any(ch.isspace() for ch in text):
        raise argparse.ArgumentTypeError(f"expected a name without spaces, got {text!r}")
    return text


@dataclasses.dataclass(frozen=True)
class ApiOptions(ServerOptions):
    """The chat options, where the server listens, who may call it and how many may wait for the model."""

    temperature: float = option(Recipe.temperature, "sampling temperature of a request that gives none",
                                type=TEMPERATURE)
    seed: int | None = option(None, "random seed, set once at start (a request's `seed` sets its own answer's)",
                              type=SEED)
    memory_db: Path | None = option(None, _USERS_HELP, type=Path, metavar="FILE")
    port: int = option(DEFAULT_PORT, "port to listen on", type=int_range(1, 65535))
    api_key: str | None = option(None, "the key every request must bring (Authorization: Bearer KEY), else 401; "
                                 f"also read from the environment variable {API_KEY_ENV}, which keeps it out of the "
                                 "process list (default: none, any key is accepted)", metavar="KEY")
    queue_limit: int = option(8, "requests that may wait while one answer is generated; past that, 503 with "
                              "Retry-After", type=int_range(0, 10_000), metavar="N")
    model_name: str | None = option(None, "the model id clients ask for (default: ohlora-MODEL, e.g. ohlora-polyglot, "
                                    f"with {STAND_IN_SUFFIX} added on the tiny stand-in)", type=_model_id,
                                    metavar="ID")

    @property
    def key(self) -> str | None:
        """--api-key, else the environment's; an empty value is no key."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def model_id(self, stand_in: bool) -> str:
        return self.model_name or f"ohlora-{self.model}" + (STAND_IN_SUFFIX if stand_in else "")

    def host_warning(self) -> str | None:
        """One line when the server is reachable from other machines (None on this machine only)."""
        if self.host in LOOPBACK:
            return None
        return f"listening on {self.host}: " + (
            "every request must bring the --api-key" if self.key else
            "NO --api-key: whoever reaches it can chat, and read or clear the memory of any user id they send")
