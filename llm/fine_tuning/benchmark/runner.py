"""One benchmark variant: a fresh model, trained by the fine-tuning program's own `train` with the variant's speed
options, timed epoch by epoch; its rows go to the CSV as they come."""

import contextlib
import gc
import os
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

import torch
from accelerate import PartialState
from peft import prepare_model_for_kbit_training

from llm.common.cli import error_line
from llm.common.data import Splits, check_fits_context
from llm.common.logs import NoLog
from llm.common.models import (
    LoadedModel, build_full_size, ensure_tiny_model, load_local, load_tokenizer, save_in_hub_layout,
)
from llm.common.specs import ModelSpec, recipe_for
from llm.fine_tuning import program, resume
from llm.fine_tuning.benchmark.compare import unavailable_in_comparison
from llm.fine_tuning.benchmark.flops import flops_per_token, matmul_parameters
from llm.fine_tuning.benchmark.machine import Machine
from llm.fine_tuning.benchmark.options import BenchmarkOptions
from llm.fine_tuning.benchmark.results import (
    STATUS_OK, EpochTimes, Outcome, Variant, append_row, epoch_line, epoch_row, projected, steady_epoch_seconds,
    total_row,
)
from llm.fine_tuning.benchmark.timing import EpochTimer
from llm.fine_tuning.options import FineTuningOptions
from llm.fine_tuning.speed import with_attention


def build_loaded(spec: ModelSpec, is_tiny: bool, splits: Splits, device: str, dtype, attn: str | None, seed: int,
                 quantization: str, work: Path) -> LoadedModel:
    """The model to train: the tiny stand-in (loaded as the scripts load it), or the full shape built at random
    (saved to `work` and loaded from there when it is to be quantised, as the scripts load weights)."""
    spec = with_attention(spec, attn)
    tiny_dir = ensure_tiny_model(spec, splits)  # the stand-in; its tokenizer drives the full shapes too
    if is_tiny:
        loaded = load_local(spec, tiny_dir, device, dtype, quantization=quantization)
        loaded.is_tiny = True
        return loaded
    tokenizer = load_tokenizer(tiny_dir)
    torch.manual_seed(seed)
    if quantization == "none":
        return LoadedModel(build_full_size(spec, tokenizer, device, dtype), tokenizer, tiny_dir, is_tiny=False)
    folder = work / "full_size_random"
    save_in_hub_layout(build_full_size(spec, tokenizer, "cpu", dtype), tokenizer, folder)
    return load_local(spec, folder, device, dtype, quantization=quantization)


@contextlib.contextmanager
def regional_compilation(on: bool):
    """The Trainer's torch_compile as accelerate's regional compilation, which the Trainer's own arguments cannot
    ask for: accelerate reads it from the environment when the Trainer makes its TorchDynamoPlugin.

    Regional, because compiling the whole model would take in TRL's fused LM head, Triton kernels launched on
    data-dependent shapes: torch 2.11's inductor failed on a graph of that kind in Unsloth's run on an H200.
    """
    from unittest import mock

    with mock.patch.dict(os.environ, {"ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "1"} if on else {}):
        yield


def check_compiled(model, backend: str, name: str) -> None:
    """Say which layers the Trainer trained through torch.compile; none is an error, not a quiet plain run."""
    compiled = [module for module in model.modules() if isinstance(module, torch._dynamo.eval_frame.OptimizedModule)]
    if not compiled:
        raise RuntimeError(f"--compile-model: the Trainer trained {type(model).__name__} with no compiled layer")
    kinds = sorted({type(module._orig_mod).__name__ for module in compiled})
    print(f"[{name}] the training steps ran through torch.compile (backend {backend}): {len(compiled)} compiled "
          f"regions ({', '.join(kinds)})")


class BenchmarkRun:
    """One benchmark invocation: the data, the machine, the output file; runs variants one after another."""

    def __init__(self, options: BenchmarkOptions, spec: ModelSpec, machine: Machine, splits: Splits, output: Path,
                 comparing: bool) -> None:
        self.options, self.spec, self.machine, self.splits = options, spec, machine, splits
        self.output, self.comparing = output, comparing

    def columns(self, variant: Variant, dtype_text: str) -> dict[str, object]:
        """The columns every row of a variant shares."""
        memory = {"4bit": " (4-bit base)", "8bit": " (8-bit base)"}.get(self.options.quantization, "")
        memory += " (gradient checkpointing)" if self.options.gradient_checkpointing else ""
        return dict(date=datetime.now().strftime("%Y-%m-%d %H:%M"), variant=variant.name,
                    flags=" ".join(variant.speed.flags()), shape=self.options.shape,
                    device=self.machine.device.describe(), dtype=dtype_text + memory)

    def skip(self, variant: Variant, reason: str) -> Outcome:
        status = f"skipped: {reason}"
        append_row(self.output, self.columns(variant, variant.speed.dtype) | dict(epoch="-", status=status))
        print(f"[{variant.name}] {status}")
        return Outcome(variant, status)

    def run_variant(self, variant: Variant, epochs: int | None = None) -> Outcome:
        """Build a fresh model, run the fine-tuning's training with the variant's options, write its rows."""
        device = self.machine.device
        reason = unavailable_in_comparison(variant, self.spec, device) if self.comparing \
            else variant.speed.unavailable(self.spec, device)
        if reason is not None:
            return self.skip(variant, reason)
        started = time.perf_counter()
        dtype = device.dtype if variant.speed.dtype == "auto" else getattr(torch, variant.speed.dtype)
        columns = self.columns(variant, str(dtype).removeprefix("torch."))
        print(f"[{variant.name}] {variant.speed.describe()}" + (f": {variant.note}" if variant.note else ""))
        previous_precision = torch.get_float32_matmul_precision()
        if variant.speed.tf32:
            torch.set_float32_matmul_precision("high")  # TF32 for float32 matrix products
        try:
            outcome = self._train(variant, dtype, columns, epochs or self.options.epochs)
        except Exception as error:  # recorded, so that a comparison goes on with the next variant
            status = f"failed: {error_line(error)}"
            append_row(self.output, columns | dict(epoch="-", status=status))
            print(f"[{variant.name}] {status}")
            if not self.comparing:
                raise
            traceback.print_exc()
            outcome = Outcome(variant, status)
        finally:
            torch.set_float32_matmul_precision(previous_precision)
            self._release()
        outcome.wall_s = time.perf_counter() - started
        return outcome

    def _release(self) -> None:
        gc.collect()
        if self.machine.on_gpu:
            torch.cuda.empty_cache()
        torch._dynamo.reset()  # compiled graphs of the last model hold its tensors

    def _run_of(self, variant: Variant, loaded: LoadedModel, dtype, epochs: int, work: Path) -> program.Run:
        """The fine-tuning program's Run for this variant, as prepare would make it, in a scratch folder."""
        recipe = recipe_for(self.options.is_tiny, epochs=epochs)
        quantization = self.options.quantization
        if quantization != "none":  # as prepare does
            loaded.model = prepare_model_for_kbit_training(
                loaded.model, use_gradient_checkpointing=self.options.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        return program.Run(
            spec=self.spec, options=FineTuningOptions(gradient_checkpointing=self.options.gradient_checkpointing),
            output_dir=work / "adapter", logs_dir=work / "logs",
            checkpoints=resume.Checkpoints(work / "checkpoints", [], []), model_dir=loaded.model_dir,
            dataset=self.splits.path, splits=self.splits, recipe=recipe, speed=variant.speed,
            quantization=quantization, loaded=loaded,
            device=self.machine.device, dtype=dtype, state=PartialState(cpu=not self.machine.on_gpu),
            started=time.time())

    def _train(self, variant: Variant, dtype, columns: dict, epochs: int) -> Outcome:
        speed, peak = variant.speed, self.machine.peak_tflops

        def emit(times: EpochTimes) -> None:  # called at each epoch's end; LoRA is attached by then
            flops = flops_per_token(*timer.parameters)
            append_row(self.output, columns | epoch_row(times, flops, peak))
            print(epoch_line(times, flops, peak))

        timer = EpochTimer(self.machine.on_gpu, epochs, self.options.max_seconds, emit)
        with tempfile.TemporaryDirectory(prefix="benchmark_training-") as work:
            loaded = build_loaded(self.spec, self.options.is_tiny, self.splits, self.machine.device.kind, dtype,
                                  speed.attn, recipe_for(self.options.is_tiny).seed, self.options.quantization,
                                  Path(work))
            check_fits_context(self.splits, loaded.tokenizer, loaded.model.config.max_position_embeddings)
            run = self._run_of(variant, loaded, dtype, epochs, Path(work))
            print(f"[{variant.name}] model: {sum(p.numel() for p in loaded.model.parameters()):,} parameters, "
                  f"{sum(matmul_parameters(loaded.model)):,} of them in matrix products; "
                  f"{columns['dtype']}; attention {loaded.model.config._attn_implementation}")
            started = time.perf_counter()
            with regional_compilation(bool(speed.compile_model)):
                trainer, report = program.train(run, NoLog(), callbacks=[timer], on_epoch_summary=timer.summary,
                                                **({} if self.options.save_checkpoints else {"save_strategy": "no"}))
            run_s = time.perf_counter() - started
            if speed.compile_model:
                check_compiled(trainer.model_wrapped, speed.compile_model, variant.name)
            del trainer, report, run, loaded
        total = timer.train_end - timer.train_begin
        trainable, frozen = timer.parameters
        outcome = Outcome(variant, STATUS_OK, timer.rows, run_s=run_s, total_s=total,
                          projected_s=projected(timer.rows, total), steady_epoch_s=steady_epoch_seconds(timer.rows),
                          stopped_early=timer.stopped_early, flops_per_token=flops_per_token(trainable, frozen))
        append_row(self.output, columns | total_row(outcome, peak))
        print(f"[{variant.name}] FLOPs per training token: {outcome.flops_per_token / 1e9:.3f} G = 6 x {trainable:,} "
              f"trainable + 4 x {frozen:,} frozen matrix weights (the usual 6N would say "
              f"{6 * (trainable + frozen) / 1e9:.3f} G)")
        return outcome
