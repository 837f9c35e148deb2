"""Base models: loading local weights (checked first), and the built-in tiny stand-ins."""

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from llm.common.cli import TRUST_PICKLED_OPTION, UserError, first_line
from llm.common.data import Splits, check_fits_context
from llm.common.folders import folder_is_empty, missing_config_hint
from llm.common.specs import MODELS_DIR, TINY_CONTEXT, ModelSpec
from llm.common.tiny_bpe import TINY_VOCAB_SIZE, dataset_texts, tiny_bpe

DEFAULT_TINY_CACHE_DIR = MODELS_DIR / "tiny"
TINY_SEED = 20250218
# With the default init (std 0.02) the final LayerNorm caps a random readout's logits near 2.6, so LoRA
# could never make the stand-in confident; a 10x readout lifts the cap (measured: README, tiny model).
TINY_READOUT_SCALE = 10.0


class ModelFolderError(UserError):
    """A weights folder exists but cannot be used."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_dir: Path
    is_tiny: bool


PICKLED_WEIGHTS = "pytorch_model.bin"
PICKLED_INDEX = "pytorch_model.bin.index.json"


def _shard_names(index_path: Path) -> list[str]:
    """The files an index (safetensors or pickled) maps the weights to."""
    try:
        return sorted(set(json.loads(index_path.read_text(encoding="utf-8"))["weight_map"].values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        raise ModelFolderError(f"{index_path}: not a valid weights index (no weight_map)") from None


def _weight_files(model_dir: Path, trust_pickled: bool) -> tuple[list[str], Path | None, bool]:
    """(weight file names, the index naming them or None, pickled?); safetensors win when both are there."""
    for index_name, single_name, pickled in (("model.safetensors.index.json", "model.safetensors", False),
                                              (PICKLED_INDEX, PICKLED_WEIGHTS, True)):
        index_path = model_dir / index_name
        if index_path.is_file() or (model_dir / single_name).is_file():
            if pickled and not trust_pickled:
                raise ModelFolderError(
                    f"{model_dir}: only pickled .bin weights, which can run code when loaded and are not loaded "
                    f"by default; download the .safetensors files, or add {TRUST_PICKLED_OPTION} if you trust "
                    f"their source")
            if index_path.is_file():
                return _shard_names(index_path), index_path, pickled
            return [single_name], None, pickled
    raise ModelFolderError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def check_model_folder(spec: ModelSpec, model_dir: Path, trust_pickled: bool = False) -> bool:
    """Stop with a message naming the missing or bad file, before transformers tries to load it.

    Returns whether the weights are pickled (only possible with trust_pickled).
    """
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ModelFolderError(f"{model_dir}: config.json is missing{missing_config_hint(model_dir)}")
    try:
        model_type = json.loads(config_path.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise ModelFolderError(f"{config_path}: not a valid JSON config") from None
    if model_type != spec.architecture:
        raise ModelFolderError(
            f"{config_path}: model_type {model_type!r}, but {spec.display_name} needs {spec.architecture!r}"
        )

    shard_names, index_path, pickled = _weight_files(model_dir, trust_pickled)
    for shard_name in shard_names:
        shard_path = model_dir / shard_name
        if not shard_path.is_file():
            raise ModelFolderError(f"{shard_path}: listed in {index_path.name} but missing; download it again")
        if pickled:
            # torch.save writes a zip archive; checking that reads no pickle.
            if not zipfile.is_zipfile(shard_path):
                raise ModelFolderError(f"{shard_path}: corrupt pickled weights (not a torch zip archive); "
                                       f"download it again")
            continue
        try:
            with safe_open(str(shard_path), framework="pt"):
                pass  # opening parses the header: enough to catch a truncated or foreign file
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFolderError(f"{shard_path}: corrupt safetensors file ({error}); download it again") from None

    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        raise ModelFolderError(f"{model_dir}: tokenizer.json (or tokenizer.model) is missing "
                               f"(see llm/models/README.md for the file list)")
    return pickled


def quantization_config(quantization: str, compute_dtype: torch.dtype):
    """bitsandbytes' settings: QLoRA's NF4 with double quantisation, computed in `compute_dtype`; or LLM.int8()."""
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute_dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def load_local(spec: ModelSpec, model_dir: Path, device: str, dtype: torch.dtype,
               trust_pickled: bool = False, quantization: str = "none") -> LoadedModel:
    """Load weights and tokenizer from a folder in the Hugging Face layout; never runs remote code.

    Pickled weights load only with trust_pickled, and then through transformers' weights-only unpickler. With a
    quantization, the linear layers load in 4 or 8 bits (bitsandbytes) and the rest in `dtype`.
    """
    pickled = check_model_folder(spec, model_dir, trust_pickled)
    tokenizer = load_tokenizer(model_dir, read_config(model_dir).vocab_size)  # cheap: before the weights
    placement = {} if quantization == "none" else {
        "quantization_config": quantization_config(quantization, dtype), "device_map": {"": device}}
    try:
        with no_progress_bars():  # a bar per load would split the run's own lines; loading takes seconds
            model = AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=dtype, trust_remote_code=False, use_safetensors=not pickled, **placement,
                **spec.load_kwargs)
    except pickle.UnpicklingError:
        raise ModelFolderError(f"{model_dir}: the pickled weights hold more than tensors (objects that run code "
                               f"when unpickled); not loaded even with {TRUST_PICKLED_OPTION}") from None
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelFolderError(f"{model_dir}: cannot load ({first_line(error)})") from None
    if quantization == "4bit" and device == "cpu":
        _keep_trainable_layout(model)
    return LoadedModel(model if placement else model.to(device), tokenizer, model_dir, is_tiny=False)


def _keep_trainable_layout(model: PreTrainedModel) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for fast CPU inference at a layer's first eval-mode forward (on CPUs
    with AVX-512 bf16), and training fails on the repacked weights afterwards; a run here alternates both."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def read_config(model_dir: Path) -> PreTrainedConfig:
    """The folder's model config (vocabulary size, context length), without the weights."""
    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise ModelFolderError(f"{model_dir / 'config.json'}: cannot read ({first_line(error)})") from None


def load_tokenizer(model_dir: Path, vocab_size: int | None = None) -> PreTrainedTokenizerBase:
    """The folder's tokenizer, prepared for the pipeline; with vocab_size, checked to fit the model's embeddings."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise ModelFolderError(f"{model_dir}: cannot load the tokenizer ({first_line(error)})") from None
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ModelFolderError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but config.json's vocab_size is {vocab_size}; "
            f"tokenizer and weights come from different models, download both from the same repo")
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Settings the pipeline relies on, for real and tiny tokenizers alike."""
    # Polyglot's tokenizer also returns token_type_ids, which GPT-NeoX's forward does not take.
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left


def build_tiny_tokenizer(spec: ModelSpec, texts: list[str]) -> PreTrainedTokenizerFast:
    """The stand-in's byte-level BPE (tiny_bpe) as a transformers tokenizer."""
    return PreTrainedTokenizerFast(tokenizer_object=tiny_bpe(spec, texts), model_max_length=TINY_CONTEXT,
                                   **spec.special_tokens)


def build_tiny_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A randomly initialised model of the spec's architecture, small enough to train on 2 CPU cores."""
    config = spec.config_class()(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec.tiny_config,
    )
    torch.manual_seed(TINY_SEED)
    model = AutoModelForCausalLM.from_config(config, **spec.load_kwargs)
    if not config.tie_word_embeddings:
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(TINY_READOUT_SCALE)
    return model


def save_in_hub_layout(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path,
                       max_shard_size: str | int = "5GB") -> None:
    """Save like the Hugging Face repos: config, (sharded) safetensors with index, tokenizer files."""
    model.save_pretrained(folder, safe_serialization=True, max_shard_size=max_shard_size)
    tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def full_size_config(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase) -> PreTrainedConfig:
    """The real model's config, with the special-token ids of the tokenizer that drives it."""
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    return spec.config_class()(**(spec.full_config | ids))


def build_full_size(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, device: str,
                    dtype: torch.dtype) -> PreTrainedModel:
    """A randomly initialised model of the real model's full size (the benchmarks' `--shape`), created directly
    in `dtype` on `device`: time and memory at real scale without weights."""
    with torch.device(device):  # no copy in another dtype or on another device on the way
        return AutoModelForCausalLM.from_config(full_size_config(spec, tokenizer), dtype=dtype, **spec.load_kwargs)


def tiny_model_dir(spec: ModelSpec, splits: Splits) -> Path:
    """The cache folder of the tiny model, keyed by everything that shapes it: dataset, config, seed, scale."""
    recipe = json.dumps([spec.tiny_config, spec.special_tokens, TINY_SEED, TINY_VOCAB_SIZE, TINY_READOUT_SCALE],
                        sort_keys=True)
    digest = hashlib.sha256("\n".join([recipe, *dataset_texts(splits)]).encode("utf-8")).hexdigest()[:12]
    # Read when needed, not at import: tests point it elsewhere so that they never touch llm/models/.
    cache = Path(os.environ.get("OHLORA_TINY_CACHE", DEFAULT_TINY_CACHE_DIR))
    return cache / f"{spec.name}-{digest}"


def ensure_tiny_model(spec: ModelSpec, splits: Splits) -> Path:
    """Build (once, deterministically) and cache the tiny stand-in; return its folder."""
    folder = tiny_model_dir(spec, splits)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = build_tiny_tokenizer(spec, dataset_texts(splits))
    check_fits_context(splits, tokenizer, TINY_CONTEXT)  # a row too long is refused before anything is built
    model = build_tiny_model(spec, tokenizer)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        with no_progress_bars():  # a second's work, not worth a bar on screen
            save_in_hub_layout(model, tokenizer, staging)
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (folder / "config.json").is_file():  # another process may have won the race
            raise
    return folder


def base_folder(spec: ModelSpec, model_dir: Path, splits: Splits) -> Path:
    """The weights folder when it has files; the tiny stand-in's (built if needed) when it is absent or empty."""
    return model_dir if not folder_is_empty(model_dir) else ensure_tiny_model(spec, splits)


def tiny_notice(spec: ModelSpec, model_dir: Path, tiny_dir: Path) -> str:
    """The loud notice printed (and logged) whenever a run uses the stand-in. Each folder has a line of its own,
    so that a long path does not push the words past the edge of a terminal."""
    bar = "!" * 78
    return (
        f"{bar}\n"
        f"!! NOTICE: no {spec.display_name} weights in\n"
        f"!!   {model_dir}\n"
        f"!! Running on a TINY RANDOMLY INITIALISED {spec.architecture} stand-in built by this project,\n"
        f"!!   {tiny_dir}\n"
        f"!! The pipeline is real; the answers are not Oh-LoRA's. For a real run, put the downloaded weights\n"
        f"!! in the first folder (see llm/models/README.md).\n"
        f"{bar}"
    )
