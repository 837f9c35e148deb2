"""Wall time and peak memory of one piece of work, on a GPU or on the CPU."""

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_mb: float  # the main figure: CUDA max_memory_allocated on a GPU, peak resident memory on CPU
    peak_kind: str  # says which of the two `peak_mb` is
    process_mb: float | None = None  # on a GPU: the process's memory as nvidia-smi reports it


def peak_rss_mb() -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):  # the high-water mark of resident memory, in kB
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> bool:
    """Linux resets the high-water mark when 5 is written to clear_refs; False where it cannot."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _nvidia_smi_process_mb() -> float | None:
    """This process's GPU memory as nvidia-smi reports it (driver view: allocator cache and context)."""
    try:
        output = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in output.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def measure(work: Callable[[], T]) -> tuple[T, Measurement]:
    """Run `work` once; return its result and how long it took and how much memory it peaked at."""
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset = reset_peak_rss()
    started = time.perf_counter()
    result = work()
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if on_gpu:
        return result, Measurement(
            seconds, torch.cuda.max_memory_allocated() / 2**20, "cuda max_memory_allocated",
            _nvidia_smi_process_mb(),
        )
    kind = "peak resident memory (CPU)" if reset else "peak resident memory of the whole process (CPU)"
    return result, Measurement(seconds, peak_rss_mb(), kind)
