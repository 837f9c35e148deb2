"""The device a benchmark runs on, and its dense bf16 peak for the model FLOPs utilisation."""

import re
from dataclasses import dataclass

from llm.common.device import Device, detect

# Dense bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s without sparsity, by the device's name.
PEAK_BF16_TFLOPS = (
    (r"\bGH200\b", 989.4), (r"\bH200\b", 989.4), (r"\bH100\b.*\bPCIe\b", 756.0), (r"\bH100 NVL\b", 835.0),
    (r"\bH100\b", 989.4), (r"\bH800\b", 989.4), (r"\bA100\b", 312.0), (r"\bA800\b", 312.0),
    (r"\bL40S\b", 362.1), (r"\bL40\b", 181.0), (r"\bL4\b", 121.0), (r"\bA10\b", 125.0),
)


def peak_tflops_for(device_name: str) -> float | None:
    """The datasheet's dense bf16 peak of a GPU named so, or None when it is not in the table."""
    return next((peak for pattern, peak in PEAK_BF16_TFLOPS if re.search(pattern, device_name)), None)


@dataclass(frozen=True)
class Machine:
    device: Device
    peak_tflops: float | None
    peak_source: str  # where the peak comes from, or why there is none

    @property
    def on_gpu(self) -> bool:
        return self.device.kind == "cuda"


def detect_machine(peak_tflops: float | None) -> Machine:
    """This machine's device, and the peak given (--peak-tflops) or known from the table."""
    device = detect()
    if device.kind != "cuda":
        return Machine(device, peak_tflops, "--peak-tflops" if peak_tflops else
                       "none on CPU (give --peak-tflops for the utilisation)")
    table = peak_tflops_for(device.name)
    source = ("--peak-tflops" if peak_tflops else f"{device.name}'s datasheet dense bf16 peak" if table else
              f"{device.name} is not in the table of known GPUs: give --peak-tflops for the utilisation")
    return Machine(device, peak_tflops or table, source)
