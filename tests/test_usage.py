"""What a worker used in an epoch (jobs/train/usage.py), against what the test made it use."""

from __future__ import annotations

import time
import types

import numpy as np
import pytest
import torch

from jobs.train.usage import GpuSampler, UsageMeter, max_rss_gb


def test_cpu_efficiency_is_the_cpu_time_over_the_wall_time_given():
    """Half the epoch busy on the CPU, half asleep: an efficiency near 0.5 for one thread, half
    that for two threads given and one used."""
    for threads, expected in ((1, 0.5), (2, 0.25)):
        meter = UsageMeter(threads, torch.device("cpu"))
        busy_until = time.process_time() + 0.3
        while time.process_time() < busy_until:
            pass
        time.sleep(0.3)
        used = meter.read()
        assert used.cpu_s == pytest.approx(0.3, abs=0.05)
        assert used.cpu_s / used.cpu_capacity_s == pytest.approx(expected, abs=0.12)
        assert used.gpu_utilization is None and used.gpu_memory_gb is None


def test_the_memory_high_water_mark_holds_what_the_process_touched():
    before = max_rss_gb()
    block = np.ones(300 * 2**20 // 8)  # 300 MB, written: resident
    after = max_rss_gb()
    assert after - before >= 0.25, (before, after)
    del block
    assert max_rss_gb() >= after  # a high-water mark: freeing does not lower it


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
