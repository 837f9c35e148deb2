"""A saved LoRA adapter on its base model, ready to answer; every way the adapter folder can be wrong is one line."""

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors import SafetensorError
from transformers import AutoTokenizer

from llm.common.cli import first_line, ignore_library_notices, to_stderr
from llm.common.folders import (
    ADAPTER_CONFIG, AdapterError, folder_is_empty, folder_model_type, is_tiny_stand_in, read_adapter, training_command,
)
from llm.common.models import LoadedModel, load_local, tiny_notice
from llm.common.specs import SPECS, ModelSpec


def _trained_base(config: dict) -> Path | None:
    """The base folder the adapter was trained on, as peft recorded it (None if it recorded none)."""
    name = config.get("base_model_name_or_path")
    return Path(name) if isinstance(name, str) and name.strip() else None


def _check_architecture(spec: ModelSpec, adapter_dir: Path, trained_on: Path | None) -> None:
    """An adapter whose recorded base still exists and is another architecture names the right --model."""
    model_type = folder_model_type(trained_on) if trained_on is not None else None
    if model_type is None or model_type == spec.architecture:
        return
    other = next((f"; use --model {s.name}" for s in SPECS.values() if s.architecture == model_type), "")
    raise AdapterError(f"{adapter_dir}: trained on a {model_type} model ({trained_on}), "
                       f"not {spec.display_name} ({spec.architecture}){other}")


def _stand_in_dir(spec: ModelSpec, model_dir: Path, adapter_dir: Path, trained_on: Path | None) -> Path:
    """With no weights in model_dir, the base is the folder the adapter was trained on (usually the tiny stand-in)."""
    if trained_on is None or not (trained_on / "config.json").is_file():
        where = f"and the base it was trained on ({trained_on}) is gone" if trained_on else \
            f"and {adapter_dir / ADAPTER_CONFIG} names no base model"
        raise AdapterError(f"no {spec.display_name} weights in {model_dir}, {where}: put the weights there, "
                           f"or train again with `{training_command(spec, adapter_dir)}`")
    return trained_on


def _check_tokenizer(spec: ModelSpec, adapter_dir: Path, base: LoadedModel, trained_on: Path | None) -> None:
    """The tokenizer saved beside the adapter must be the base's: token ids mean nothing on another vocabulary."""
    if not (adapter_dir / "tokenizer.json").is_file() and not (adapter_dir / "tokenizer.model").is_file():
        return  # adapters saved without a tokenizer are checked by their weights only
    try:
        saved = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise AdapterError(f"{adapter_dir}: its saved tokenizer cannot be read ({error})") from None
    if saved.get_vocab() == base.tokenizer.get_vocab():
        return
    hint = " (the tiny stand-in): train again now that the weights are there" \
        if trained_on is not None and is_tiny_stand_in(spec, trained_on) and not base.is_tiny else ""
    raise AdapterError(f"{adapter_dir}: trained on another base model{hint}; its tokenizer differs from "
                       f"the one in {base.model_dir}")


def _check_weights_fit(spec: ModelSpec, adapter_dir: Path, model: PeftModel, saved_keys: set[str],
                       base: LoadedModel) -> None:
    """Every saved tensor must land in the model and every LoRA weight must come from the file
    (peft only warns about missing ones and ignores unexpected ones)."""
    expected = set(get_peft_model_state_dict(model))
    if expected == saved_keys:
        return
    missing, unexpected = sorted(expected - saved_keys), sorted(saved_keys - expected)
    example = (unexpected or missing)[0]
    raise AdapterError(f"{adapter_dir}: made for another base model: {len(unexpected)} saved weights have no place in "
                       f"{spec.display_name} ({base.model_dir}) and {len(missing)} are missing (e.g. {example})")


def load_fine_tuned(spec: ModelSpec, model_dir: Path, adapter_dir: Path, device: str, dtype: torch.dtype,
                    say: Callable[[str], None] | None = to_stderr, trust_pickled: bool = False) -> LoadedModel:
    """The base model with the saved adapter attached, in eval mode; AdapterError (one line) if it does not fit.

    When model_dir has no weights, the base is the one the adapter was trained on (the tiny stand-in, whose
    folder peft recorded in adapter_config.json); `say` gets the tiny notice then.
    """
    model_dir, adapter_dir = Path(model_dir), Path(adapter_dir)
    config, saved_keys = read_adapter(spec, adapter_dir)
    trained_on = _trained_base(config)
    _check_architecture(spec, adapter_dir, trained_on)
    if folder_is_empty(model_dir):
        base_dir = _stand_in_dir(spec, model_dir, adapter_dir, trained_on)
        base = load_local(spec, base_dir, device, dtype)
        base.is_tiny = is_tiny_stand_in(spec, base_dir)
        if say is not None:
            say(tiny_notice(spec, model_dir, base_dir) if base.is_tiny else
                f"no weights in {model_dir}: using {base_dir}, the base this adapter was trained on")
    else:
        base = load_local(spec, model_dir, device, dtype, trust_pickled)
    _check_tokenizer(spec, adapter_dir, base, trained_on)
    try:
        with warnings.catch_warnings():
            ignore_library_notices()  # here too for callers that are not scripts
            # peft's missing-keys warning, which _check_weights_fit turns into a clear error.
            warnings.filterwarnings("ignore", message="Found missing adapter keys", category=UserWarning)
            model = PeftModel.from_pretrained(base.model, adapter_dir, is_trainable=False)
    except (ValueError, TypeError, KeyError, RuntimeError, OSError, SafetensorError) as error:
        raise AdapterError(f"{adapter_dir}: does not fit {spec.display_name} in {base.model_dir} "
                           f"({first_line(error)[:300]})") from None
    _check_weights_fit(spec, adapter_dir, model, saved_keys, base)
    model.eval()
    return LoadedModel(model, base.tokenizer, base.model_dir, base.is_tiny)
