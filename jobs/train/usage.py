"""What a worker used in an epoch: its CPU time against the CPUs it was given, its memory
high-water mark, and, on a GPU, the device's utilisation and memory as NVML reports them.

Read once per epoch by every rank, outside the step clock, and reduced with the epoch's
other metrics (jobs/train/job.py): no extra collective and nothing in the step loop.
Princeton's `jobstats` and `seff` report the same quantities per job from Slurm's
accounting; these are per epoch, so a cell's idle GPUs or unused cores show in runs.csv
next to its throughput.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EpochUsage:
    cpu_s: float  # CPU seconds of this process (every thread) in the epoch
    cpu_capacity_s: float  # the epoch's wall seconds x the threads it was given
    max_rss_gb: float  # this process's resident memory high-water mark so far
    gpu_utilization: float | None  # NVML: fraction of the last sample period a kernel ran
    gpu_memory_gb: float | None  # NVML: device memory in use


class UsageMeter:
    """Started at an epoch's start, read at its end."""

    def __init__(self, threads: int, device: Any) -> None:
        self.threads = threads
        self.gpu = GpuSampler.open(device) if getattr(device, "type", "cpu") == "cuda" else None
        self.start()

    def start(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def read(self) -> EpochUsage:
        cpu_s, wall_s = time.process_time() - self._cpu, time.perf_counter() - self._wall
        utilization, memory_gb = self.gpu.sample() if self.gpu is not None else (None, None)
        return EpochUsage(cpu_s, wall_s * self.threads, max_rss_gb(), utilization, memory_gb)


def max_rss_gb() -> float:
    """The process's peak resident set (getrusage: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20


class GpuSampler:
    """One GPU through NVML (nvidia-ml-py's pynvml), found by the CUDA device's UUID, so that
    CUDA_VISIBLE_DEVICES' renumbering cannot mislead it. None where NVML is missing."""

    def __init__(self, nvml: Any, handle: Any) -> None:
        self.nvml, self.handle = nvml, handle

    @classmethod
    def open(cls, device: Any) -> GpuSampler | None:
        try:
            import pynvml as nvml
            import torch

            nvml.nvmlInit()
            uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
            if uuid is not None:
                handle = nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
            else:
                handle = nvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            return cls(nvml, handle)
        except Exception as error:  # no driver library, an old driver: the columns stay empty
            print(f"no GPU utilisation or memory per epoch: NVML is not usable ({error})", file=sys.stderr,
                  flush=True)
            return None

    def sample(self) -> tuple[float | None, float | None]:
        try:
            rates = self.nvml.nvmlDeviceGetUtilizationRates(self.handle)
            memory = self.nvml.nvmlDeviceGetMemoryInfo(self.handle)
            return rates.gpu / 100.0, memory.used / 2**30
        except Exception:
            return None, None
