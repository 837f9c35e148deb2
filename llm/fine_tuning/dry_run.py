"""`--dry-run`: what a fine-tuning run would need, printed before anything heavy loads (no torch, no model)."""

import dataclasses
import shutil
import subprocess
from pathlib import Path

from llm.common.data import Splits, load_splits
from llm.common.folders import folder_is_empty
from llm.common.specs import DEFAULT_DATASET, MAX_LENGTH, ModelSpec, recipe_for
from llm.fine_tuning.benchmark.machine import peak_tflops_for
from llm.fine_tuning.estimate import Plan, memory, time
from llm.fine_tuning.options import FineTuningOptions

METHODS = {"none": "bf16", "4bit": "4bit", "8bit": "8bit"}


def visible_gpu() -> tuple[str, float] | None:
    """(name, memory in GiB) of the first GPU nvidia-smi lists, without torch; None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = result.stdout.strip().splitlines()[:1]
    if result.returncode != 0 or not first or "," not in first[0]:
        return None
    name, mib = first[0].rsplit(",", 1)
    return name.strip(), float(mib) / 1024


def row_lengths(spec: ModelSpec, model_dir: Path, splits: Splits) -> tuple[list[int], str]:
    """Each row's tokens (prompt, answer and the EOS the trainer adds), and whose tokenizer counted them."""
    from tokenizers import Tokenizer

    from llm.common.tiny_bpe import dataset_texts, tiny_bpe

    texts = dataset_texts(splits)
    if (model_dir / "tokenizer.json").is_file():
        tokenizer, whose = Tokenizer.from_file(str(model_dir / "tokenizer.json")), f"{model_dir}'s tokenizer"
    else:
        tokenizer, whose = tiny_bpe(spec, texts), "the stand-in's tokenizer; the real one may count otherwise"
    return [len(encoded.ids) + 1 for encoded in tokenizer.encode_batch(texts)], whose


def plan_for(spec: ModelSpec, options: FineTuningOptions, splits: Splits,
             model_dir: Path) -> tuple[Plan, int, str]:
    """What the options would run on a GPU with the real model, at the dataset's real lengths; the longest row, and
    whose tokenizer counted it. The recipe is the real model's: a run without weights trains the stand-in on its
    own."""
    recipe = recipe_for(False, **options.recipe)
    lengths, whose = row_lengths(spec, model_dir, splits)
    pad = options.speed.get("pad_to_length")
    plan = Plan(spec, "fp32" if options.speed.get("dtype") == "float32" else METHODS[options.quantization or "none"],
                batch=recipe.batch_size, rank=recipe.lora_rank, row_tokens=max(pad or 0, max(lengths)),
                mean_row_tokens=sum(lengths) / len(lengths), train_rows=len(splits.train),
                eval_rows=len(splits.valid_with_answers), test_prompts=len(splits.valid),
                test_batch=options.speed.get("test_batch_size", len(splits.valid)), epochs=recipe.epochs,
                gradient_checkpointing=options.gradient_checkpointing)
    return plan, max(lengths), whose


def _about(seconds: float) -> str:
    return f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"


def _epochs(count: int) -> str:
    return f"{count} epoch" + ("" if count == 1 else "s")


def estimate_line(plan: Plan, peak_tflops: float | None = None) -> str:
    """The estimate in one line, for the run's log header."""
    need, took = memory(plan), time(plan)
    return (f"{plan.spec.display_name} on a GPU, {plan.method} weights, batch {plan.batch}: peak "
            f"{need.peak:,.0f} MiB allocated (about {need.card_gib:.1f} GiB of the card), {_epochs(plan.epochs)} in "
            f"{_about(took.on(peak_tflops))} (docs/gpu.md; --dry-run details it)")


def dry_run(spec: ModelSpec, options: FineTuningOptions) -> int:
    model_dir = options.model_dir or spec.model_dir
    splits = load_splits(options.dataset or DEFAULT_DATASET)
    plan, longest, whose = plan_for(spec, options, splits, model_dir)
    need, took = memory(plan), time(plan)
    weights = "no weights there: this command would run the tiny stand-in on the CPU" \
        if folder_is_empty(model_dir) else "weights there"
    print(f"Oh-LoRA fine-tuning, dry run: {spec.display_name} ({model_dir}: {weights})")
    print(f"the estimate is for {spec.display_name} on a GPU: {plan.method} weights, LoRA r={plan.rank} on "
          f"{', '.join(spec.lora_targets)}, batch {plan.batch}, {plan.epochs} epochs, gradient checkpointing "
          f"{'on' if plan.gradient_checkpointing else 'off'}")
    print(f"dataset: {len(splits.train)} train rows, {len(splits.valid)} valid; tokens per row: mean "
          f"{plan.mean_row_tokens:.0f}, longest {longest} (counted by {whose})")
    if longest - 1 > MAX_LENGTH:  # the count holds the EOS the trainer adds; a chat stops at the end marker
        print(f"the longest row is over the {MAX_LENGTH} tokens a chat gives a prompt and its answer: answers "
              f"that long are cut before their end marker in chat (shorten them, or raise MAX_LENGTH in "
              f"llm/common/specs.py)")
    print(f"peak GPU memory: {need.peak:,.0f} MiB allocated (weights {need.weights:,.0f}, LoRA with its gradients "
          f"and Adam {need.lora_state:,.0f}, a step's activations {need.activations:,.0f}, logits {need.logits:,.0f}; "
          f"the per-epoch test's KV cache {need.test_cache:,.0f}), about {need.card_gib:.1f} GiB of the card with "
          f"PyTorch's cache and the CUDA context")
    if need.test > need.training and plan.test_batch > 16:
        smaller = memory(dataclasses.replace(plan, test_batch=16))
        print(f"the per-epoch test is the peak: with --test-batch-size 16 it would be {smaller.peak:,.0f} MiB")
    gpu = visible_gpu()
    peak = peak_tflops_for(gpu[0]) if gpu else None
    if gpu:
        print(f"this machine: {gpu[0]}, {gpu[1]:.0f} GiB: {'fits' if need.fits(gpu[1]) else 'does NOT fit'}")
    else:
        print("this machine: no NVIDIA GPU found (nvidia-smi)")
    print(f"time for {_epochs(plan.epochs)}: {_about(took.on(peak))} where kernel launches bind, as "
          f"measured on an H200; the arithmetic alone ({took.compute_tflop:,.0f} TFLOP) takes "
          f"{took.compute_tflop / (0.4 * (peak or 100)):,.0f} s at 40 % of {peak or 100:g} TFLOP/s"
          + ("" if peak else " (this card's peak is not known here)"))
    print("how the estimate is made and how far off it was from what was measured: docs/gpu.md")
    return 0
