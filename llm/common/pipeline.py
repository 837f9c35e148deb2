"""The fine-tuning run that both run_fine_tuning*.py scripts share: arguments in, adapter and log out."""

import argparse
import contextlib
import io
import dataclasses
import platform
import shutil
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import set_seed
from trl import SFTTrainer

from llm.common.adapters import load_fine_tuned
from llm.common.cli import ArgumentParser, UserError, positive_float, positive_int
from llm.common.data import Splits, load_splits, to_prompt_completion
from llm.common.inference import generate_answers
from llm.common.logs import RunLog, log_file_path, plot_losses
from llm.common.models import (
    LoadedModel, check_model_folder, folder_is_empty, load_base_model, pick_device, tiny_notice,
)
from llm.common.training import (
    ValidPromptTest, match_report, format_answers, lora_config, save_adapter_atomically, sft_config,
)
from llm.common.specs import DEFAULT_DATASET, TINY_EPOCHS, TINY_LEARNING_RATE, ModelSpec, Recipe

MATCH_PROBE_SIZE = 40  # train prompts answered greedily before and after training
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def build_parser(spec: ModelSpec) -> argparse.ArgumentParser:
    recipe = Recipe()
    parser = ArgumentParser(
        description=f"LoRA fine-tuning of {spec.display_name} into the Oh-LoRA persona. Without weights in "
                    f"--model-dir it runs on a tiny stand-in model of the same architecture, and says so.",
    )
    parser.add_argument("--model-dir", type=Path, default=spec.model_dir, help="folder with the base weights (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the dataset CSV (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=spec.adapter_dir, help="where the adapter is saved (default: %(default)s)")
    parser.add_argument("--logs-dir", type=Path, default=spec.logs_dir, help="where the log and plot go (default: %(default)s)")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help=f"training epochs (default {recipe.epochs}; {TINY_EPOCHS} on the tiny stand-in)")
    parser.add_argument("--lora-rank", type=positive_int, default=recipe.lora_rank, help="LoRA rank r (default: %(default)s)")
    parser.add_argument("--learning-rate", type=positive_float, default=None,
                        help=f"learning rate (default {recipe.learning_rate}; {TINY_LEARNING_RATE} on the tiny stand-in)")
    parser.add_argument("--batch-size", type=positive_int, default=recipe.batch_size, help="train batch size per device (default: %(default)s)")
    parser.add_argument("--temperature", type=positive_float, default=recipe.temperature,
                        help="sampling temperature of the per-epoch valid-prompt test (default: %(default)s)")
    parser.add_argument("--max-trials", type=positive_int, default=recipe.max_trials,
                        help="generations per prompt while the answer is empty (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=recipe.seed, help="random seed (default: %(default)s)")
    parser.add_argument("--log-name", default=None, help="appended to the log file name as ' (TEXT)'")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest checkpoint of an interrupted run")
    return parser


def checkpoint_dir_for(adapter_dir: Path) -> Path:
    return adapter_dir.with_name(f"{adapter_dir.name}_checkpoints")


def _latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    checkpoints = [path for path in checkpoint_dir.glob("checkpoint-*") if path.name.split("-")[-1].isdigit()]
    return max(checkpoints, key=lambda path: int(path.name.split("-")[-1]), default=None)


def _header(spec: ModelSpec, loaded: LoadedModel, splits: Splits, recipe: Recipe, args: argparse.Namespace,
            device: str, dtype: torch.dtype, world_size: int) -> str:
    versions = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    lines = [
        f"Oh-LoRA fine-tuning: {spec.display_name}" + (" (TINY STAND-IN)" if loaded.is_tiny else ""),
        f"model folder: {args.model_dir}" + (f" (empty; stand-in loaded from {loaded.model_dir})" if loaded.is_tiny else ""),
        f"dataset: {splits.path} ({len(splits.train)} train rows, {len(splits.valid)} valid rows, "
        f"{len(splits.valid_with_answers)} valid rows with answers for the eval loss)",
        f"adapter output: {args.output_dir}",
        "hyperparameters: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(recipe).items()),
        f"LoRA targets: {', '.join(spec.lora_targets)}",
        f"device: {device}, dtype: {str(dtype).removeprefix('torch.')}, processes: {world_size}",
        f"python {platform.python_version()}, {versions}",
        f"resume: {args.resume}",
    ]
    return "\n".join(lines)


def fine_tune(spec: ModelSpec, argv: list[str] | None = None) -> int:
    """Parse arguments, train, save the adapter, test the saved adapter; returns an exit code."""
    args = build_parser(spec).parse_args(argv)
    started = time.time()
    state = PartialState(cpu=not torch.cuda.is_available())
    is_main = state.is_main_process

    # Everything that can be wrong with the inputs is found before anything is written.
    splits = load_splits(args.dataset)
    if not folder_is_empty(args.model_dir):
        check_model_folder(spec, args.model_dir)
    checkpoint_dir = checkpoint_dir_for(args.output_dir)
    resume_from = _latest_checkpoint(checkpoint_dir)
    if args.resume and resume_from is None:
        raise UserError(f"--resume: no checkpoint in {checkpoint_dir} to continue from")
    if not args.resume and resume_from is not None:
        raise UserError(f"{checkpoint_dir} holds checkpoints of an unfinished run: "
                        f"add --resume to continue it, or delete that folder to start over")

    device, dtype = pick_device()
    with state.main_process_first():  # the first process builds the tiny stand-in, the others reuse it
        loaded = load_base_model(spec, args.model_dir, splits, device, dtype)
    recipe = Recipe(
        epochs=args.epochs or (TINY_EPOCHS if loaded.is_tiny else Recipe.epochs),
        lora_rank=args.lora_rank,
        learning_rate=args.learning_rate or (TINY_LEARNING_RATE if loaded.is_tiny else Recipe.learning_rate),
        batch_size=args.batch_size, temperature=args.temperature, seed=args.seed, max_trials=args.max_trials,
    )
    set_seed(recipe.seed)
    log_path = log_file_path(args.logs_dir, args.log_name)
    # Other processes run the same code but print nothing and write no log.
    with (RunLog(log_path) if is_main else contextlib.redirect_stdout(io.StringIO())):
        if loaded.is_tiny:
            print(tiny_notice(spec, args.model_dir, loaded.model_dir))
        print(_header(spec, loaded, splits, recipe, args, device, dtype, state.num_processes))
        probe = splits.train[:: max(1, len(splits.train) // MATCH_PROBE_SIZE)][:MATCH_PROBE_SIZE]
        if is_main:
            matches_before = match_report(loaded.model, loaded.tokenizer, probe)
            print(f"greedy answers to {len(probe)} train prompts vs the dataset, before training: {matches_before}")

        trainer = SFTTrainer(
            model=loaded.model,
            args=sft_config(recipe, checkpoint_dir, device, dtype, bool(splits.valid_with_answers),
                            max_length=loaded.model.config.max_position_embeddings),
            train_dataset=to_prompt_completion(splits.train),
            eval_dataset=to_prompt_completion(splits.valid_with_answers) if splits.valid_with_answers else None,
            processing_class=loaded.tokenizer,
            peft_config=lora_config(spec, recipe),
            callbacks=[ValidPromptTest([example.input_data for example in splits.valid], recipe)],
        )
        if resume_from is not None:
            print(f"resuming from {resume_from}")
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        steps_per_epoch = len(trainer.get_train_dataloader())
        print(f"[rank {state.process_index}/{state.num_processes}] trained {trainer.state.global_step} steps "
              f"({steps_per_epoch} per epoch), final train loss {result.training_loss:.4f}", file=sys.stderr)
        if not is_main:
            return 0

        save_adapter_atomically(trainer.model, loaded.tokenizer, args.output_dir)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run is complete: its checkpoints are spent
        print(f"adapter saved to {args.output_dir}")
        plot_path = log_path.with_suffix(".png")
        plot_losses(trainer.state.log_history, plot_path, f"{spec.display_name} LoRA fine-tuning")
        print(f"loss plot: {plot_path}")

        # Test what was saved, not what is in memory: a fresh base with the saved adapter, as the chat loads it.
        del trainer
        reloaded = load_fine_tuned(spec, args.model_dir, args.output_dir, device, dtype, say=None)
        valid_inputs = [example.input_data for example in splits.valid]
        for round_number in (1, 2):
            answers = generate_answers(reloaded.model, reloaded.tokenizer, valid_inputs,
                                       temperature=recipe.temperature, max_trials=recipe.max_trials,
                                       progress=f"final test {round_number}/2")
            print(format_answers(f"final test {round_number}/2 with the saved adapter "
                                 f"(temperature {recipe.temperature})", answers))
        print(f"greedy answers to {len(probe)} train prompts vs the dataset, after training: "
              f"{match_report(reloaded.model, reloaded.tokenizer, probe)} (before: {matches_before})")
        print(f"total time: {time.time() - started:.1f} s")
        print(f"log: {log_path}")
    return 0
