"""LoRA supervised fine-tuning with TRL: the recipe as LoraConfig and SFTConfig, and the one SFTTrainer builder."""

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import datasets
import torch
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from trl import SFTConfig, SFTTrainer

from llm.common.data import Example, to_prompt_completion
from llm.common.folders import ADAPTER
from llm.common.outputs import save_folder_atomically
from llm.common.specs import ModelSpec, Recipe

datasets.disable_progress_bars()  # TRL's tokenizing of a few hundred rows takes milliseconds: no bars for it
# transformers 5.18+ names it activation_checkpointing; before (transformers 5.17 with trl 1.15, as on the GPU
# machine and in requirements-unsloth.txt) only gradient_checkpointing, which TRL turns on by default too.
_CHECKPOINTING = "activation_checkpointing" if "activation_checkpointing" in {
    field.name for field in dataclasses.fields(SFTConfig)} else "gradient_checkpointing"


def lora_config(spec: ModelSpec, recipe: Recipe) -> LoraConfig:
    return LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=list(spec.lora_targets) or None,  # None: peft picks the modules by model_type
        task_type="CAUSAL_LM",
    )


def sft_config(recipe: Recipe, output_dir: Path, device: str, dtype: torch.dtype, has_eval: bool,
               gradient_checkpointing: bool = False, **overrides) -> SFTConfig:
    """The recipe as TRL arguments; `overrides` are passed through (e.g. save_strategy="no")."""
    settings = dict(
        output_dir=str(output_dir),
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.eval_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        logging_steps=recipe.logging_steps,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",
        save_total_limit=recipe.checkpoints_kept,
        seed=recipe.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=device == "cpu",  # also what makes torchrun on CPU run data parallel over gloo
        completion_only_loss=True,  # loss on the answer only: prompt tokens get label -100
        max_length=None,  # never truncate: rows longer than the model's context are refused beforehand
        report_to="none",
        dataloader_num_workers=0,
    )
    # TRL turns it on by default; off, the recipe keeps every activation (faster), on, it recomputes them (less memory).
    settings[_CHECKPOINTING] = gradient_checkpointing
    if gradient_checkpointing:
        settings[_CHECKPOINTING + "_kwargs"] = {"use_reentrant": False}  # PyTorch's recommended variant
    return SFTConfig(**(settings | overrides))


class QuietSFTTrainer(SFTTrainer):
    """SFTTrainer whose steps never wait for the GPU: the loss as transformers' Trainer computes it (the same
    cross-entropy over the completion's tokens), without TRL's per-step token accuracy and entropy, which copy
    values to the host at every step. The loss itself reaches the host only when a line is logged."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)


class BarsWithoutLogDicts(ProgressCallback):
    """transformers' progress bars, without the dict of every logged value it writes on stdout (`{'loss': ...}`):
    each program here reports what it measured in its own words, and keeps the values in its log or results."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def build_trainer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, recipe: Recipe,
                  peft_config: LoraConfig | None, train: Sequence[Example], evals: Sequence[Example],
                  output_dir: Path, device: str, dtype: torch.dtype,
                  callbacks: Sequence[TrainerCallback] = (), quiet_steps: bool = False,
                  gradient_checkpointing: bool = False, progress: TrainerCallback | None = None,
                  **overrides) -> SFTTrainer:
    """The SFTTrainer of every program here: prompt/completion pairs, loss on the completion only.

    peft_config None: LoRA is attached already (Unsloth attaches its own). quiet_steps: QuietSFTTrainer.
    progress: the callback that reports progress in place of transformers' own (default: its bars without the
    dicts, unless disable_tqdm).
    """
    trainer = (QuietSFTTrainer if quiet_steps else SFTTrainer)(
        model=model,
        args=sft_config(recipe, output_dir, device, dtype, bool(evals), gradient_checkpointing, **overrides),
        train_dataset=to_prompt_completion(list(train)),
        eval_dataset=to_prompt_completion(list(evals)) if evals else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=list(callbacks),
    )
    for printer in (ProgressCallback, PrinterCallback):  # PrinterCallback is what disable_tqdm puts instead
        trainer.remove_callback(printer)
    if progress is not None:
        trainer.add_callback(progress)
    elif not trainer.args.disable_tqdm:
        trainer.add_callback(BarsWithoutLogDicts())
    return trainer


def save_adapter_atomically(model: PeftModel, tokenizer: PreTrainedTokenizerBase, adapter_dir: Path,
                            quantization: str = "none") -> None:
    """Write beside, then rename: an interruption leaves the previous adapter or the new one, never half of one.
    The marker records how the base's weights were held while it trained."""
    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    save_folder_atomically(adapter_dir, write, ADAPTER, info={"quantization": quantization})
