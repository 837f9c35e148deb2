"""Model FLOPs of LoRA training, and what a measured rate makes of them (docs/gpu.md: counting FLOPs)."""

import math
from dataclasses import dataclass


def matmul_parameters(model) -> tuple[int, int]:
    """(trainable, frozen) weights of the model's matrix products: every nn.Linear, LoRA's A and B and the
    LM head included (a tied head counted once, as the product it is); embedding look-ups are no products."""
    import torch

    trainable = frozen = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            state = getattr(module.weight, "quant_state", None)  # 4 bits: two weights a byte, the shape kept here
            weights = math.prod(state.shape) if state is not None else module.weight.numel()
            if module.weight.requires_grad:
                trainable += weights
            else:
                frozen += weights
    return trainable, frozen


def flops_per_token(trainable: int, frozen: int) -> int:
    """Training FLOPs per token: a product's forward is 2 FLOPs per weight, its input gradient 2 more, its weight
    gradient 2 more, which only LoRA's trainable weights need: 6 x trainable + 4 x frozen."""
    return 6 * trainable + 4 * frozen


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float | None
    tflops: float | None  # model FLOPs per second, in TFLOP/s
    mfu: float | None  # tflops over the device's dense bf16 peak


def throughput(tokens: int | None, seconds: float, flops: int, peak_tflops: float | None) -> Throughput:
    """Training tokens per second and what they make of the device; None where a figure is unknown."""
    rate = tokens / seconds if tokens and seconds > 0 else None
    tflops = flops * rate / 1e12 if rate else None
    return Throughput(rate, tflops, tflops / peak_tflops if tflops and peak_tflops else None)
