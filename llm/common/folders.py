"""What a model or adapter folder holds, read without torch: so that a script refuses a wrong folder in one line
before the seconds its libraries take to import."""

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open

from llm.common.cli import UserError
from llm.common.specs import ModelSpec


def read_json_object(path: Path) -> dict | None:
    """The JSON object in a file, or None when it is missing or not a JSON object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def folder_is_empty(path: Path) -> bool:
    """True when the folder is absent or holds nothing but hidden files."""
    return not path.is_dir() or not any(not child.name.startswith(".") for child in path.iterdir())


def missing_config_hint(folder: Path) -> str:
    """What to do about a folder without config.json: it may be an adapter, or the weights one folder deeper."""
    if (folder / "adapter_config.json").is_file():
        return ("; it holds a LoRA adapter (adapter_config.json), not a model: the chats and the export take it as "
                "--adapter-dir, and llm/export_model.py makes a model of it")
    deeper = sorted(child for child in folder.glob("*/config.json")) if folder.is_dir() else []
    if deeper:
        return (f"; the files are one folder deeper, in {deeper[0].parent}: move them up into {folder}, "
                f"or give that folder instead")
    return " (see llm/models/README.md for the file list)"


def folder_model_type(folder: Path) -> str | None:
    """The model_type in a folder's config.json, or None when it is missing or unreadable."""
    return (read_json_object(folder / "config.json") or {}).get("model_type")


def is_tiny_stand_in(spec: ModelSpec, folder: Path) -> bool:
    """True for a folder holding this project's tiny stand-in (its shape is the spec's tiny_config)."""
    config = read_json_object(folder / "config.json") or {}
    return all(config.get(key) == spec.tiny_config[key] for key in ("hidden_size", "num_hidden_layers"))


# What the save marker (ohlora_saved.json) says a folder holds: one kind never replaces the other.
ADAPTER = "adapter"
MERGED_MODEL = "merged model"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


class AdapterError(UserError):
    """The adapter folder is absent, corrupt, or made for another base model."""


def training_command(spec: ModelSpec, adapter_dir: Path) -> str:
    command = f"python {spec.training_script}"
    if Path(adapter_dir).resolve() != spec.adapter_dir.resolve():
        command += f" --output-dir {adapter_dir}"
    return command


def read_adapter(spec: ModelSpec, adapter_dir: Path) -> tuple[dict, set[str]]:
    """(adapter config, names of the saved tensors) once the folder is known to hold a readable adapter."""
    adapter_dir = Path(adapter_dir)
    remake = f"train it again with `{training_command(spec, adapter_dir)}`"
    if folder_is_empty(adapter_dir):
        checkpoints = adapter_dir.with_name(f"{adapter_dir.name}_checkpoints")
        if any(checkpoints.glob("checkpoint-*")):  # not just the settings a run writes before its first epoch
            raise AdapterError(f"no fine-tuned adapter in {adapter_dir} yet (an unfinished run left {checkpoints}): "
                               f"finish it with `{training_command(spec, adapter_dir)} --resume`")
        raise AdapterError(f"no fine-tuned adapter in {adapter_dir}: "
                           f"make one with `{training_command(spec, adapter_dir)}`")

    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterError(f"{adapter_dir}: {ADAPTER_CONFIG} is missing, so this is not a saved adapter; {remake}")
    config = read_json_object(config_path)
    if config is None:
        raise AdapterError(f"{config_path}: not a valid JSON object (corrupt adapter); {remake}")
    if not isinstance(config.get("peft_type"), str) or not config.get("target_modules"):
        raise AdapterError(f"{config_path}: no peft_type or target_modules, not a PEFT adapter config; {remake}")

    weights_path = adapter_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        found = " (only pickled .bin weights, which are not loaded)" if any(adapter_dir.glob("*.bin")) else ""
        raise AdapterError(f"{weights_path}: missing{found}; {remake}")
    try:
        # The header only (fast); framework numpy so that torch is not imported for it.
        with safe_open(str(weights_path), framework="numpy") as weights:
            keys = set(weights.keys())
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterError(f"{weights_path}: corrupt safetensors file ({error}); {remake}") from None
    if not keys:
        raise AdapterError(f"{weights_path}: holds no weights; {remake}")
    return config, keys
