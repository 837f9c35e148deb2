"""Tiny stand-ins saved as downloads are laid out, and the ways such a folder can be broken."""

import json
from pathlib import Path

from llm.common.models import build_tiny_model, build_tiny_tokenizer, prepare_tokenizer, save_in_hub_layout


def tiny_model(spec, splits):
    """A tiny stand-in and its tokenizer built in memory from the splits (not cached)."""
    tokenizer = build_tiny_tokenizer(spec, [e.prompt + e.completion for e in splits.train + splits.valid])
    prepare_tokenizer(tokenizer)
    return build_tiny_model(spec, tokenizer), tokenizer


def hub_folder(spec, splits, folder: Path, max_shard_size="300KB") -> Path:
    """A stand-in saved exactly like a downloaded Hugging Face repo (sharded when small shards are asked for)."""
    model, tokenizer = tiny_model(spec, splits)
    save_in_hub_layout(model, tokenizer, folder, max_shard_size=max_shard_size)
    return folder


def break_folder(folder: Path, how: str) -> str:
    index_path = folder / "model.safetensors.index.json"
    first_shard = sorted(folder.glob("model-*.safetensors"))[0]
    if how == "no config":
        (folder / "config.json").unlink()
        return r"config\.json is missing"
    if how == "other architecture":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
        return r"model_type 'llama', but Polyglot-Ko 1\.3B needs 'gpt_neox'"
    if how == "shard missing":
        first_shard.unlink()
        return rf"{first_shard.name}: listed in model\.safetensors\.index\.json but missing"
    if how == "corrupt shard":
        first_shard.write_bytes(first_shard.read_bytes()[:100])
        return rf"{first_shard.name}: corrupt safetensors file"
    if how == "no weights":
        index_path.unlink()
        for shard in folder.glob("model-*.safetensors"):
            shard.unlink()
        return r"no model\.safetensors or model\.safetensors\.index\.json"
    if how == "only pickled weights":
        index_path.unlink()
        for shard in folder.glob("model-*.safetensors"):
            shard.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"not loaded")
        return r"only pickled \.bin weights"
    if how == "no tokenizer":
        (folder / "tokenizer.json").unlink()
        return r"tokenizer\.json \(or tokenizer\.model\) is missing"
    raise AssertionError(how)


BREAKAGES = ["no config", "other architecture", "shard missing", "corrupt shard", "no weights",
             "only pickled weights", "no tokenizer"]

