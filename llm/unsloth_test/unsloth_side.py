"""Unsloth's side of the measurement: loading, LoRA and inference mode through Unsloth's API.

Imported only once llm.unsloth_test.unsloth_unavailable() has imported unsloth (it must patch transformers,
peft and trl before they load). The calls follow Unsloth's documented API (FastLanguageModel.from_pretrained,
get_peft_model, for_inference, for_training) of the version pinned in requirements-unsloth.txt; their argument
names were checked against unsloth 2026.10.9's source, and a whole run went through with its CPU fallback and
transformers 5.17 and trl 1.15: docs/gpu.md. On an H200 with torch 2.11 its inference ran and its fine-tuning
failed in Unsloth's per-block torch.compile: block_compile_hint.
"""

import os
from pathlib import Path

import torch
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm.common.models import build_full_size, load_tokenizer, prepare_tokenizer, save_in_hub_layout
from llm.common.specs import Recipe
from llm.unsloth_test import WITH, bench


def load_with_unsloth(subject: bench.Subject, device: str, dtype: torch.dtype,
                      workdir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Unsloth loads from a folder: the weights, the tiny stand-in, or a random full-size model saved first."""
    from unsloth import FastLanguageModel

    folder = subject.weights_dir
    if folder is None:  # --shape: build the random model as the without-script does, then save it for Unsloth
        tokenizer = load_tokenizer(subject.tokenizer_dir)
        model = build_full_size(subject.spec, tokenizer, device, dtype)
        folder = workdir / "full_size_random"
        save_in_hub_layout(model, tokenizer, folder)
        del model
        torch.cuda.empty_cache()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(folder), max_seq_length=bench.SEQ_LENGTH, dtype=dtype,
        load_in_4bit=False,  # the same 16-bit weights as without Unsloth, not QLoRA
        fix_tokenizer=False, use_exact_model_name=True, trust_remote_code=False,
    )
    prepare_tokenizer(tokenizer)  # the same padding and pad token as without Unsloth
    return model, tokenizer


def attach_lora_with_unsloth(model: PreTrainedModel, config: LoraConfig,
                             recipe: Recipe) -> tuple[PreTrainedModel, None]:
    """The same LoRA settings through Unsloth, with its own gradient checkpointing (its default)."""
    from unsloth import FastLanguageModel

    model = FastLanguageModel.get_peft_model(
        model, r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=sorted(config.target_modules), init_lora_weights=config.init_lora_weights,
        bias=config.bias, use_gradient_checkpointing="unsloth", random_state=recipe.seed,
    )
    FastLanguageModel.for_training(model)  # undo for_inference from the inference part
    return model, None


def prepare_inference_with_unsloth(model: PreTrainedModel) -> None:
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)


def block_compile_hint(error: BaseException) -> str | None:
    """Unsloth compiles each decoder block; with torch 2.11 the backward of Gemma-2's failed to compile."""
    if type(error).__name__ != "InductorError" or os.environ.get("UNSLOTH_BLOCK_COMPILE") == "0":
        return None
    return ("hint: torch.compile failed inside Unsloth's compiled decoder blocks (seen with torch 2.11 on an H200; "
            "like pytorch/pytorch#181735); run again with --no-block-compile to measure Unsloth without that compile")


UNSLOTH = bench.Side(WITH, load_with_unsloth, attach_lora_with_unsloth, prepare_inference_with_unsloth,
                        bench.LIBRARIES + ("unsloth", "unsloth_zoo"), block_compile_hint)
