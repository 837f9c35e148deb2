"""Speed options: how the recipe is computed, not what it learns. Each is declared once, here: its flag and help,
what it changes in the trainer (`trainer`), in the per-epoch test (`generation`), and what it needs (`needs`).
The fine-tuning scripts take them (the defaults are the plain recipe; on a GPU, GPU_DEFAULTS), and the training
benchmark compares them (llm/fine_tuning/benchmark/).

Light (no torch at import): the scripts build their parsers from this before anything heavy loads.
"""

import dataclasses
from collections.abc import Callable
from importlib.util import find_spec

from llm.common.cli import UserError, positive_int
from llm.common.device import Device
from llm.common.options import add_options, field_default, flag, option, option_fields
from llm.common.specs import DEFAULT_BATCH_SIZE, TINY_CONTEXT, ModelSpec

ATTENTION = ("sdpa", "eager", "flash_attention_2")
DTYPES = ("auto", "bfloat16", "float32")
COMPILE_BACKEND = "inductor"  # torch.compile's own default
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
DEFAULT_PACKING_LENGTH = TINY_CONTEXT  # tokens per packed row: 3 to 4 of the dataset's pairs

Needs = Callable[[object, "SpeedOptions", ModelSpec, Device], str | None]  # why the option cannot run here


def _cuda(what: str) -> Needs:
    return lambda value, options, spec, device: None if device.kind == "cuda" else f"{what} runs on CUDA GPUs only"


def _attention_needs(value, options, spec, device) -> str | None:
    if value != "flash_attention_2":
        return None
    if device.kind != "cuda":
        return "FlashAttention runs on CUDA GPUs only"
    return None if find_spec("flash_attn") else "flash-attn is not installed (pip install flash-attn, a CUDA build)"


def _liger_needs(value, options, spec, device) -> str | None:
    if find_spec("liger_kernel") is None:
        return "liger-kernel is not installed (optional: pip install liger-kernel)"
    if device.kind != "cuda":
        return "Liger's kernels are Triton kernels for CUDA GPUs"
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN

    if spec.architecture not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return f"Liger has no kernels for {spec.architecture} ({spec.display_name})"
    return None


def _compile_mode_needs(value, options, spec, device) -> str | None:
    return "reduce-overhead captures CUDA graphs: CUDA GPUs only" \
        if value == "reduce-overhead" and device.kind != "cuda" else None


def _tf32_needs(value, options, spec, device) -> str | None:
    if device.kind != "cuda" or device.capability < (8, 0):
        return "TF32 is a matrix mode of NVIDIA GPUs of compute capability 8.0 (Ampere) or newer"
    return None


def _dtype_needs(value, options, spec, device) -> str | None:
    return "this GPU computes no bf16 natively" if value == "bfloat16" and device.kind == "cuda" and not device.bf16 \
        else None


@dataclasses.dataclass(frozen=True)
class SpeedOptions:
    """All at their defaults: the plain recipe, as the original ran it."""

    test_batch_size: int = option(
        DEFAULT_BATCH_SIZE, "prompts per generate() call in the per-epoch test; the 60 valid prompts in one batch "
        "when 60 or more", type=positive_int, meta={"generation": True})
    eval_batch_size: int = option(
        1, "rows per forward pass of the per-epoch eval loss (the recipe's: 1); more is fewer, larger passes, and "
        "the loss then weighs each token alike instead of each row", type=positive_int,
        meta={"trainer": lambda value, options: {"per_device_eval_batch_size": value}})
    quiet_steps: bool = option(
        False, "no wait for the GPU at each step: the loss stays on the device until a log line needs it, and TRL's "
        "per-step token accuracy and entropy (which copy to the host every step) are left out",
        meta={"trainer": lambda value, options: {"logging_nan_inf_filter": False}})
    fused_optimizer: bool = option(
        False, "AdamW as one fused kernel per step (PyTorch's adamw_torch_fused) instead of one per parameter",
        meta={"trainer": lambda value, options: {"optim": "adamw_torch_fused"}})
    pad_to_length: int | None = option(
        None, "pad every batch to this many tokens: one shape for every step, which CUDA graphs need (the "
        "dataset's longest row must fit)", type=positive_int, metavar="TOKENS",
        meta={"trainer": lambda value, options: {"pad_to_multiple_of": value}})
    compile_model: str | None = option(
        None, "the decoder layers through torch.compile in the training steps and the eval loss (the Trainer's "
        "torch_compile as accelerate's regional compilation: one layer compiled, reused by all); BACKEND is "
        f"torch.compile's (default when given: {COMPILE_BACKEND})", nargs="?", const=COMPILE_BACKEND,
        metavar="BACKEND", meta={"trainer": lambda value, options: {"torch_compile": True,
                                                                   "torch_compile_backend": value}})
    compile_mode: str | None = option(
        None, "torch.compile's mode, with --compile-model: reduce-overhead also captures CUDA graphs (one launch "
        "per layer instead of dozens; wants --pad-to-length)", choices=COMPILE_MODES,
        meta={"trainer": lambda value, options: {"torch_compile_mode": value}, "needs": _compile_mode_needs})
    padding_free: bool = option(
        False, "TRL's padding-free batches: each batch is one row of its sequences end to end",
        meta={"trainer": lambda value, options: {"padding_free": True}})
    static_cache: bool = option(
        False, "the per-epoch test generates with a static KV cache (not compiled)", meta={"generation": True})
    compile_test: bool = option(
        False, "the per-epoch test generates with a static KV cache and torch.compile",
        meta={"generation": True, "needs": _cuda("transformers' compiled generation")})
    attn: str | None = option(
        None, "attention implementation (default: the model's own: eager for Gemma-2, whose attention soft-capping "
        "only eager computes exactly; sdpa for Polyglot)", choices=ATTENTION, meta={"needs": _attention_needs})
    packing: bool = option(
        False, "TRL's packing (best-fit decreasing) into rows of --packing-length tokens: fewer, longer steps, so "
        "not the recipe's optimisation", meta={"trainer": lambda value, options: {
            "packing": True, "max_length": options.packing_length}})
    packing_length: int = option(DEFAULT_PACKING_LENGTH, "tokens per packed row, with --packing", type=positive_int)
    dtype: str = option(
        "auto", "weights and compute: auto is bf16 on a GPU that has it natively, else float32",
        choices=DTYPES, meta={"needs": _dtype_needs})
    tf32: bool = option(False, "TF32 for float32 matrix products (CUDA, Ampere or newer)", meta={"needs": _tf32_needs})
    liger: bool = option(
        False, "Liger's Triton kernels (CUDA only; Gemma-2 only; pip install liger-kernel)",
        meta={"trainer": lambda value, options: {"use_liger_kernel": True}, "needs": _liger_needs})

    def changed(self) -> list[dataclasses.Field]:
        """The options set away from their defaults."""
        return [field for field in option_fields(SpeedOptions) if getattr(self, field.name) != field_default(field)]

    def flags(self) -> list[str]:
        """The command-line flags that give these options ([] for the plain recipe)."""
        words: list[str] = []
        for field in self.changed():
            value = getattr(self, field.name)
            if value is True:
                words.append(flag(field))
            elif field.name == "compile_model" and value == COMPILE_BACKEND:
                words.append(flag(field))
            else:
                words += [flag(field), str(value)]
        return words

    def describe(self) -> str:
        return " ".join(self.flags()) or "(plain recipe)"

    def trainer_overrides(self) -> dict[str, object]:
        """What these options change in TRL's SFTConfig."""
        overrides: dict[str, object] = {}
        for field in self.changed():
            if "trainer" in field.metadata:
                overrides |= field.metadata["trainer"](getattr(self, field.name), self)
        return overrides

    def check(self) -> None:
        """Options that contradict each other: one line, before anything loads."""
        if self.packing and self.padding_free:
            raise UserError("--packing is padding-free already: give one of --packing and --padding-free")
        if self.compile_mode and not self.compile_model:
            raise UserError("--compile-mode goes with --compile-model")

    def unavailable(self, spec: ModelSpec, device: Device) -> str | None:
        """Why these options cannot run here (the first reason), or None."""
        for field in self.changed():
            needs = field.metadata.get("needs")
            reason = needs(getattr(self, field.name), self, spec, device) if needs else None
            if reason:
                return reason
        return None

    def with_changes(self, **changes) -> "SpeedOptions":
        return dataclasses.replace(self, **changes)


def with_attention(spec: ModelSpec, attn: str | None) -> ModelSpec:
    """The spec loading its model with this attention implementation (None: the spec's own)."""
    return dataclasses.replace(spec, load_kwargs={**spec.load_kwargs, "attn_implementation": attn}) if attn else spec


def configure_generation(model, options: SpeedOptions) -> None:
    """The per-epoch test's generation settings that the options change."""
    if options.static_cache or options.compile_test:
        model.generation_config.cache_implementation = "static"
        # With a static cache transformers compiles the decoding step on CUDA unless told not to.
        model.generation_config.disable_compile = not options.compile_test


def add_speed_options(parser, title: str = "speed options (each off by default: the plain recipe)") -> None:
    add_options(parser.add_argument_group(title), SpeedOptions, unset=True)


# What the fine-tuning scripts use on a GPU unless told otherwise: options that learn the same thing and were
# measured faster there (docs/gpu.md); on the CPU the plain recipe.
GPU_DEFAULTS = {"test_batch_size": 60}


def defaults_for(device: Device, given: dict[str, object]) -> SpeedOptions:
    """The speed options of a run: the device's defaults, with what was given over them."""
    base = GPU_DEFAULTS if device.kind == "cuda" else {}
    return SpeedOptions(**(base | given))
