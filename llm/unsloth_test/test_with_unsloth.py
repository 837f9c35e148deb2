"""Inference and LoRA fine-tuning of Gemma-2 2B measured WITH Unsloth: wall time and peak memory.

Usage: python llm/unsloth_test/test_with_unsloth.py --help
Needs a CUDA GPU of compute capability 7.0 or newer and `pip install -r requirements-unsloth.txt`.
Where Unsloth cannot run, it records an `unavailable: <reason>` row, prints the reason and exits with code 3.
Compare with test_without_unsloth.py: python llm/unsloth_test/compare.py

NOT TESTED on a GPU in this repository's development (no GPU was available): only the unavailable path
runs in the tests. The Unsloth calls follow its documented API (FastLanguageModel.from_pretrained,
get_peft_model, for_inference, for_training) of the version pinned in requirements-unsloth.txt.
"""

import importlib.util
from pathlib import Path

import torch

MIN_CAPABILITY = (7, 0)  # Unsloth's Triton kernels need Volta or newer


def unsloth_unavailable() -> str | None:
    """Why Unsloth cannot run here, or None; imports it when it can."""
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install -r requirements-unsloth.txt, on a machine with a CUDA GPU)"
    if not torch.cuda.is_available():
        return "no CUDA GPU (Unsloth runs on NVIDIA GPUs only)"
    major, minor = torch.cuda.get_device_capability(0)
    if (major, minor) < MIN_CAPABILITY:
        return (f"GPU too old: {torch.cuda.get_device_name(0)} has compute capability {major}.{minor}, "
                f"Unsloth needs {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer")
    try:
        import unsloth  # noqa: F401
    except Exception as error:  # its import checks the driver, the GPU and library versions
        text = str(error).strip()
        return f"unsloth failed to import ({text.splitlines()[0] if text else type(error).__name__})"
    return None


# Before llm.common imports transformers, peft and trl: Unsloth patches them when it is imported first.
UNAVAILABLE = unsloth_unavailable()

from peft import LoraConfig  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from llm.common.cli import run_main  # noqa: E402
from llm.common.models import load_tokenizer, prepare_tokenizer, save_in_hub_layout  # noqa: E402
from llm.unsloth_test import bench  # noqa: E402
from llm.common.specs import Recipe


def load_with_unsloth(subject: bench.Subject, device: str, dtype: torch.dtype,
                      workdir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Unsloth loads from a folder: the weights, the tiny stand-in, or a random full-size model saved first."""
    from unsloth import FastLanguageModel

    folder = subject.weights_dir
    if folder is None:  # --shape: build the random model as the without-script does, then save it for Unsloth
        tokenizer = load_tokenizer(subject.tokenizer_dir)
        model = bench.build_full_size(subject.spec, tokenizer, device, dtype)
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


UNSLOTH = bench.Backend("with", load_with_unsloth, attach_lora_with_unsloth, prepare_inference_with_unsloth,
                        bench.LIBRARIES + ("unsloth", "unsloth_zoo"))


def main() -> int:
    if UNAVAILABLE is not None:
        return bench.record_unavailable(UNAVAILABLE)
    return bench.run(UNSLOTH)


if __name__ == "__main__":
    run_main(main)
