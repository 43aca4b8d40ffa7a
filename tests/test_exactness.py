"""Numbers that theory fixes exactly, checked through the real workflow (Snakemake,
submitit's local executor, Horovod across worker processes) against references the
tests compute themselves:

- data parallelism: N workers x batch B/N with plain SGD follow 1 worker x batch B,
  and full-batch gradient descent reaches the least-squares (w, b) of Lab 1's data;
- resume: a cell killed after some epochs and rerun ends with the weights of the same
  cell run without interruption, for SGD with momentum and for Adam, with Horovod and DDP;
- backends: a DDP cell follows the Horovod cell's trajectory (and the 1-worker one's);
- time: the named parts of an epoch account for its wall time, and rank 0's
  checkpoint write never lands in any rank's step time.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from conftest import default_config, run_snakemake, snakemake_command, write_config

from jobs.cell import CellDir
from jobs.train.data import load_linear
from jobs.train.job import CHECKPOINT_DELAY_ENV

pytestmark = pytest.mark.workflow

LINEAR_POINTS = 100  # Lab 1's data set; divisible by every worker count below
GD_LR = 0.025  # below 2 / (largest eigenvalue of the Hessian of the MSE), about 0.029 on this data
GD_EPOCHS = 900  # enough full-batch steps to close the slowest direction to < 1e-5
TRAJECTORY_EPOCHS = 30


def linear_study(batch_size: int, gpus: int, epochs: int, lr: float, backend: str = "horovod",
                 **fixed: Any) -> dict[str, Any]:
    return {"grid": {"batch_size": [batch_size], "gpus": [gpus]},
            "fixed": {"dataset": "linear", "model": "linear", "epochs": epochs, "lr": lr, "lr_scaling": "none",
                      "optimizer": "sgd", "momentum": 0.0, "seed": 3, "backend": backend, **fixed}}


def epochs_of(workdir: Path, study: str) -> pd.DataFrame:
    return pd.read_csv(workdir / "results" / study / "epochs.csv").sort_values("epoch", ignore_index=True)


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("linear")
    config = default_config()
    config["studies"] = {
        "gd_1": linear_study(LINEAR_POINTS, 1, GD_EPOCHS, GD_LR),
        **{f"gd_{n}": linear_study(LINEAR_POINTS // n, n, TRAJECTORY_EPOCHS, GD_LR) for n in (2, 4)},
        **{f"sgd_{n}": linear_study(20 // n, n, TRAJECTORY_EPOCHS, 0.005) for n in (1, 2, 4)},
        # The same cells through PyTorch's DistributedDataParallel instead of Horovod.
        "gd_2_ddp": linear_study(LINEAR_POINTS // 2, 2, TRAJECTORY_EPOCHS, GD_LR, backend="ddp"),
        "sgd_4_ddp": linear_study(20 // 4, 4, TRAJECTORY_EPOCHS, 0.005, backend="ddp"),
        **{f"gd_2_{backend}_fp16": linear_study(LINEAR_POINTS // 2, 2, TRAJECTORY_EPOCHS, GD_LR, backend=backend,
                                                gradient_compression="fp16", bucket_mb=1)
           for backend in ("horovod", "ddp")},
    }
    write_config(workdir, config)
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.parametrize("kind", ["gd", "sgd"])
@pytest.mark.parametrize("workers", [2, 4])
def test_n_workers_with_batch_b_over_n_follow_one_worker_with_batch_b(linear_run, kind, workers):
    one = epochs_of(linear_run, f"{kind}_1").head(TRAJECTORY_EPOCHS)
    many = epochs_of(linear_run, f"{kind}_{workers}")
    assert list(many["world_size"].unique()) == [workers]
    assert len(many) == len(one) == TRAJECTORY_EPOCHS
    # The weights move by far more than the tolerance, so agreeing is not an accident.
    assert one["weight"].max() - one["weight"].min() > 0.1
    for column in ("weight", "bias", "train_loss"):
        np.testing.assert_allclose(many[column], one[column], rtol=2e-5, atol=1e-5, err_msg=column)


@pytest.mark.parametrize("kind, workers", [("gd", 2), ("sgd", 4)])
def test_a_ddp_cell_follows_the_same_trajectory_as_the_horovod_cell(linear_run, kind, workers):
    horovod = epochs_of(linear_run, f"{kind}_{workers}")
    ddp = epochs_of(linear_run, f"{kind}_{workers}_ddp")
    one = epochs_of(linear_run, f"{kind}_1").head(TRAJECTORY_EPOCHS)
    assert list(ddp["world_size"].unique()) == [workers]
    assert len(ddp) == len(horovod) == TRAJECTORY_EPOCHS
    assert horovod["weight"].max() - horovod["weight"].min() > 0.1
    for column in ("weight", "bias", "train_loss", "val_loss"):
        np.testing.assert_allclose(ddp[column], horovod[column], rtol=2e-5, atol=1e-5, err_msg=column)
        np.testing.assert_allclose(ddp[column], one[column], rtol=2e-5, atol=1e-5, err_msg=column)
    (cell_dir,) = (linear_run / "results" / f"{kind}_{workers}_ddp" / "cells").iterdir()
    meta = CellDir(cell_dir).read_metrics().metas[-1]
    assert meta["communication"] == {"backend": "ddp", "controller": "gloo", "gradient_compression": "none",
                                     "bucket_mb": 25.0}


@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_fp16_compression_rounds_the_exchanged_gradients_and_nothing_else(linear_run, backend):
    exact = epochs_of(linear_run, "gd_2")
    compressed = epochs_of(linear_run, f"gd_2_{backend}_fp16")
    (cell_dir,) = (linear_run / "results" / f"gd_2_{backend}_fp16" / "cells").iterdir()
    assert CellDir(cell_dir).read_metrics().metas[-1]["communication"] == {
        "backend": backend, "controller": "gloo", "gradient_compression": "fp16", "bucket_mb": 1.0}
    # The gradients crossed the wire in float16 (11 significant bits): the same descent, off by
    # about float16's precision, and not float32's exact trajectory.
    difference = np.abs(compressed["weight"] - exact["weight"]).max()
    assert difference > 1e-6
    np.testing.assert_allclose(compressed["weight"], exact["weight"], rtol=5e-3)
    np.testing.assert_allclose(compressed["train_loss"], exact["train_loss"], rtol=2e-2)


def test_gradient_descent_reaches_the_least_squares_fit_of_the_data(linear_run):
    data = load_linear(seed=3, num_train=LINEAR_POINTS)
    x, y = (tensor.numpy().astype(np.float64).ravel() for tensor in data.train.tensors)
    (w_star, b_star), *_ = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)
    final = epochs_of(linear_run, "gd_1").iloc[-1]
    assert final["epoch"] == GD_EPOCHS
    assert final["weight"] == pytest.approx(w_star, abs=1e-3)
    assert final["bias"] == pytest.approx(b_star, abs=1e-3)
    mse_star = float(np.mean((w_star * x + b_star - y) ** 2))
    assert final["train_loss"] == pytest.approx(mse_star, rel=1e-4)


# --------------------------------------------------------------------------- exact resume

def resume_study() -> dict[str, Any]:
    return {"grid": {"batch_size": [32], "gpus": [2], "optimizer": ["sgd", "adam"], "backend": ["horovod", "ddp"]},
            "fixed": {"dataset": "digits", "model": "cnn", "epochs": 8, "lr": 0.02, "momentum": 0.9,
                      "weight_decay": 1e-4, "train_subset": 400, "target_accuracy": 0.5}}


def job_processes(cell_dir: Path) -> list[psutil.Process]:
    """submitit's local controller and the cell's worker processes (their command lines name its folder)."""
    folder = str(cell_dir / "submitit")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(folder in part for part in process.info["cmdline"] or []) and process.pid != os.getpid():
            found.append(process)
    return found


def kill_after_epochs(cell_dirs: list[Path], epochs: int, stop: threading.Event) -> dict[str, int]:
    """SIGKILL each cell's job once its log holds `epochs` epochs: what a crashed node does."""
    killed: dict[str, int] = {}
    while not stop.is_set() and len(killed) < len(cell_dirs):
        for cell_dir in cell_dirs:
            if cell_dir.name in killed:
                continue
            done = sum(1 for record in CellDir(cell_dir).new_epoch_records(0)[0])
            if done >= epochs:
                for process in job_processes(cell_dir):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        process.send_signal(signal.SIGKILL)
                killed[cell_dir.name] = done
        time.sleep(0.05)
    return killed


def final_state(cell_dir: Path) -> dict[str, Any]:
    return torch.load(cell_dir / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_a_killed_and_rerun_cell_ends_with_the_weights_of_the_uninterrupted_run(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    for workdir in (reference, interrupted):
        config = default_config()
        config["studies"] = {"resume": resume_study()}
        write_config(workdir, config)
    result = run_snakemake(reference)
    assert result.returncode == 0, result.stderr[-4000:]

    cells = [f"bs32-gpus2-backend_{backend}-opt_{optimizer}" for optimizer in ("sgd", "adam")
             for backend in ("horovod", "ddp")]
    cell_dirs = [interrupted / "results" / "resume" / "cells" / cell for cell in cells]
    # A slow checkpoint keeps each epoch long enough for the kill to land mid-run.
    env = os.environ | {CHECKPOINT_DELAY_ENV: "0.3"}
    stop = threading.Event()
    killed: dict[str, int] = {}
    watcher = threading.Thread(target=lambda: killed.update(kill_after_epochs(cell_dirs, 2, stop)))
    watcher.start()
    first = subprocess.run(snakemake_command(interrupted, Path(__file__).parents[1] / "profiles" / "default"),
                           capture_output=True, text=True, timeout=900, cwd=interrupted, env=env)
    stop.set()
    watcher.join()
    assert first.returncode != 0 and set(killed) == set(cells), (killed, first.stderr[-3000:])
    for cell_dir in cell_dirs:
        assert not (cell_dir / "summary.json").exists()

    second = run_snakemake(interrupted, timeout=300)

    assert second.returncode == 0, second.stderr[-4000:]
    for cell, cell_dir in zip(cells, cell_dirs):
        log = CellDir(cell_dir).read_metrics()
        resumed_from = log.metas[-1]["resumed_from_epoch"]
        assert len(log.metas) == 2 and 2 <= resumed_from < 8, (cell, [m["resumed_from_epoch"] for m in log.metas])
        assert [epoch["epoch"] for epoch in log.epochs] == list(range(1, 9))
        uninterrupted = final_state(reference / "results" / "resume" / "cells" / cell)
        resumed = final_state(cell_dir)
        assert resumed["progress"]["epoch"] == uninterrupted["progress"]["epoch"] == 8
        for name, tensor in uninterrupted["model"].items():
            torch.testing.assert_close(resumed["model"][name], tensor, rtol=1e-5, atol=1e-6, msg=f"{cell} {name}")
        assert log.epochs[-1]["train_loss"] < 0.9 * log.epochs[0]["train_loss"]  # it trained: the weights moved
        # The optimizer's state (momentum buffers, Adam's moments and step) was restored, not restarted.
        assert len(uninterrupted["optimizer"]["state"]) > 0
        for index, state in uninterrupted["optimizer"]["state"].items():
            for key, value in state.items():
                torch.testing.assert_close(resumed["optimizer"]["state"][index][key], value, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- honest time split

CHECKPOINT_DELAY_S = 1.0


@pytest.fixture(scope="module")
def slow_checkpoint_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slowio")
    config = default_config()
    config["studies"] = {"slowio": {"grid": {"batch_size": [32], "gpus": [1, 2]},
                                    "fixed": {"dataset": "digits", "model": "cnn", "epochs": 4,
                                              "train_subset": 400}}}
    write_config(workdir, config)
    result = run_snakemake(workdir, env=os.environ | {CHECKPOINT_DELAY_ENV: str(CHECKPOINT_DELAY_S)})
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_rank_zeros_checkpoint_write_is_io_not_anyones_step_time(slow_checkpoint_run):
    epochs = epochs_of(slow_checkpoint_run, "slowio")
    for workers in (1, 2):
        cell = epochs[epochs["gpus"] == workers].sort_values("epoch")
        after_first = cell[cell["epoch"] > 1]
        # Each epoch after the first starts with rank 0 saving the previous one: slow, and I/O.
        assert (after_first["io_s"] >= CHECKPOINT_DELAY_S).all(), cell[["epoch", "io_s"]]
        # No rank's steps waited for it: the slowest rank's step time is far below the delay.
        assert (cell["slowest_steps_s"] < CHECKPOINT_DELAY_S / 2).all(), cell[["epoch", "slowest_steps_s"]]
        np.testing.assert_allclose(cell["samples_per_s"], cell["samples"] / cell["steps_s"], rtol=1e-9)


def test_the_named_parts_account_for_each_epochs_wall_time(slow_checkpoint_run):
    epochs = epochs_of(slow_checkpoint_run, "slowio")
    parts = epochs[["steps_s", "validation_s", "io_s", "wait_s", "other_s"]]
    assert (parts >= -1e-9).all().all()
    np.testing.assert_allclose(parts.sum(axis=1), epochs["epoch_time_s"], rtol=1e-9)
    # What no named part claims is small: the parts are where the time went.
    assert (epochs["other_s"] < 0.05 * epochs["epoch_time_s"] + 0.02).all(), epochs[["epoch_time_s", "other_s"]]
    for _, cell in epochs.groupby("cell"):
        np.testing.assert_allclose(cell["train_time_s"], cell["steps_s"].cumsum(), rtol=1e-9)
        np.testing.assert_allclose(cell["wall_time_s"], cell["epoch_time_s"].cumsum(), rtol=1e-9)


def test_runs_table_carries_the_time_split_per_cell(slow_checkpoint_run):
    runs = pd.read_csv(slow_checkpoint_run / "results" / "slowio" / "runs.csv").set_index("cell")
    epochs = epochs_of(slow_checkpoint_run, "slowio")
    for cell, group in epochs.groupby("cell"):
        row = runs.loc[cell]
        for part, column in (("steps_s", "steps_time_s"), ("validation_s", "validation_time_s"),
                             ("io_s", "io_time_s"), ("wait_s", "wait_time_s")):
            assert row[column] == pytest.approx(group[part].sum())
        assert row["train_time_s"] == pytest.approx(group["steps_s"].sum())
        assert row["io_time_s"] >= 3 * CHECKPOINT_DELAY_S
        assert row["train_time_s"] < row["wall_time_training_s"]


# --------------------------------------------------------------------------- stop mid-epoch and resume

# A model with every kind of state a step changes: weights, Adam's moments or momentum, each
# rank's own BatchNorm statistics, and the random numbers of dropout.
STATEFUL_MODEL = '''
from torch import nn


def mlp(features=64, hidden=32, classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Dropout(0.3), nn.Linear(hidden, classes))
'''
# Slurm's warning (USR2) after 5 steps of epoch 1 and 7 of epoch 3; a preemption's SIGTERM after 3 of epoch 2.
MID_EPOCH_STOPS = ["1:5", "2:3:TERM", "3:7"]


def mid_epoch_study(package: str, gpus: list[int], backend: str, optimizer: str, **fixed: Any) -> dict[str, Any]:
    return {"grid": {"batch_size": [16], "gpus": gpus},
            "fixed": {"dataset": "digits", "model": f"{package}:mlp", "epochs": 3, "lr": 0.02, "momentum": 0.9,
                      "optimizer": optimizer, "backend": backend, "train_subset": 384, "target_accuracy": 0.99,
                      **fixed}}


def test_a_cell_stopped_mid_epoch_by_signals_resumes_bitwise_where_it_stopped(tmp_path):
    """Slurm's warning signal, twice, mid-epoch: each time the ranks stop at one step boundary,
    rank 0 writes the position, submitit requeues the job (here its local controller, through
    its requeue exit code) and the cell goes on from that step. Between them a SIGTERM, as
    preemption sends: the same stop, then the job exits (Slurm would requeue it; here the
    next run of the workflow resumes it). Each cell ends with the uninterrupted run's weights
    and optimizer state bit for bit, the same samples per epoch, and each epoch's loss within
    summation order, for 1 worker and 2 (Horovod and DDP)."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "stateful.py").write_text(STATEFUL_MODEL)
    config = default_config()
    config["python_path"] = ["code"]
    kinds = {"hvd": ([1, 2], "horovod", "adam"), "ddp": ([2], "ddp", "sgd")}
    config["studies"] = {
        **{f"stopped_{kind}": mid_epoch_study("stateful", *args, signal_at=MID_EPOCH_STOPS)
           for kind, args in kinds.items()},
        **{f"reference_{kind}": mid_epoch_study("stateful", *args) for kind, args in kinds.items()}}
    write_config(tmp_path, config)

    preempted = run_snakemake(tmp_path, timeout=900)
    assert preempted.returncode != 0 and preempted.stderr.count("failed") >= 3, preempted.stderr[-4000:]
    result = run_snakemake(tmp_path, timeout=900)

    assert result.returncode == 0, result.stderr[-4000:]
    for kind in kinds:
        for cell_dir in sorted((tmp_path / "results" / f"stopped_{kind}" / "cells").iterdir()):
            reference_dir = tmp_path / "results" / f"reference_{kind}" / "cells" / cell_dir.name
            log, reference = CellDir(cell_dir).read_metrics(), CellDir(reference_dir).read_metrics()
            assert [(m["resumed_from_epoch"], m["resumed_from_step"]) for m in log.metas] == \
                [(0, 0), (0, 5), (1, 3), (2, 7)], cell_dir
            assert [e["epoch"] for e in log.epochs] == [1, 2, 3]
            for epoch, uninterrupted in zip(log.epochs, reference.epochs, strict=True):
                assert epoch["samples"] == uninterrupted["samples"] == 384
                for column in ("train_loss", "val_loss", "val_accuracy"):
                    assert epoch[column] == pytest.approx(uninterrupted[column], rel=1e-6), (cell_dir, column)
                parts = sum(epoch[part] for part in ("steps_s", "validation_s", "io_s", "wait_s", "other_s"))
                assert parts == pytest.approx(epoch["epoch_time_s"], rel=1e-9)
                assert epoch["steps_s"] > 0 and epoch["other_s"] > -1e-6
            resumed, straight = final_state(cell_dir), final_state(reference_dir)
            assert resumed["progress"]["epoch_step"] == 0 and resumed["ranks"] is None
            for name, tensor in straight["model"].items():  # BatchNorm statistics included
                assert torch.equal(resumed["model"][name], tensor), (cell_dir, name)
            assert straight["optimizer"]["state"]
            for index, state in straight["optimizer"]["state"].items():
                for key, value in state.items():
                    assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][index][key]),
                                       torch.as_tensor(value)), (cell_dir, key)


def test_periodic_checkpoints_inside_epochs_change_nothing_in_training(tmp_path):
    """checkpoint_every_s, for sites without a warning signal: a checkpoint inside the epoch every
    half second, after which training goes on in the same process from that position, exactly
    as a resume would. The cells end bit for bit where the same cells end without them."""
    study = {"grid": {"batch_size": [8], "gpus": [1, 2]},
             "fixed": {"dataset": "digits", "model": "cnn", "width": 12, "epochs": 2, "optimizer": "adam",
                       "lr": 0.001, "target_accuracy": 0.99}}  # about 2 s per epoch here: several checks in each
    periodic, reference = tmp_path / "periodic", tmp_path / "reference"
    for workdir, every in ((periodic, 0.5), (reference, None)):
        config = default_config()
        config["launcher"]["checkpoint_every_s"] = every
        config["studies"] = {"study": study}
        write_config(workdir, config)
        result = run_snakemake(workdir)
        assert result.returncode == 0, result.stderr[-4000:]
    for cell in ("bs8-gpus1", "bs8-gpus2"):
        cell_dir = periodic / "results" / "study" / "cells" / cell
        output = "".join(path.read_text() for path in (cell_dir / "submitit").glob("*_0_log.out"))
        inside = re.findall(r"checkpoint inside epoch (\d) after (\d+) steps", output)
        assert {epoch for epoch, _ in inside} == {"1", "2"}, output[-2000:]
        log, straight_log = (CellDir(d).read_metrics() for d in (cell_dir, reference / "results" / "study" / "cells" / cell))
        assert len(log.metas) == 1  # no restart: the epochs went on in the same process
        for epoch, straight in zip(log.epochs, straight_log.epochs, strict=True):
            assert epoch["samples"] == straight["samples"]
            assert epoch["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
            assert epoch["io_s"] > 0 and epoch["other_s"] > -1e-6
        resumed, straight_state = final_state(cell_dir), final_state(reference / "results" / "study" / "cells" / cell)
        for name, tensor in straight_state["model"].items():
            assert torch.equal(resumed["model"][name], tensor), (cell, name)
        for index, state in straight_state["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][index][key]),
                                   torch.as_tensor(value)), (cell, key)
