"""The training job's parts: learning-rate schedules, epoch shards, the divergence rule,
resuming the metrics file, threads and the step loop."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from jobs.cell import CellDir, EpochRecord
from jobs.plan.params import TrainParams
from jobs.train.data import epoch_shard
from jobs.train.job import diverged, torch_threads
from jobs.train.optim import learning_rate


def test_warmup_ramps_from_base_to_scaled_lr():
    params = TrainParams(lr=0.1, gpus=4, lr_scaling="linear", warmup_epochs=2)
    assert learning_rate(params, 0.0) == pytest.approx(0.1)
    assert learning_rate(params, 1.0) == pytest.approx(0.25)
    assert learning_rate(params, 2.0) == pytest.approx(0.4)
    assert learning_rate(params, 7.5) == pytest.approx(0.4)


def test_no_warmup_starts_at_scaled_lr():
    assert learning_rate(TrainParams(lr=0.1, gpus=4, lr_scaling="sqrt"), 0.0) == pytest.approx(0.2)


def test_step_schedule_multiplies_at_each_milestone_after_warmup():
    params = TrainParams(lr=0.1, gpus=2, warmup_epochs=1, lr_schedule="step", lr_decay_epochs=[3, 5],
                         lr_decay_factor=0.5, epochs=8)
    assert learning_rate(params, 0.5) == pytest.approx(0.15)  # warmup: 0.1 -> 0.2
    assert learning_rate(params, 2.99) == pytest.approx(0.2)
    assert learning_rate(params, 3.0) == pytest.approx(0.1)
    assert learning_rate(params, 4.5) == pytest.approx(0.1)
    assert learning_rate(params, 5.0) == pytest.approx(0.05)
    assert learning_rate(params, 7.9) == pytest.approx(0.05)


def test_cosine_schedule_falls_from_the_scaled_lr_to_zero_over_the_epochs_after_warmup():
    params = TrainParams(lr=0.1, gpus=1, warmup_epochs=2, lr_schedule="cosine", epochs=10)
    for progress in (2.0, 3.0, 6.0, 8.5, 10.0):
        expected = 0.1 * 0.5 * (1 + math.cos(math.pi * (progress - 2) / 8))
        assert learning_rate(params, progress) == pytest.approx(expected)
    assert learning_rate(params, 6.0) == pytest.approx(0.05)
    assert learning_rate(params, 10.0) == pytest.approx(0.0, abs=1e-12)


def test_schedule_parameters_are_checked_before_anything_runs():
    assert any("lr_decay_epochs" in p for p in TrainParams(lr_schedule="step").problems())
    assert any("no epochs left" in p for p in TrainParams(lr_schedule="cosine", epochs=3, warmup_epochs=3).problems())
    assert TrainParams.from_dict({"lr_decay_epochs": [6, 2]}).lr_decay_epochs == [2.0, 6.0]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_epoch_shards_are_disjoint_equal_and_interleave_the_one_worker_order(world_size):
    samples, batch = 103, 4
    shards = [epoch_shard(samples, world_size, rank, seed=7, epoch=3) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1
    union = torch.cat(shards)
    assert len(union) == len(set(union.tolist())) == samples - samples % world_size
    one_worker = epoch_shard(samples, 1, 0, seed=7, epoch=3)
    # The k-th batches of the N ranks (B/N each) together are the k-th batch of one worker with B.
    per_rank = batch // world_size if batch % world_size == 0 else None
    if per_rank:
        for k in range(len(shards[0]) // per_rank):
            together = sorted(x for shard in shards for x in shard[k * per_rank:(k + 1) * per_rank].tolist())
            assert together == sorted(one_worker[k * batch:(k + 1) * batch].tolist())


def test_epoch_shards_change_with_the_epoch_and_repeat_with_the_seed():
    first = epoch_shard(50, 2, 0, seed=1, epoch=1)
    assert torch.equal(first, epoch_shard(50, 2, 0, seed=1, epoch=1))
    assert not torch.equal(first, epoch_shard(50, 2, 0, seed=1, epoch=2))
    assert not torch.equal(first, epoch_shard(50, 2, 0, seed=2, epoch=1))


def test_divergence_is_a_non_finite_loss_or_one_far_above_the_start():
    assert diverged(math.nan, 1.0, 2.0, factor=10)
    assert diverged(1.0, math.inf, 2.0, factor=10)
    assert diverged(20.5, 1.0, 2.0, factor=10)
    assert not diverged(19.5, 1.0, 2.0, factor=10)
    assert not diverged(1e6, 1.0, None, factor=10)  # no start to compare with: only non-finite counts


def write_lines(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def test_resume_keeps_checkpointed_epochs_and_drops_later_ones(tmp_path):
    lines = [{"type": "meta"}, {"type": "epoch", "epoch": 1}, {"type": "epoch", "epoch": 2},
             {"type": "epoch", "epoch": 3}]
    write_lines(tmp_path / "metrics.jsonl", lines, tail='{"type": "epo')
    CellDir(tmp_path).trim_metrics(2, EpochRecord(epoch=2))
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:3]


def test_resume_restores_the_checkpointed_epoch_missing_from_the_log(tmp_path):
    write_lines(tmp_path / "metrics.jsonl", [{"type": "meta"}, {"type": "epoch", "epoch": 1}])
    CellDir(tmp_path).trim_metrics(2, EpochRecord(epoch=2, steps_s=1.5))
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("epoch") for r in records] == [None, 1, 2]
    assert records[2]["steps_s"] == 1.5 and records[2]["type"] == "epoch"


def test_fresh_start_empties_the_metrics_file(tmp_path):
    write_lines(tmp_path / "metrics.jsonl", [{"type": "epoch", "epoch": 1}])
    CellDir(tmp_path).trim_metrics(0, None)
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_records_of_an_older_version_read_with_missing_fields_as_none():
    record = EpochRecord.from_dict({"type": "epoch", "epoch": 4, "train_time_s": 3.0, "unknown_field": 1})
    assert (record.epoch, record.train_time_s, record.steps_s) == (4, 3.0, None)
    assert record.to_dict()["type"] == "epoch"


def test_threads_never_oversubscribe_the_cpus_given():
    cpus = len(os.sched_getaffinity(0))
    assert torch_threads(1, 1) == 1
    assert torch_threads(64, 1) == cpus
    assert torch_threads(64, cpus) == 1
    assert torch_threads(2, 4 * cpus) == 1  # more workers than CPUs: one thread each, no fewer


class DeviceReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operations that copy a value from a tensor to Python: each is a host-device
    synchronisation on a GPU (.item(), float(), bool(), comparisons in an if)."""

    READS = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_the_step_loop_and_validation_never_read_from_the_device():
    from jobs.train.data import DeviceSplit, load_dataset
    from jobs.train.job import Step, epoch_learning_rates, evaluate, train_epoch
    from jobs.train.models import build_model
    from jobs.train.optim import make_optimizer
    from jobs.train.precision import configure_precision

    params = TrainParams(batch_size=16, train_subset=160, optimizer="sgd", momentum=0.9)
    data = load_dataset("digits", None, seed=0, train_subset=params.train_subset)
    train, val = DeviceSplit.of(data.train, torch.device("cpu")), DeviceSplit.of(data.val, torch.device("cpu"))
    model = build_model("cnn", data.input_shape, data.num_classes)
    step = Step(model, model, make_optimizer(params, model), torch.nn.CrossEntropyLoss(),
                configure_precision(params, torch.device("cpu"), model))
    shard = epoch_shard(len(train), 1, 0, seed=0, epoch=1)
    with DeviceReads() as reads:
        loss_sum = train_epoch(step, train, shard, params.batch_size, epoch_learning_rates(params, 1, 10)).loss_sum()
        _, correct, count = evaluate(step, val, classification=True)
    assert reads.count == 0
    # The same counter does see a read: the test could fail.
    with DeviceReads() as reads:
        float(loss_sum)
    assert reads.count == 1
    assert 0 < float(loss_sum) / 160 < 10 and 0 <= float(correct) <= float(count) == len(val)


@pytest.mark.parametrize("samples", [160, 170])
def test_the_epoch_loss_is_the_sum_over_samples_also_with_a_short_last_batch(samples):
    """At lr 0 the weights stay put, so the epoch's summed loss must be the samples' loss at
    those weights: the full shard's mean squared error (torch, one call) times its size."""
    from jobs.train.data import DeviceSplit, load_dataset
    from jobs.train.job import Step, train_epoch
    from jobs.train.models import build_model
    from jobs.train.optim import make_optimizer
    from jobs.train.precision import configure_precision

    params = TrainParams(dataset="linear", model="linear", batch_size=16, train_subset=samples, momentum=0.9)
    data = load_dataset("linear", None, seed=0, train_subset=samples)
    train = DeviceSplit.of(data.train, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("linear", data.input_shape, 0)
    step = Step(model, model, make_optimizer(params, model), torch.nn.MSELoss(),
                configure_precision(params, torch.device("cpu"), model))
    shard = epoch_shard(len(train), 1, 0, seed=0, epoch=1)
    steps = -(-samples // params.batch_size)
    trained = train_epoch(step, train, shard, params.batch_size, [0.0] * steps)
    loss_sum, lr, done = trained.loss_sum(), trained.lr, trained.done
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(model(train.inputs), train.targets, reduction="sum")
        # Resumed after 3 steps (a mid-epoch checkpoint): the samples of the steps after them.
        rest = shard[3 * params.batch_size:]
        expected_rest = torch.nn.functional.mse_loss(model(train.inputs[rest]), train.targets[rest], reduction="sum")
    assert lr == 0.0 and done == steps
    assert float(loss_sum) == pytest.approx(float(expected), rel=1e-5)
    resumed = train_epoch(step, train, shard, params.batch_size, [0.0] * steps, first=3)
    assert resumed.done == steps and float(resumed.loss_sum()) == pytest.approx(float(expected_rest), rel=1e-5)


def test_the_dataloader_path_trains_on_the_same_batches_as_the_device_path(tmp_path):
    """data_path 'loader' (worker processes, pinned memory where there is a GPU) is for data that
    does not fit in memory; on data that does, it must give exactly the device path's run."""
    from jobs.cell import CellDir
    from jobs.train.job import TrainingJob, run_training
    from jobs.train.workers import SingleWorker

    losses = {}
    for path in ("device", "loader"):
        params = TrainParams(dataset="digits", model="cnn", batch_size=32, epochs=2, train_subset=256,
                             data_path=path, loader_workers=2)
        cell_dir = tmp_path / path
        cell_dir.mkdir()
        job = TrainingJob(cell_dir=str(cell_dir), study="s", cell=path, grid_axes=("batch_size", "gpus"),
                          params=params.to_dict(), data_dir=str(tmp_path))
        run_training(job, SingleWorker(), "localhost", "1", 0, 0.0)
        log = CellDir(cell_dir).read_metrics()
        losses[path] = [(e["train_loss"], e["val_loss"], e["val_accuracy"]) for e in log.epochs]
    assert len(losses["device"]) == 2
    np.testing.assert_allclose(losses["loader"], losses["device"], rtol=1e-6)


@pytest.mark.parametrize(("text", "version"), [
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
     "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", "550.54.15"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  535.104.05  Release Build  (dvs-builder@U16)\n",
     "535.104.05"),
    ("something else entirely\n", None),
])
def test_the_nvidia_driver_version_is_read_from_the_kernel_module(tmp_path, text, version):
    from jobs.train.job import nvidia_driver

    version_file = tmp_path / "version"
    version_file.write_text(text)
    assert nvidia_driver(version_file) == version
    assert nvidia_driver(tmp_path / "absent") is None


FULL_DISK_SCRIPT = """
import resource, signal, sys
import torch
from jobs.cell import CellDir
from jobs.plan.params import TrainParams
from jobs.train.job import Progress, Step, load_checkpoint, save_checkpoint
from jobs.train.optim import make_optimizer
from jobs.train.precision import configure_precision

cell, params = CellDir(__import__("pathlib").Path(sys.argv[1])), TrainParams(optimizer="sgd", momentum=0.9)
torch.manual_seed(0)

def step_of(width):
    model = torch.nn.Linear(width, width)
    return Step(model, model, make_optimizer(params, model), torch.nn.MSELoss(),
                configure_precision(params, torch.device("cpu"), model))

small, large = step_of(8), step_of(400)  # about 1 kB and 640 kB of weights
assert save_checkpoint(cell, small, Progress(epoch=1), params)
kept = cell.checkpoint.read_bytes()
# Writes past 64 kB fail as a full disk or quota would; ignore SIGXFSZ so the write returns EFBIG.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
assert save_checkpoint(cell, large, Progress(epoch=2), params) is False
assert cell.checkpoint.read_bytes() == kept, "the previous checkpoint changed"
assert sorted(path.name for path in cell.path.iterdir()) == ["checkpoint.pt"], "a partial file was left"
assert load_checkpoint(cell, small, params)[0].epoch == 1
print("ok")
"""


def test_a_checkpoint_the_disk_refuses_is_one_line_and_keeps_the_previous_one(tmp_path):
    """A real write failure: a file-size limit (RLIMIT_FSIZE) in a process of its own, as a full
    disk or a quota fails a write. The previous checkpoint stays whole and loadable, no partial
    file is left, and the failure is one line naming the path and the cause."""
    import subprocess
    import sys
    from pathlib import Path

    result = subprocess.run([sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line == f"could not write the checkpoint {tmp_path / 'checkpoint.pt'}: File too large; " \
                   "the previous checkpoint is kept"


def test_a_resume_inside_the_first_epoch_keeps_the_start_it_resumes(tmp_path):
    """A mid-epoch checkpoint of epoch 1 holds no epoch, but the start it came from stays logged."""
    lines = [{"type": "meta", "resumed_from_epoch": 0}, {"type": "epoch", "epoch": 1}]
    write_lines(tmp_path / "metrics.jsonl", lines)
    CellDir(tmp_path).trim_metrics(0, None, fresh=False)
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:1]
