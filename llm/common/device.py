"""The device a run computes on, and the dtype it computes in: one answer for every script.

The GPU when there is one; bf16 where the GPU computes it natively (Ampere, compute capability 8.0, or newer),
float32 otherwise: emulated bf16 (T4, V100) is slower than float32, and float16 training needs loss scaling this
project has not tested on such cards. On the CPU, float32. torch is imported when a device is detected, not
before: scripts answer --help without it.
"""

import os
import platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" or "cpu"
    name: str  # the GPU's name, or the CPU's architecture
    capability: tuple[int, int] | None  # CUDA compute capability
    bf16: bool  # computes bf16 natively (a GPU from Ampere on); False on the CPU, where float32 is used
    memory_gib: float | None  # the GPU's memory

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.bf16 else "float32"

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)

    def describe(self) -> str:
        """One line for logs and result files: 'cuda: NVIDIA H200 (compute capability 9.0)' or 'cpu: 2 cores'."""
        if self.kind == "cuda":
            return f"cuda: {self.name} (compute capability {self.capability[0]}.{self.capability[1]})"
        return f"cpu: {len(os.sched_getaffinity(0))} cores"

    def dtype_reason(self) -> str:
        """Why this dtype, for the log header."""
        if self.kind == "cpu":
            return "float32 (the CPU)"
        if self.bf16:
            return f"bfloat16 (native on compute capability {self.capability[0]}.{self.capability[1]})"
        return (f"float32: {self.name} (compute capability {self.capability[0]}.{self.capability[1]}) has no native "
                f"bf16, and emulated bf16 is slower than float32")


def detect() -> Device:
    """The device this process computes on."""
    import torch

    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        capability = (properties.major, properties.minor)
        return Device("cuda", properties.name, capability, torch.cuda.is_bf16_supported(including_emulation=False),
                      properties.total_memory / 2**30)
    return Device("cpu", platform.machine(), None, False, None)


def host_description() -> str:
    """The machine as a whole, for result files: host name, architecture, CPUs and RAM."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM)"
