"""What a worker used in an epoch (jobs/train/usage.py), against what the test made it use."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from jobs.train.usage import GpuSampler, UsageMeter


def test_cpu_efficiency_is_the_cpu_time_over_the_wall_time_given():
    """A CPU burn then a sleep, read by the meter and, independently, by getrusage and the test's
    own clock: the meter's CPU seconds are the process's, its capacity the wall time x threads.
    (On an idle core the efficiency is near 0.5; the machine may be loaded, so the test compares
    against what it measured, not 0.5.)"""
    import resource

    def rusage_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    for threads in (1, 2):
        cpu_before, wall_before = rusage_cpu(), time.perf_counter()
        meter = UsageMeter(threads, torch.device("cpu"))
        busy_until = time.process_time() + 0.3
        while time.process_time() < busy_until:
            pass
        time.sleep(0.3)
        used = meter.read()
        cpu, wall = rusage_cpu() - cpu_before, time.perf_counter() - wall_before
        assert used.cpu_s == pytest.approx(cpu, abs=0.03) and used.cpu_s >= 0.3
        assert used.cpu_capacity_s == pytest.approx(wall * threads, rel=0.05)
        assert used.cpu_s / used.cpu_capacity_s < 0.8 / threads  # the sleep was not counted as work
        assert used.gpu_utilization is None and used.gpu_memory_gb is None


MEMORY_SCRIPT = """
import numpy as np
import psutil
from jobs.train.usage import max_rss_gb
resident = psutil.Process().memory_info().rss / 2**30  # now, not the high-water mark
block = np.ones(300 * 2**20 // 8)  # 300 MB, written: resident
after = max_rss_gb()
del block
print(resident, after, max_rss_gb())
"""


def test_the_memory_high_water_mark_holds_what_the_process_touched():
    """In a fresh process: this one's high-water mark may already be above anything new."""
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1], check=True)
    resident, after, freed = (float(value) for value in result.stdout.split())
    assert after - resident >= 0.25, (resident, after)  # the block on top of what was resident before it
    assert freed >= after  # a high-water mark: freeing does not lower it


def test_a_gpu_is_sampled_through_nvml_by_its_uuid(monkeypatch):
    """A fake pynvml, answering as the NVML documentation says: utilisation in per cent, memory
    in bytes; the device found by the UUID CUDA gives it."""
    asked: list[str] = []
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda uuid: asked.append(uuid) or "handle",
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=37, memory=12),
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30),
    )
    monkeypatch.setitem(__import__("sys").modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(uuid="abc-1"))
    sampler = GpuSampler.open(torch.device("cuda", 1))
    assert sampler is not None and asked == ["GPU-abc-1"]
    assert sampler.sample() == (0.37, 3.0)


def test_without_nvml_the_gpu_columns_stay_empty_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # import fails
    assert GpuSampler.open(torch.device("cuda", 0)) is None
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("no GPU utilisation or memory per epoch: NVML is not usable")
