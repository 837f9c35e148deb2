"""Options declared once: a dataclass field carries its command-line flag, type and help (`option`); a parser is
built from the fields (`add_options`), and the parsed flags become that dataclass (`from_args`): the typed object
the modules pass to each other, never an argparse Namespace. A YAML recipe file (`--config`) sets the same
options by name (`read_config`).

Light on purpose (no torch): scripts build their parsers before importing anything heavy.
"""

import argparse
import dataclasses
import difflib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llm.common.cli import UserError


def option(default: Any, help: str, *, meta: dict | None = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also the option --field-name (a bool defaulting to False: a switch); `meta` is
    what else its users read from the field (what it changes in the trainer, what it needs)."""
    return dataclasses.field(default=default, metadata={"help": help, "argparse": argparse_kwargs, **(meta or {})})


def list_option(help: str, **argparse_kwargs: Any) -> Any:
    """A repeatable option (--prompt A --prompt B): a list field."""
    return dataclasses.field(default_factory=list,
                             metadata={"help": help, "argparse": {"action": "append", **argparse_kwargs}})


def option_fields(cls: type) -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(cls) if "help" in field.metadata]


def flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def field_default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                unset: bool = False, default_note: Callable[[dataclasses.Field], str] = lambda field: "",
                **help_values: Any) -> None:
    """One argument per option field of `cls`. With unset, every default is None in the parse, so that a value
    given on the command line (or in a --config file) can be told from the dataclass's default. A help text may
    name `{placeholders}` filled from help_values (the model's folders)."""
    for field in option_fields(cls):
        kwargs = dict(field.metadata["argparse"])
        default = field_default(field)
        switch = default is False and "type" not in kwargs and "action" not in kwargs
        if switch:
            kwargs["action"] = "store_true"
        text = field.metadata["help"].format(**help_values) if help_values else field.metadata["help"]
        if not switch and default not in (None, []) and "(default" not in text:
            text += f" (default: {default}{default_note(field)})"
        parser.add_argument(flag(field), dest=field.name, default=None if unset else default,
                            help=text.replace("%", "%%"), **kwargs)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options of `cls` that were given (not None in a parse made with unset=True)."""
    return {field.name: getattr(args, field.name) for field in option_fields(cls)
            if getattr(args, field.name, None) is not None}


def from_args(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """The dataclass from a parse: each field from the argument of its name (a None left as the field's
    default), the rest from `values`."""
    parsed = {field.name: getattr(args, field.name) for field in dataclasses.fields(cls)
              if field.init and field.name not in values and getattr(args, field.name, None) is not None}
    return cls(**parsed, **values)


def _config_value(action: argparse.Action, key: str, value: Any, path: Path) -> Any:
    """A --config value checked as the command line checks it (the option's type, choices, switches)."""
    where = f"--config {path}: {key}"
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}: expected one value, got {type(value).__name__}")
    try:
        converted = action.type(str(value)) if action.type is not None else str(value)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
        raise UserError(f"{where}: {error}") from None
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"{where}: {converted!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def read_config(parser: argparse.ArgumentParser, path: Path, not_in_config: Iterable[str] = ()) -> dict[str, Any]:
    """The options a YAML recipe file sets, by option name (`lora_rank: 16` or `lora-rank: 16`), each checked
    like its flag; a key that is no option is a UserError naming it."""
    import yaml  # light, and only when a file is given

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"--config {path}: cannot be read ({error.strerror or error})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"--config {path}: not a YAML file ({' '.join(str(error).split())})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"--config {path}: expected option: value lines, got a {type(loaded).__name__}")
    actions = {action.dest: action for action in parser._actions
               if action.option_strings and action.dest not in {"help", "config", *not_in_config}}
    values = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in actions:
            close = difflib.get_close_matches(name, actions, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise UserError(f"--config {path}: {key!r} is not an option of this script{hint}; see --help")
        values[name] = None if value is None else _config_value(actions[name], str(key), value, path)
    return values
