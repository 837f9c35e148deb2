"""Benchmark: the fine-tuning recipe at real size, epoch by epoch: where the time goes, and what makes it faster.

Usage: python llm/fine_tuning/benchmark_training.py --help
It runs the fine-tuning scripts' own training (llm.fine_tuning.program.train: LoRA r=64, batch 4, the eval
loss and the valid-prompt test after every epoch) on a randomly initialised model of a real model's full
shape (--shape), or on the tiny stand-in (--shape tiny), and writes one CSV row per epoch. The last line is
`total: ... s for N epochs ...; projected to 60 epochs: ... s`. --compare runs the plain recipe and then each
speed option on the same machine, and prints a table of their ratios. docs/gpu.md says how FLOPs are counted.
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path

try:
    from llm.common.cli import (
        ArgumentParser, UserError, error_line, int_range, positive_float, positive_int, run_main,
    )
except ModuleNotFoundError as missing:  # started outside the virtualenv of the README's set-up
    sys.exit(f"error: {missing}; activate the project's virtualenv first: . .venv/bin/activate")
from llm.common.specs import (
    DEFAULT_BATCH_SIZE, DEFAULT_DATASET, GEMMA, POLYGLOT, SHAPES, TINY_CONTEXT, ModelSpec, repo_relative,
)

TINY_SHAPES = {"tiny": POLYGLOT, "tiny-gemma": GEMMA}  # the project's tiny stand-ins, for CPU runs and tests
ALL_SHAPES = {**SHAPES, **TINY_SHAPES}
RECIPE_EPOCHS = 60  # the recipe's epochs: what the total is projected to
DEFAULT_EPOCHS = 3
DEFAULT_PACKING_LENGTH = TINY_CONTEXT  # tokens per packed row: 3 to 4 of the dataset's pairs
DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent / "benchmarks"
ATTENTION = ("sdpa", "eager", "flash_attention_2")
DTYPES = ("auto", "bfloat16", "float32")
COMPILE_BACKEND = "inductor"  # torch.compile's own default
# A speed option joins the suggested combination when its epochs take at most this share of plain's: epochs of
# one run varied by about 15 % on the lent H200, so a smaller gain over 2 steady epochs is not told from noise.
FASTER = 0.90
UNAVAILABLE_EXIT = 3  # a single run whose option cannot run here: a `skipped` row, nothing measured

COLUMNS = (
    "date", "variant", "flags", "shape", "device", "dtype", "epoch", "steps",
    "train_s", "eval_s", "test_s", "other_s", "epoch_s",
    "train_tokens", "tokens_per_s", "train_tflops", "mfu",
    "peak_allocated_mb", "peak_reserved_mb", "peak_rss_mb",
    "train_loss", "eval_loss", "run_s", "projected_60_epochs_s", "status",
)
STATUS_OK = "ok"

# Dense bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s without sparsity, by the device's name.
PEAK_BF16_TFLOPS = (
    (r"\bGH200\b", 989.4), (r"\bH200\b", 989.4), (r"\bH100\b.*\bPCIe\b", 756.0), (r"\bH100 NVL\b", 835.0),
    (r"\bH100\b", 989.4), (r"\bH800\b", 989.4), (r"\bA100\b", 312.0), (r"\bA800\b", 312.0),
    (r"\bL40S\b", 362.1), (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
)


def peak_tflops_for(device_name: str) -> float | None:
    """The datasheet's dense bf16 peak of a GPU named so, or None when it is not in the table."""
    return next((peak for pattern, peak in PEAK_BF16_TFLOPS if re.search(pattern, device_name)), None)


@dataclasses.dataclass(frozen=True)
class Speed:
    """The speed options of one run; all off (the defaults) is the plain recipe."""

    attn: str | None = None  # None: the spec's (eager for Gemma-2; transformers' default, sdpa, for Polyglot)
    padding_free: bool = False
    packing: bool = False
    packing_length: int = DEFAULT_PACKING_LENGTH
    liger: bool = False
    test_batch_size: int = DEFAULT_BATCH_SIZE
    static_cache: bool = False
    compile_test: bool = False  # implies static_cache
    compile_model: str | None = None  # torch.compile's backend for the decoder layers (regional_compilation)
    dtype: str = "auto"
    tf32: bool = False

    def flags(self) -> list[str]:
        """The command-line flags that give these options ([] for the plain recipe)."""
        flags = ["--attn", self.attn] if self.attn else []
        flags += ["--padding-free"] if self.padding_free else []
        if self.packing:
            flags += ["--packing"] + (["--packing-length", str(self.packing_length)]
                                      if self.packing_length != DEFAULT_PACKING_LENGTH else [])
        flags += ["--liger"] if self.liger else []
        flags += ["--test-batch-size", str(self.test_batch_size)] if self.test_batch_size != DEFAULT_BATCH_SIZE else []
        flags += ["--compile-test"] if self.compile_test else ["--static-cache"] if self.static_cache else []
        if self.compile_model:
            flags += ["--compile-model"] + ([self.compile_model] if self.compile_model != COMPILE_BACKEND else [])
        flags += ["--dtype", self.dtype] if self.dtype != "auto" else []
        flags += ["--tf32"] if self.tf32 else []
        return flags

    def describe(self) -> str:
        return " ".join(self.flags()) or "(plain recipe)"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    speed: Speed
    same_recipe: bool  # the same batches and the same maths (up to rounding): may join the suggested combination
    note: str = ""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=list(ALL_SHAPES), default=POLYGLOT.shape,
                        help="the model: a real model's full shape with random weights, or `tiny` / `tiny-gemma`, "
                             "the project's tiny Polyglot / Gemma-2 stand-in (default: %(default)s)")
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="the dataset CSV (default: %(default)s)")
    parser.add_argument("--epochs", type=int_range(1, 1000), default=DEFAULT_EPOCHS,
                        help=f"epochs to run; the total is also projected to the recipe's {RECIPE_EPOCHS} "
                             f"(default: %(default)s)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the CSV the rows go to; an existing one of these columns is appended to "
                             f"(default: a new file in {repo_relative(DEFAULT_OUTPUT_DIR)}/)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="also write the totals (and with --compare the suggested flags) to this JSON file")
    parser.add_argument("--peak-tflops", type=positive_float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s, for the model FLOPs utilisation "
                             "(default: from a table of known GPUs; none on CPU)")
    parser.add_argument("--save-checkpoints", action="store_true",
                        help="save a checkpoint every epoch as the fine-tuning scripts do (into a temporary folder, "
                             "removed at the end); without it nothing is saved")
    parser.add_argument("--max-seconds", type=positive_float, default=None,
                        help="stop after the epoch that would end past this many seconds of training (the total "
                             "is still projected to 60 epochs)")
    speed = parser.add_argument_group("speed options (each off by default: the plain recipe)")
    speed.add_argument("--attn", choices=ATTENTION, default=None,
                       help="attention implementation (default: the model's own: eager for Gemma-2, whose "
                            "attention soft-capping only eager computes exactly; sdpa for Polyglot)")
    speed.add_argument("--padding-free", action="store_true",
                       help="TRL's padding-free batches: each batch is one row of the sequences end to end")
    speed.add_argument("--packing", action="store_true",
                       help="TRL's packing (best-fit decreasing) into rows of --packing-length tokens: fewer, "
                            "longer steps, so not the recipe's optimisation")
    speed.add_argument("--packing-length", type=positive_int, default=DEFAULT_PACKING_LENGTH,
                       help="tokens per packed row (default: %(default)s)")
    speed.add_argument("--liger", action="store_true",
                       help="Liger's Triton kernels (CUDA only; Gemma-2 only; pip install liger-kernel)")
    speed.add_argument("--test-batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
                       help="prompts per generate() call in the per-epoch test; 60 answers the valid prompts in "
                            "one batch (default: %(default)s)")
    speed.add_argument("--static-cache", action="store_true",
                       help="the per-epoch test generates with a static KV cache (not compiled)")
    speed.add_argument("--compile-test", action="store_true",
                       help="the per-epoch test generates with a static KV cache and torch.compile (CUDA only)")
    speed.add_argument("--compile-model", nargs="?", const=COMPILE_BACKEND, default=None, metavar="BACKEND",
                       help="the decoder layers through torch.compile in the training steps and the eval loss "
                            "(the Trainer's torch_compile, as accelerate's regional compilation: one layer compiled, "
                            "reused by all; the LM head and TRL's loss stay as they are): fewer, fused kernels "
                            "where each step is launch-bound; BACKEND is torch.compile's (default: %(const)s)")
    speed.add_argument("--dtype", choices=DTYPES, default="auto",
                       help="weights and compute: auto is the scripts' (bf16 on a GPU that has it, else fp32); "
                            "float32 on a GPU trains without bf16 autocast (default: %(default)s)")
    speed.add_argument("--tf32", action="store_true", help="TF32 for float32 matrix products (CUDA, Ampere or newer)")
    compare = parser.add_argument_group("comparing")
    compare.add_argument("--compare", action="store_true",
                         help="run the plain recipe, then each speed option alone, on this machine; print a table "
                              "of the ratios and the flags of the options that were faster")
    compare.add_argument("--variants", default=None,
                         help="with --compare: only these variants, comma-separated (plain always runs first); "
                              "the names are in the table")
    compare.add_argument("--time-budget", type=positive_float, default=None,
                         help="with --compare: start no variant that would end past this many seconds")
    compare.add_argument("--warm-up-epochs", type=int_range(0, 10), default=None,
                         help="with --compare: epochs of the plain recipe run first and left out of the table, so "
                              "that the process's one-off set-up (CUDA libraries, Triton kernels, clocks) is not "
                              "charged to plain (default: 1 on a GPU, 0 on CPU)")
    return parser


def speed_from(args: argparse.Namespace) -> Speed:
    return Speed(attn=args.attn, padding_free=args.padding_free, packing=args.packing,
                 packing_length=args.packing_length, liger=args.liger, test_batch_size=args.test_batch_size,
                 static_cache=args.static_cache or args.compile_test, compile_test=args.compile_test,
                 compile_model=args.compile_model, dtype=args.dtype, tf32=args.tf32)


def check_args(args: argparse.Namespace) -> None:
    """Contradictions between options: one line, before anything is loaded."""
    if args.compare and speed_from(args) != Speed(packing_length=args.packing_length):
        raise UserError("--compare runs each speed option itself: leave out the speed options")
    if not args.compare and (args.variants is not None or args.time_budget is not None
                             or args.warm_up_epochs is not None):
        raise UserError("--variants, --time-budget and --warm-up-epochs go with --compare")
    if args.padding_free and args.packing:
        raise UserError("--packing is padding-free already: give one of --packing and --padding-free")


# ---------------------------------------------------------------- the CSV


def default_output(shape: str) -> Path:
    stamp = datetime.now().strftime("%y%m%d%H%M")
    candidate, counter = DEFAULT_OUTPUT_DIR / f"{stamp} ({shape}).csv", 2
    while candidate.exists():
        candidate, counter = DEFAULT_OUTPUT_DIR / f"{stamp}-{counter} ({shape}).csv", counter + 1
    return candidate


def check_output(path: Path) -> None:
    """Refuse, before any work, a file that is not a benchmark CSV of these columns, or a place not writable."""
    from llm.common.outputs import check_writable_folder

    if path.is_dir():
        raise UserError(f"--output {path}: a folder; give a file name")
    check_writable_folder(path.parent, "--output")
    if path.exists() and path.stat().st_size > 0:
        try:
            with path.open(encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle), None)
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(f"--output {path}: cannot read ({error})") from None
        if header is None or tuple(header) != COLUMNS:
            raise UserError(f"--output {path}: not a results file of this benchmark (other columns); "
                            f"give a new file name")


def append_row(path: Path, row: dict[str, object]) -> None:
    from llm.common.outputs import append_line_safely

    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    if not path.exists() or path.stat().st_size == 0:
        writer.writeheader()
    writer.writerow({column: row.get(column, "") for column in COLUMNS})
    append_line_safely(path, text.getvalue())


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _fixed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _loss(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.4f}"


# ---------------------------------------------------------------- what the machine is


@dataclasses.dataclass
class Machine:
    device: str  # "cuda" or "cpu"
    default_dtype: object  # torch.dtype that pick_device gives
    text: str  # the CSV's device column
    bf16: bool  # the device computes in bf16 (GPU with bf16, or any CPU)
    capability: tuple[int, int] | None
    peak_tflops: float | None
    peak_source: str


def describe_machine(peak_tflops: float | None) -> Machine:
    import torch

    from llm.common.models import pick_device

    device, dtype = pick_device()
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        capability = torch.cuda.get_device_capability(0)
        text = f"cuda: {name} (compute capability {capability[0]}.{capability[1]})"
        table = peak_tflops_for(name)
        peak = peak_tflops or table
        source = ("--peak-tflops" if peak_tflops else
                  f"{name}'s datasheet dense bf16 peak" if table else
                  f"{name} is not in the table of known GPUs: give --peak-tflops for the utilisation")
        # Pre-Ampere GPUs "support" bf16 by emulation only (slowly): not counted as bf16 here.
        return Machine(device, dtype, text, torch.cuda.is_bf16_supported(including_emulation=False), capability,
                       peak, source)
    text = f"cpu: {len(os.sched_getaffinity(0))} cores"
    source = "--peak-tflops" if peak_tflops else "none on CPU (give --peak-tflops for the utilisation)"
    return Machine(device, dtype, text, True, None, peak_tflops, source)


def dtype_of(speed: Speed, machine: Machine):
    import torch

    return {"auto": machine.default_dtype, "bfloat16": torch.bfloat16, "float32": torch.float32}[speed.dtype]


def unavailable(speed: Speed, spec: ModelSpec, machine: Machine, comparing: bool = False) -> str | None:
    """Why these options cannot (or, in a comparison, need not) run here, or None."""
    from importlib.util import find_spec

    on_gpu = machine.device == "cuda"
    if speed.attn == "flash_attention_2":
        if not on_gpu:
            return "FlashAttention runs on CUDA GPUs only"
        if find_spec("flash_attn") is None:
            return "flash-attn is not installed (pip install flash-attn: a CUDA build, not on the lent GPU machine)"
    if speed.liger:
        if find_spec("liger_kernel") is None:
            return "liger-kernel is not installed (optional: pip install liger-kernel)"
        if not on_gpu:
            return "Liger's kernels are Triton kernels for CUDA GPUs"
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

        if spec.architecture not in MODEL_TYPE_TO_APPLY_LIGER_FN:
            return f"Liger has no kernels for {spec.architecture} ({spec.display_name})"
    if speed.compile_test and not on_gpu:
        return "transformers compiles generation with a static cache on CUDA only (on CPU it would run uncompiled)"
    if comparing and speed.compile_model and not on_gpu:
        return ("compiling is for the GPU here: on this CPU it costs more than the whole comparison (about 25 s "
                "for the tiny stand-in); --compile-model alone runs it")
    if speed.tf32 and (not on_gpu or machine.capability < (8, 0)):
        return "TF32 is a matrix mode of NVIDIA GPUs of compute capability 8.0 (Ampere) or newer"
    if speed.dtype == "bfloat16" and not machine.bf16:
        return "this GPU computes no bf16"
    return None


# ---------------------------------------------------------------- the model and the run


def build_loaded(spec: ModelSpec, shape: str, splits, device: str, dtype, attn: str | None, seed: int):
    """The model to train: the tiny stand-in (loaded as the scripts load it), or the full shape built at random."""
    import torch
    from transformers import AutoModelForCausalLM

    from llm.common.models import LoadedModel, ensure_tiny_model, load_local, load_tokenizer
    from llm.unsloth_test.bench import full_size_config

    built = dataclasses.replace(spec, load_kwargs={**spec.load_kwargs, "attn_implementation": attn}) if attn else spec
    tiny_dir = ensure_tiny_model(spec, splits)  # the stand-in; its tokenizer drives the full shapes too
    if shape in TINY_SHAPES:
        loaded = load_local(built, tiny_dir, device, dtype)
        loaded.is_tiny = True
        return loaded
    tokenizer = load_tokenizer(tiny_dir)
    torch.manual_seed(seed)
    with torch.device(device):  # created in place: no copy in another dtype or on another device on the way
        model = AutoModelForCausalLM.from_config(full_size_config(spec, tokenizer), dtype=dtype, **built.load_kwargs)
    return LoadedModel(model, tokenizer, tiny_dir, is_tiny=False)


@contextlib.contextmanager
def regional_compilation(on: bool):
    """The Trainer's torch_compile as accelerate's regional compilation, which the Trainer's own arguments cannot
    ask for: accelerate reads it from the environment when the Trainer makes its TorchDynamoPlugin.

    Regional, because compiling the whole model would take in TRL 1.15's fused LM head, Triton kernels launched
    on data-dependent shapes: torch 2.11's inductor failed on a graph of that kind in Unsloth's run on the H200.
    """
    from unittest import mock  # here, not at the top: it imports asyncio, and --help answers before any of it

    with mock.patch.dict(os.environ, {"ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "1"} if on else {}):
        yield


def check_compiled(model, backend: str, name: str) -> None:
    """Say which layers the Trainer trained through torch.compile; none is an error, not a quiet plain run."""
    import torch

    compiled = [module for module in model.modules() if isinstance(module, torch._dynamo.eval_frame.OptimizedModule)]
    if not compiled:
        raise RuntimeError(f"--compile-model: the Trainer trained {type(model).__name__} with no compiled layer")
    kinds = sorted({type(module._orig_mod).__name__ for module in compiled})
    print(f"[{name}] the training steps ran through torch.compile (backend {backend}): {len(compiled)} compiled "
          f"regions ({', '.join(kinds)})")


def matmul_parameters(model) -> tuple[int, int]:
    """(trainable, frozen) weights of the model's matrix products: every nn.Linear, LoRA's A and B and the
    LM head included (a tied head counted once, as the product it is); embedding look-ups are no products."""
    import torch

    trainable = frozen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            if module.weight.requires_grad:
                trainable += module.weight.numel()
            else:
                frozen += module.weight.numel()
    return trainable, frozen


@dataclasses.dataclass(frozen=True)
class Throughput:
    tokens_per_s: float | None
    tflops: float | None  # model FLOPs per second, in TFLOP/s
    mfu: float | None  # tflops over the device's dense bf16 peak


def throughput(tokens: int | None, seconds: float, flops: int, peak_tflops: float | None) -> Throughput:
    """Training tokens per second and what they make of the device; None where a figure is unknown."""
    rate = tokens / seconds if tokens and seconds > 0 else None
    tflops = flops * rate / 1e12 if rate else None
    return Throughput(rate, tflops, tflops / peak_tflops if tflops and peak_tflops else None)


def flops_per_token(trainable: int, frozen: int) -> int:
    """Training FLOPs per token: a product's forward is 2 FLOPs per weight, its input gradient 2 more, its weight
    gradient 2 more, which only LoRA's trainable weights need: 6 x trainable + 4 x frozen."""
    return 6 * trainable + 4 * frozen


@dataclasses.dataclass
class EpochTimes:
    epoch: int
    steps: int
    train_s: float
    eval_s: float
    test_s: float
    other_s: float
    tokens: int | None
    peak_allocated_mb: float | None
    peak_reserved_mb: float | None
    peak_rss_mb: float | None
    train_loss: float | None
    eval_loss: float | None

    @property
    def epoch_s(self) -> float:
        return self.train_s + self.eval_s + self.test_s + self.other_s


def make_timer(on_gpu: bool, epochs: int, max_seconds: float | None, emit):
    """A TrainerCallback that splits each epoch into training steps, eval loss, valid-prompt test and the rest.

    It runs before the run's own callbacks, so its on_epoch_end marks the end of the steps before the test, and
    its on_evaluate the end of the eval loss; the test's seconds come with the epoch's summary row. An epoch
    ends where the next begins (the last where training ends): the parts add up to the training's wall time.
    """
    import torch
    from transformers import TrainerCallback

    from llm.common.measure import peak_rss_mb, reset_peak_rss

    class EpochTimer(TrainerCallback):
        def __init__(self) -> None:
            self.rows: list[EpochTimes] = []
            self.train_begin = self.train_end = None
            self.tokens_per_epoch: int | None = None
            self.parameters = (0, 0)
            self._open: dict | None = None
            self._setup = 0.0
            self.stopped_early = False

        def now(self) -> float:
            if on_gpu:
                torch.cuda.synchronize()  # GPU work is asynchronous: time what has run, not what was queued
            return time.perf_counter()

        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            self.train_begin = self.now()
            self.parameters = matmul_parameters(model)
            dataset = getattr(train_dataloader, "dataset", None)
            if dataset is not None and "input_ids" in getattr(dataset, "column_names", ()):
                self.tokens_per_epoch = sum(len(ids) for ids in dataset["input_ids"])

        def on_epoch_begin(self, args, state, control, **kwargs):
            now = self.now()
            if self._open is None and not self.rows:
                self._setup = now - self.train_begin  # the Trainer's own set-up: counted in epoch 1's rest
            self._close(now)
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            else:
                reset_peak_rss()
            self._open = dict(begin=now, steps_end=None, eval_end=None, summary=None, step0=state.global_step)

        def on_epoch_end(self, args, state, control, **kwargs):
            now = self.now()
            opened = self._open
            opened.update(steps_end=now, steps=state.global_step - opened["step0"])
            done = self.rows[-1].epoch_s if self.rows else None
            if max_seconds is not None and done is not None and round(state.epoch) < epochs:
                rest_of_this = max(done - (now - opened["begin"]), 0.0)
                if now - self.train_begin + rest_of_this + done > max_seconds:
                    control.should_training_stop = True
                    self.stopped_early = True

        def on_evaluate(self, args, state, control, **kwargs):
            if self._open is not None and self._open["steps_end"] is not None and self._open["eval_end"] is None:
                self._open["eval_end"] = self.now()

        def summary(self, row) -> None:  # EpochReport's on_summary: the epoch's test seconds and losses
            if self._open is not None:
                self._open["summary"] = row

        def on_train_end(self, args, state, control, **kwargs):
            self.train_end = self.now()
            self._close(self.train_end)

        def _close(self, boundary: float) -> None:
            opened, self._open = self._open, None
            if opened is None:
                return
            row = opened["summary"]
            test = row.test_seconds if row is not None else 0.0
            steps_end = opened["steps_end"] or boundary
            eval_end = opened["eval_end"]
            if eval_end is None:  # no eval loss (a dataset without valid answers): the test, then the rest
                eval_s, other = 0.0, boundary - steps_end - test
            else:
                eval_s, other = eval_end - steps_end - test, boundary - eval_end
            if not self.rows:
                other += self._setup
            memory = dict(peak_allocated_mb=torch.cuda.max_memory_allocated() / 2**20,
                          peak_reserved_mb=torch.cuda.max_memory_reserved() / 2**20, peak_rss_mb=None) if on_gpu \
                else dict(peak_allocated_mb=None, peak_reserved_mb=None, peak_rss_mb=peak_rss_mb())
            times = EpochTimes(len(self.rows) + 1, opened.get("steps", 0), steps_end - opened["begin"], eval_s, test,
                               other, self.tokens_per_epoch, **memory,
                               train_loss=row.train_loss if row is not None else None,
                               eval_loss=row.eval_loss if row is not None else None)
            self.rows.append(times)
            emit(times)

    return EpochTimer()


class _Details:
    """What the run logs besides its printed lines (each test's answers, the logged numbers): not kept here."""

    def detail(self, text: str) -> None:
        pass


@dataclasses.dataclass
class Outcome:
    variant: Variant
    status: str
    rows: list[EpochTimes]
    run_s: float | None = None  # program.train's wall time: the trainer's set-up and the training
    total_s: float | None = None  # the training: the sum of the epochs
    projected_s: float | None = None
    steady_epoch_s: float | None = None
    stopped_early: bool = False
    flops_per_token: int = 0
    wall_s: float = 0.0  # the whole variant, model building included


def steady_epoch_seconds(rows: list[EpochTimes]) -> float:
    """The mean epoch after the first (which also pays for warm-up: compilation, allocator growth, caches)."""
    later = rows[1:] or rows
    return sum(row.epoch_s for row in later) / len(later)


def projected(rows: list[EpochTimes], total: float) -> float:
    return total + (RECIPE_EPOCHS - len(rows)) * steady_epoch_seconds(rows)


class Bench:
    """One benchmark invocation: the data, the machine, the output file; runs variants one after another."""

    def __init__(self, args: argparse.Namespace, spec: ModelSpec, machine: Machine, splits, output: Path) -> None:
        self.args, self.spec, self.machine, self.splits, self.output = args, spec, machine, splits, output

    def base_row(self, variant: Variant, dtype_text: str) -> dict[str, object]:
        return dict(date=datetime.now().strftime("%Y-%m-%d %H:%M"), variant=variant.name,
                    flags=" ".join(variant.speed.flags()), shape=self.args.shape, device=self.machine.text,
                    dtype=dtype_text)

    def epoch_row(self, base: dict, times: EpochTimes, flops: int) -> dict[str, object]:
        speed = throughput(times.tokens, times.train_s, flops, self.machine.peak_tflops)
        return base | dict(
            epoch=times.epoch, steps=times.steps, train_s=_fixed(times.train_s), eval_s=_fixed(times.eval_s),
            test_s=_fixed(times.test_s), other_s=_fixed(times.other_s), epoch_s=_fixed(times.epoch_s),
            train_tokens=times.tokens or "", tokens_per_s=_fixed(speed.tokens_per_s, 1),
            train_tflops=_fixed(speed.tflops, 3), mfu=_fixed(speed.mfu, 4),
            peak_allocated_mb=_fixed(times.peak_allocated_mb, 1), peak_reserved_mb=_fixed(times.peak_reserved_mb, 1),
            peak_rss_mb=_fixed(times.peak_rss_mb, 1),
            train_loss=_loss(times.train_loss), eval_loss=_loss(times.eval_loss), status=STATUS_OK)

    def epoch_line(self, times: EpochTimes, flops: int) -> str:
        speed = throughput(times.tokens, times.train_s, flops, self.machine.peak_tflops)
        rates = ""
        if speed.tokens_per_s:
            mfu = f", MFU {speed.mfu:.1%}" if speed.mfu is not None else ""
            rates = (f", {times.tokens:,} tokens, {speed.tokens_per_s:,.0f} tokens/s, "
                     f"{speed.tflops:.2f} TFLOP/s{mfu}")
        memory = (f"peak {times.peak_allocated_mb:,.0f} MB allocated / {times.peak_reserved_mb:,.0f} MB reserved"
                  if times.peak_allocated_mb is not None else f"peak GPU memory n/a (CPU), peak RSS {times.peak_rss_mb:,.0f} MB")
        return (f"  timing of epoch {times.epoch}: training steps {times.train_s:.2f} s ({times.steps} steps"
                f"{rates}), eval loss {times.eval_s:.2f} s, valid-prompt test {times.test_s:.2f} s, "
                f"other {times.other_s:.2f} s = {times.epoch_s:.2f} s; {memory}")

    def skip(self, variant: Variant, reason: str) -> Outcome:
        status = f"skipped: {reason}"
        append_row(self.output, self.base_row(variant, variant.speed.dtype) | dict(epoch="-", status=status))
        print(f"[{variant.name}] {status}")
        return Outcome(variant, status, [])

    def run_variant(self, variant: Variant, epochs: int | None = None) -> Outcome:
        """Build a fresh model, run the fine-tuning's training with the variant's options, write its rows."""
        reason = unavailable(variant.speed, self.spec, self.machine, comparing=self.args.compare)
        if reason is not None:
            return self.skip(variant, reason)
        started = time.perf_counter()
        import torch

        dtype = dtype_of(variant.speed, self.machine)
        dtype_text = str(dtype).removeprefix("torch.")
        base = self.base_row(variant, dtype_text)
        print(f"[{variant.name}] {variant.speed.describe()}: {variant.note}" if variant.note else
              f"[{variant.name}] {variant.speed.describe()}")
        previous_precision = torch.get_float32_matmul_precision()
        if variant.speed.tf32:
            torch.set_float32_matmul_precision("high")  # TF32 for float32 matrix products
        try:
            outcome = self._train(variant, dtype, base, epochs or self.args.epochs)
        except Exception as error:  # recorded, so that a comparison goes on with the next variant
            status = f"failed: {error_line(error)}"
            append_row(self.output, base | dict(epoch="-", status=status))
            print(f"[{variant.name}] {status}")
            if not self.args.compare:
                raise
            import traceback

            traceback.print_exc()
            outcome = Outcome(variant, status, [])
        finally:
            torch.set_float32_matmul_precision(previous_precision)
            self._release()
        outcome.wall_s = time.perf_counter() - started
        return outcome

    def _release(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.machine.device == "cuda":
            torch.cuda.empty_cache()
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # compiled graphs of the last model hold its tensors

    def _train(self, variant: Variant, dtype, base: dict, epochs: int) -> Outcome:
        dtype_text = base["dtype"]
        import tempfile

        from accelerate import PartialState

        from llm.common.data import check_fits_context
        from llm.common.specs import TINY_RECIPE, Recipe
        from llm.fine_tuning import program, resume

        args, speed, spec = self.args, variant.speed, self.spec
        is_tiny = args.shape in TINY_SHAPES
        recipe = dataclasses.replace(Recipe(**TINY_RECIPE) if is_tiny else Recipe(), epochs=epochs)
        loaded = build_loaded(spec, args.shape, self.splits, self.machine.device, dtype, speed.attn, recipe.seed)
        check_fits_context(self.splits, loaded.tokenizer, loaded.model.config.max_position_embeddings)
        generation = loaded.model.generation_config
        if speed.static_cache:
            generation.cache_implementation = "static"
            # With a static cache transformers compiles the decoding step on CUDA unless told not to.
            generation.disable_compile = not speed.compile_test
        overrides: dict[str, object] = {} if args.save_checkpoints else {"save_strategy": "no"}
        if speed.padding_free:
            overrides["padding_free"] = True
        if speed.packing:
            overrides.update(packing=True, max_length=speed.packing_length)
        if speed.liger:
            overrides["use_liger_kernel"] = True
        if speed.compile_model:
            overrides.update(torch_compile=True, torch_compile_backend=speed.compile_model)

        def emit(times: EpochTimes) -> None:  # called at each epoch's end; LoRA is attached by then
            flops = flops_per_token(*timer.parameters)
            append_row(self.output, self.epoch_row(base, times, flops))
            print(self.epoch_line(times, flops))

        timer = make_timer(self.machine.device == "cuda", epochs, args.max_seconds, emit)
        with tempfile.TemporaryDirectory(prefix="benchmark_training-") as work:
            work = Path(work)
            run = program.Run(
                spec=spec, args=argparse.Namespace(keep="last", report_to="none", resume=False,
                                                   trust_pickled_weights=False),
                output_dir=work / "adapter", logs_dir=work / "logs",
                checkpoints=resume.Checkpoints(work / "checkpoints", [], []), model_dir=loaded.model_dir,
                dataset=self.splits.path, splits=self.splits, recipe=recipe, loaded=loaded,
                device=self.machine.device, dtype=dtype, state=PartialState(cpu=self.machine.device == "cpu"),
                started=time.time())
            print(f"[{variant.name}] model: {sum(p.numel() for p in loaded.model.parameters()):,} parameters, "
                  f"{sum(matmul_parameters(loaded.model)):,} of them in matrix products; {dtype_text}; attention "
                  f"{loaded.model.config._attn_implementation}")
            started = time.perf_counter()
            with regional_compilation(bool(speed.compile_model)):
                trainer, report = program.train(run, _Details(), callbacks=[timer],
                                                test_batch_size=speed.test_batch_size,
                                                on_epoch_summary=timer.summary, **overrides)
            run_s = time.perf_counter() - started
            if speed.compile_model:
                check_compiled(trainer.model_wrapped, speed.compile_model, variant.name)
            del trainer, report, run, loaded
        rows = timer.rows
        total = timer.train_end - timer.train_begin
        outcome = Outcome(variant, STATUS_OK, rows, run_s=run_s, total_s=total, projected_s=projected(rows, total),
                          steady_epoch_s=steady_epoch_seconds(rows), stopped_early=timer.stopped_early)
        trainable, frozen = timer.parameters
        flops = outcome.flops_per_token = flops_per_token(trainable, frozen)
        tokens = sum(row.tokens or 0 for row in rows)
        train_s = sum(row.train_s for row in rows)
        speed = throughput(tokens, train_s, flops, self.machine.peak_tflops)
        peaks = {name: max((getattr(row, name) for row in rows if getattr(row, name) is not None), default=None)
                 for name in ("peak_allocated_mb", "peak_reserved_mb", "peak_rss_mb")}
        append_row(self.output, base | dict(
            epoch="total", steps=sum(row.steps for row in rows), train_s=_fixed(train_s),
            eval_s=_fixed(sum(row.eval_s for row in rows)), test_s=_fixed(sum(row.test_s for row in rows)),
            other_s=_fixed(sum(row.other_s for row in rows)), epoch_s=_fixed(total), train_tokens=tokens or "",
            tokens_per_s=_fixed(speed.tokens_per_s, 1), train_tflops=_fixed(speed.tflops, 3), mfu=_fixed(speed.mfu, 4),
            **{name: _fixed(value, 1) for name, value in peaks.items()},
            train_loss=_loss(rows[-1].train_loss), eval_loss=_loss(rows[-1].eval_loss), run_s=_fixed(run_s),
            projected_60_epochs_s=_fixed(outcome.projected_s, 1),
            status=STATUS_OK + (" (stopped early: --max-seconds)" if timer.stopped_early else "")))
        print(f"[{variant.name}] FLOPs per training token: {flops / 1e9:.3f} G = 6 x {trainable:,} trainable + "
              f"4 x {frozen:,} frozen matrix weights (the usual 6N would say {6 * (trainable + frozen) / 1e9:.3f} G)")
        return outcome


# ---------------------------------------------------------------- comparing


WARM_UP = "warm-up"  # the variant name of the --warm-up-epochs rows in the CSV


def compare_variants(spec: ModelSpec, machine: Machine, valid_prompts: int) -> list[Variant]:
    """Plain first, then each speed option alone, the likeliest gains first (a --time-budget skips the last);
    Liger last, since it patches transformers' modules for good."""
    own = spec.load_kwargs.get("attn_implementation", "sdpa")
    other = "eager" if own != "eager" else "sdpa"
    gemma = spec.architecture == "gemma2"
    on_gpu = machine.device == "cuda"
    variants = [
        Variant("plain", Speed(), True, "the recipe as the fine-tuning scripts run it on CPU (on a GPU they "
                "answer the per-epoch test in one batch, as test-one-batch)"),
        Variant("test-one-batch", Speed(test_batch_size=valid_prompts), True,
                f"the per-epoch test's {valid_prompts} prompts in one generate() call"),
        Variant("compiled-model", Speed(compile_model=COMPILE_BACKEND), True,
                "the decoder layers through torch.compile in training and eval: the same recipe, but its dropout "
                "draws from another random stream, so the losses differ a little"),
        Variant("padding-free", Speed(padding_free=True), True,
                "same batches without pad tokens; sequences kept apart by their position ids"),
        Variant("static-cache", Speed(static_cache=True), True, "the per-epoch test with a static KV cache"),
        Variant("compiled-test", Speed(static_cache=True, compile_test=True), True,
                "the per-epoch test with a static KV cache and torch.compile"),
        Variant(f"attn-{other}", Speed(attn=other), not gemma,
                "drops Gemma-2's attention soft-capping (sdpa has none)" if gemma else ""),
        Variant("flash-attention-2", Speed(attn="flash_attention_2"), True, ""),
        Variant("packing", Speed(packing=True), False, "fewer, longer steps: not the recipe's optimisation"),
    ]
    if on_gpu:
        variants += [Variant("float32", Speed(dtype="float32"), False, "fp32 weights, no bf16 autocast"),
                     Variant("float32-tf32", Speed(dtype="float32", tf32=True), False, "fp32 weights, TF32 products"),
                     Variant("tf32", Speed(tf32=True), True, "TF32 for the float32 products left under bf16")]
    else:
        variants += [Variant("bfloat16", Speed(dtype="bfloat16"), False, "bf16 weights and autocast on the CPU"),
                     Variant("tf32", Speed(tf32=True), True, "")]
    return variants + [Variant("liger", Speed(liger=True), True, "Liger's RMSNorm, RoPE and GeGLU kernels")]


def pick_variants(all_variants: list[Variant], names: str | None) -> list[Variant]:
    if names is None:
        return all_variants
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = {variant.name: variant for variant in all_variants}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise UserError(f"--variants: unknown {', '.join(unknown)}; the variants here are {', '.join(known)}")
    return [known["plain"]] + [known[name] for name in wanted if name != "plain"]


def combined(outcomes: list["Outcome"]) -> tuple[Speed, list[str]]:
    """The options that each took at most FASTER of plain's epoch time and keep the recipe, together."""
    plain = outcomes[0]
    chosen = [outcome.variant for outcome in outcomes[1:]
              if outcome.status == STATUS_OK and outcome.variant.same_recipe and plain.status == STATUS_OK
              and outcome.steady_epoch_s <= FASTER * plain.steady_epoch_s]
    fields: dict[str, object] = {}
    for variant in chosen:
        for field in dataclasses.fields(Speed):
            value = getattr(variant.speed, field.name)
            if value != field.default:
                fields[field.name] = value
    if fields.get("compile_test"):
        fields["static_cache"] = True
    return Speed(**fields), [variant.name for variant in chosen]


def comparison_table(outcomes: list["Outcome"], machine: Machine) -> str:
    plain = outcomes[0]
    lines = ["| variant | flags | status | s/epoch | vs plain | train s | eval s | test s | tokens/s | MFU | "
             "peak MB | eval loss | keeps the recipe |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for outcome in outcomes:
        variant = outcome.variant
        flags = variant.speed.describe()
        if outcome.status != STATUS_OK:
            lines.append(f"| {variant.name} | `{flags}` | {outcome.status} | | | | | | | | | | "
                         f"{'yes' if variant.same_recipe else 'no'} |")
            continue
        later = outcome.rows[1:] or outcome.rows

        def mean(name: str) -> float:
            return sum(getattr(row, name) for row in later) / len(later)

        train_s = mean("train_s")
        speed = throughput(later[0].tokens, train_s, outcome.flops_per_token, machine.peak_tflops)
        ratio = (f"{outcome.steady_epoch_s / plain.steady_epoch_s:.2f}x"
                 if plain.status == STATUS_OK and plain.steady_epoch_s else "")
        peaks = [getattr(row, name) for row in outcome.rows for name in ("peak_allocated_mb", "peak_rss_mb")
                 if getattr(row, name) is not None]
        eval_loss = _loss(outcome.rows[-1].eval_loss) or "-"
        rate = f"{speed.tokens_per_s:,.0f}" if speed.tokens_per_s else "-"
        mfu = f"{speed.mfu:.1%}" if speed.mfu else "-"
        lines.append(f"| {variant.name} | `{flags}` | ok | {outcome.steady_epoch_s:.2f} | {ratio} | {train_s:.2f} | "
                     f"{mean('eval_s'):.2f} | {mean('test_s'):.2f} | {rate} | {mfu} | {max(peaks):,.0f} | "
                     f"{eval_loss} | {'yes' if variant.same_recipe else 'no'} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def total_line(outcome: "Outcome") -> str:
    rows = outcome.rows
    parts = ", ".join(f"{name} {sum(getattr(row, name + '_s') for row in rows):.1f} s"
                      for name in ("train", "eval", "test", "other"))
    stopped = " (stopped early by --max-seconds)" if outcome.stopped_early else ""
    return (f"total: {outcome.total_s:.1f} s for {len(rows)} epoch{'s' if len(rows) != 1 else ''}{stopped} ({parts}); "
            f"projected to {RECIPE_EPOCHS} epochs: {outcome.projected_s:.1f} s ({outcome.projected_s / 60:.1f} min)")


def outcome_summary(outcome: "Outcome") -> dict[str, object]:
    return dict(variant=outcome.variant.name, flags=outcome.variant.speed.flags(), status=outcome.status,
                epochs=len(outcome.rows), total_s=outcome.total_s, run_s=outcome.run_s,
                steady_epoch_s=outcome.steady_epoch_s, projected_60_epochs_s=outcome.projected_s,
                same_recipe=outcome.variant.same_recipe, wall_s=outcome.wall_s)


def write_summary(path: Path | None, summary: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    args = build_parser().parse_args()
    check_args(args)
    output = args.output if args.output is not None else default_output(args.shape)
    check_output(output)
    if args.summary is not None:
        from llm.common.outputs import check_writable_folder

        check_writable_folder(args.summary.parent, "--summary")
    # torch and transformers load only now, so that --help and bad options answer at once.
    from llm.common.data import load_splits
    from llm.common.logs import library_versions

    splits = load_splits(args.dataset)
    spec = ALL_SHAPES[args.shape]
    machine = describe_machine(args.peak_tflops)
    variants = (pick_variants(compare_variants(spec, machine, len(splits.valid)), args.variants) if args.compare
                else [Variant("single", speed_from(args), True)])
    label = (f"{spec.display_name} tiny stand-in" if args.shape in TINY_SHAPES
             else f"{args.shape} (full size, random weights)")
    print(f"Oh-LoRA training benchmark: {label}, {args.epochs} epoch{'s' if args.epochs != 1 else ''} of the recipe "
          f"on {repo_relative(splits.path)} ({len(splits.train)} train rows, {len(splits.valid)} valid prompts, "
          f"{len(splits.valid_with_answers)} valid answers for the eval loss)")
    print(f"device: {machine.text}; peak for the utilisation: "
          f"{f'{machine.peak_tflops:g} TFLOP/s' if machine.peak_tflops else 'n/a'} ({machine.peak_source})")
    print(library_versions())
    print(f"results: {repo_relative(output)}")
    if args.shape not in TINY_SHAPES:
        print("NOTICE: random weights driven by the tiny stand-in's tokenizer: every step costs what the real "
              "model's does, but the answers are noise, run to the length limit and are retried when empty, so "
              "the per-epoch test costs more than with a trained model.")
    bench = Bench(args, spec, machine, splits, output)
    started = time.perf_counter()
    warm_up_epochs = args.warm_up_epochs if args.warm_up_epochs is not None else int(machine.device == "cuda")
    if args.compare and warm_up_epochs:
        # Measured on the lent H200: plain's first epoch took 36.6 s when it ran first, the next variant's 11.5 s.
        print(f"[warm-up] {warm_up_epochs} epoch{'s' if warm_up_epochs != 1 else ''} of the plain recipe, "
              f"not compared: the process's one-off set-up goes here")
        bench.run_variant(Variant(WARM_UP, Speed(), True), epochs=warm_up_epochs)
    outcomes: list[Outcome] = []
    for variant in variants:
        if args.time_budget is not None and outcomes:
            estimate = max(outcome.wall_s for outcome in outcomes)
            if time.perf_counter() - started + estimate > args.time_budget:
                outcomes.append(bench.skip(variant, f"--time-budget {args.time_budget:g} s would be passed"))
                continue
        outcome = bench.run_variant(variant)
        outcomes.append(outcome)
        if outcome.status == STATUS_OK:
            print(f"[{variant.name}] " + total_line(outcome))
    if not args.compare:
        outcome = outcomes[0]
        write_summary(args.summary, outcome_summary(outcome))
        if outcome.status != STATUS_OK:
            return UNAVAILABLE_EXIT
        print(total_line(outcome))
        return 0
    print()
    print(comparison_table(outcomes, machine))
    speed, names = combined(outcomes)
    write_summary(args.summary, dict(variants=[outcome_summary(outcome) for outcome in outcomes],
                                     fastest_flags=speed.flags(), fastest_variants=names))
    none = f"(none: no option that keeps the recipe was {1 - FASTER:.0%} faster than plain)"
    print(f"fastest combination flags: {' '.join(speed.flags()) or none}"
          + (f" (from {', '.join(names)})" if names else ""))
    plain = outcomes[0]
    print(f"comparison: {len(outcomes)} variants in {time.perf_counter() - started:.1f} s; plain recipe "
          + (total_line(plain) if plain.status == STATUS_OK else plain.status))
    return 0


if __name__ == "__main__":
    run_main(main)
