"""The training step on a CUDA GPU: every precision trains, the step loop never waits for
the GPU, a resumed fp16 run (its gradient scaler included) is exact, and the cell's
metadata names the GPU, its driver and CUDA. Skipped where CUDA is absent (CI); run them
on a GPU machine with `pytest -m gpu`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from jobs.cell import CellDir
from jobs.plan.params import TrainParams
from jobs.train.data import DeviceSplit, epoch_shard, load_dataset
from jobs.train.workers import SingleWorker

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def run_cell(tmp_path: Path, name: str, params: TrainParams) -> CellDir:
    from jobs.train.job import TrainingJob, run_training

    cell_dir = tmp_path / name
    cell_dir.mkdir()
    job = TrainingJob(cell_dir=str(cell_dir), study="gpu", cell=name, grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir=str(tmp_path))
    run_training(job, SingleWorker(), "localhost", "1", 0, 0.0)
    return CellDir(cell_dir)


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16", "fp16"])
def test_a_cnn_cell_trains_on_the_gpu_in_each_precision(tmp_path, precision):
    params = TrainParams(dataset="digits", model="cnn", batch_size=64, epochs=3, lr=0.05, momentum=0.9,
                         precision=precision, channels_last=precision == "bf16")
    cell = run_cell(tmp_path, precision, params)
    log = cell.read_metrics()
    meta = log.metas[0]
    assert meta["device"] == "cuda:0"
    assert meta["machine"]["gpu"] == torch.cuda.get_device_name(0)
    assert meta["machine"]["cuda"] == torch.version.cuda
    assert meta["machine"]["gpu_driver"]  # from the kernel module, e.g. "550.54.15"
    assert meta["params"]["precision"] == precision
    losses = [epoch["train_loss"] for epoch in log.epochs]
    assert len(losses) == 3 and all(loss is not None for loss in losses)
    assert losses[-1] < losses[0], losses  # it learns
    assert log.epochs[-1]["val_accuracy"] > 0.5  # digits: chance is 0.1
    assert (cell.read_result() or {}).get("status") == "complete"


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_the_step_loop_and_validation_never_wait_for_the_gpu(precision):
    """CUDA's sync debug mode raises on any operation that makes the host wait for the GPU
    (a .item(), a copy to the host, a synchronous copy to the device). (fp16's gradient
    scaler reads its inf/NaN flag every step, as in every AMP loop, so it is left out.)"""
    from jobs.train.job import Step, epoch_learning_rates, evaluate, train_epoch
    from jobs.train.models import build_model
    from jobs.train.optim import make_optimizer
    from jobs.train.precision import configure_precision

    device = torch.device("cuda", 0)
    params = TrainParams(dataset="digits", model="cnn", batch_size=32, train_subset=320, momentum=0.9,
                         precision=precision)
    data = load_dataset("digits", None, seed=0, train_subset=params.train_subset)
    train, val = DeviceSplit.of(data.train, device), DeviceSplit.of(data.val, device)
    model = build_model("cnn", data.input_shape, data.num_classes).to(device)
    step = Step(model, model, make_optimizer(params, model), torch.nn.CrossEntropyLoss(),
                configure_precision(params, device, model))
    shard = epoch_shard(len(train), 1, 0, seed=0, epoch=1).to(device)
    rates = epoch_learning_rates(params, 1, 10)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss_sum = train_epoch(step, train, shard, params.batch_size, rates).loss_sum()
        _, correct, count = evaluate(step, val, classification=True)
        # The same mode does catch a read: the test could fail.
        with pytest.raises(RuntimeError):
            float(loss_sum)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert 0 < float(loss_sum) / 320 < 10 and 0 <= float(correct) <= float(count) == len(val)


def test_a_resumed_fp16_cell_ends_as_the_uninterrupted_one(tmp_path, monkeypatch):
    """Interrupted as epoch 3 starts, then run again: it resumes from epoch 2's checkpoint
    (weights, momentum and the gradient scaler's scale and growth tracker) and ends with the
    uninterrupted run's weights and scaler state."""
    import jobs.train.job as job_module

    params = TrainParams(dataset="linear", model="linear", batch_size=16, epochs=4, lr=1e-3, momentum=0.9,
                         train_subset=1024, precision="fp16", lr_scaling="none")
    whole = run_cell(tmp_path, "whole", params)

    original = job_module.train_epoch
    calls = {"n": 0}

    def interrupted_at_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("the job is killed as epoch 3 starts")
        return original(*args, **kwargs)

    monkeypatch.setattr(job_module, "train_epoch", interrupted_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        run_cell(tmp_path, "resumed", params)
    monkeypatch.setattr(job_module, "train_epoch", original)
    resumed_dir = tmp_path / "resumed"
    assert torch.load(CellDir(resumed_dir).checkpoint, weights_only=True)["progress"]["epoch"] == 2
    from jobs.train.job import TrainingJob, run_training

    job = TrainingJob(cell_dir=str(resumed_dir), study="gpu", cell="resumed", grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir=str(tmp_path))
    run_training(job, SingleWorker(), "localhost", "2", 1, 0.0)

    ends = {name: torch.load(CellDir(tmp_path / name).checkpoint, weights_only=True)
            for name in ("whole", "resumed")}
    assert ends["resumed"]["progress"]["epoch"] == ends["whole"]["progress"]["epoch"] == 4
    for key, value in ends["whole"]["model"].items():
        torch.testing.assert_close(ends["resumed"]["model"][key], value, rtol=0, atol=0)
    assert ends["resumed"]["grad_scaler"] == ends["whole"]["grad_scaler"]
    assert ends["whole"]["grad_scaler"]["scale"] > 0
    assert [e["train_loss"] for e in CellDir(resumed_dir).read_metrics().epochs] == [
        e["train_loss"] for e in whole.read_metrics().epochs]


def test_nvml_reports_the_gpus_utilisation_and_memory_each_epoch(tmp_path):
    """Each epoch's NVML reading (jobs/train/usage.py), against the driver's own count of the
    device's memory in use (cudaMemGetInfo), read here once the cell is done."""
    params = TrainParams(dataset="digits", model="cnn", batch_size=64, epochs=2, lr=0.05, momentum=0.9)
    epochs = run_cell(tmp_path, "nvml", params).read_metrics().epochs
    free, total = torch.cuda.mem_get_info()
    assert len(epochs) == 2
    for epoch in epochs:
        assert 0.0 <= epoch["gpu_utilization"] <= 1.0, epoch
        assert 0.0 < epoch["gpu_memory_gb"] <= total / 2**30, epoch
    assert epochs[-1]["gpu_memory_gb"] == pytest.approx((total - free) / 2**30, abs=0.5)


def run_until_stopped(tmp_path: Path, name: str, params: TrainParams, attempt: int) -> int | None:
    """One attempt of a cell with the stop signals handled as in a job; the exit code if it stopped."""
    import signal

    from jobs.train.interrupt import STOP_SIGNALS, StopSignals
    from jobs.train.job import TrainingJob, run_training

    cell_dir = tmp_path / name
    cell_dir.mkdir(exist_ok=True)
    job = TrainingJob(cell_dir=str(cell_dir), study="gpu", cell=name, grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir=str(tmp_path))
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        run_training(job, SingleWorker(), "localhost", str(attempt), attempt, 0.0, StopSignals().install())
    except SystemExit as stopped:
        return int(stopped.code or 0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return None


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_cell_stopped_mid_epoch_on_the_gpu_resumes_bitwise(tmp_path, precision):
    """A preemption's SIGTERM after 5 steps of epoch 2, on the GPU: the stop check reads no device
    value, rank 0 saves the position, and the resumed run ends with the uninterrupted run's
    weights, optimizer and gradient scaler state bit for bit."""
    import dataclasses

    params = TrainParams(dataset="linear", model="linear", batch_size=16, epochs=3, lr=1e-3, momentum=0.9,
                         train_subset=1024, precision=precision, lr_scaling="none")
    assert run_until_stopped(tmp_path, "whole", params, 0) is None
    stopped = dataclasses.replace(params, signal_at=["2:5:TERM"])
    assert run_until_stopped(tmp_path, "stopped", stopped, 0) is not None
    assert run_until_stopped(tmp_path, "stopped", stopped, 1) is None

    log = CellDir(tmp_path / "stopped").read_metrics()
    assert [(meta["resumed_from_epoch"], meta["resumed_from_step"]) for meta in log.metas] == [(0, 0), (1, 5)]
    ends = {name: torch.load(CellDir(tmp_path / name).checkpoint, weights_only=True) for name in ("whole", "stopped")}
    for key, value in ends["whole"]["model"].items():
        assert torch.equal(ends["stopped"]["model"][key], value), key
    for index, state in ends["whole"]["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(ends["stopped"]["optimizer"]["state"][index][key]),
                               torch.as_tensor(value)), key
    assert ends["stopped"].get("grad_scaler") == ends["whole"].get("grad_scaler")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_a_two_gpu_ddp_cell_over_nccl_stops_mid_epoch_and_resumes_bitwise(tmp_path):
    """backend ddp on 2 GPUs (NCCL), through the workflow: Slurm's warning after 5 steps of epoch 1,
    the ranks agree on the step over NCCL, and the requeued cell ends as the uninterrupted one."""
    from conftest import default_config, run_snakemake, write_config

    fixed = {"dataset": "linear", "model": "linear", "epochs": 2, "lr": 1e-3, "momentum": 0.9,
             "backend": "ddp", "train_subset": 1024, "lr_scaling": "none"}
    config = default_config()
    config["studies"] = {name: {"grid": {"batch_size": [16], "gpus": [2]}, "fixed": {**fixed, **extra}}
                         for name, extra in (("stopped", {"signal_at": ["1:5"]}), ("whole", {}))}
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    cells = {name: tmp_path / "results" / name / "cells" / "bs16-gpus2" for name in ("stopped", "whole")}
    log = CellDir(cells["stopped"]).read_metrics()
    assert log.metas[0]["controller"] == "nccl"
    assert [(meta["resumed_from_epoch"], meta["resumed_from_step"]) for meta in log.metas] == [(0, 0), (0, 5)]
    ends = {name: torch.load(CellDir(path).checkpoint, weights_only=True) for name, path in cells.items()}
    for key, value in ends["whole"]["model"].items():
        assert torch.equal(ends["stopped"]["model"][key], value), key
