"""LoRA supervised fine-tuning with TRL: the configs, the per-epoch test callback, atomic saving."""

import difflib
import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import SFTConfig

from llm.common.data import Example
from llm.common.inference import Answer, generate_answers
from llm.common.markers import printable_line
from llm.common.specs import ModelSpec, Recipe


def lora_config(spec: ModelSpec, recipe: Recipe) -> LoraConfig:
    return LoraConfig(
        r=recipe.lora_rank,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        init_lora_weights="gaussian",
        target_modules=list(spec.lora_targets),
        task_type="CAUSAL_LM",
    )


def sft_config(recipe: Recipe, checkpoint_dir: Path, device: str, dtype: torch.dtype, has_eval: bool,
               max_length: int, **overrides) -> SFTConfig:
    """The recipe as TRL arguments; `overrides` are passed through (e.g. save_strategy="no")."""
    settings = dict(
        output_dir=str(checkpoint_dir),
        num_train_epochs=recipe.epochs,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.eval_batch_size,
        learning_rate=recipe.learning_rate,
        logging_steps=recipe.logging_steps,
        eval_strategy="epoch" if has_eval else "no",
        save_strategy="epoch",
        save_total_limit=recipe.checkpoints_kept,
        seed=recipe.seed,
        bf16=dtype == torch.bfloat16,
        use_cpu=device == "cpu",  # also what makes torchrun on CPU run data parallel over gloo
        completion_only_loss=True,  # loss on the answer only: prompt tokens get label -100
        max_length=max_length,
        report_to="none",
        dataloader_num_workers=0,
        activation_checkpointing=False,  # TRL turns it on by default; LoRA at these sizes does not need it
    )
    return SFTConfig(**(settings | overrides))


def format_answers(title: str, answers: list[Answer]) -> str:
    """The block a log shows for one inference test."""
    lines = [f"=== {title} ==="]
    for number, answer in enumerate(answers, start=1):
        lines.append(f"[{number}/{len(answers)}] prompt: {answer.user_input}")
        lines.append(f"    answer: {printable_line(answer.text)}")
        lines.append(f"    (trials: {answer.trials}, output tokens: {answer.output_tokens}, "
                     f"{'stopped at end marker' if answer.stopped else 'hit the length limit'})")
    return "\n".join(lines)


class ValidPromptTest(TrainerCallback):
    """After every epoch, answer all valid prompts (sampling) and print them into the log."""

    def __init__(self, valid_inputs: list[str], recipe: Recipe) -> None:
        self.valid_inputs = valid_inputs
        self.recipe = recipe

    def on_epoch_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        epoch = round(state.epoch)
        torch.manual_seed(self.recipe.seed + epoch)
        answers = generate_answers(
            model, processing_class, self.valid_inputs, temperature=self.recipe.temperature,
            max_trials=self.recipe.max_trials, progress=f"epoch {epoch} test",
        )
        print(format_answers(
            f"inference test after epoch {epoch}/{round(args.num_train_epochs)} "
            f"({len(answers)} valid prompts, temperature {self.recipe.temperature})", answers))


def match_report(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: list[Example]) -> str:
    """How close greedy answers to train prompts come to the dataset's: exact matches, mean similarity, stops."""
    answers = generate_answers(model, tokenizer, [example.input_data for example in examples])
    exact = sum(answer.text == example.output_data for answer, example in zip(answers, examples))
    similarity = sum(
        difflib.SequenceMatcher(None, answer.text, example.output_data, autojunk=False).ratio()
        for answer, example in zip(answers, examples)
    ) / len(examples)
    stopped = sum(answer.stopped for answer in answers)
    return (f"exact {exact}/{len(examples)}, mean character similarity {similarity:.3f}, "
            f"ended at the end marker {stopped}/{len(examples)}")


def save_adapter_atomically(model: PeftModel, tokenizer: PreTrainedTokenizerBase, adapter_dir: Path) -> None:
    """Write beside, then rename: a crash leaves the previous adapter or none, never half of one."""
    adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{adapter_dir.name}.saving-", dir=adapter_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        previous = None
        if adapter_dir.exists():
            previous = adapter_dir.with_name(f".{adapter_dir.name}.previous-{os.getpid()}")
            adapter_dir.rename(previous)
        staging.rename(adapter_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
