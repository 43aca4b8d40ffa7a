"""The training job's own collectives, across real processes for each backend: the tasks
of one submitit job (local executor) meet through jobs/train/rendezvous.py, as a cell's do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
import submitit

from jobs.plan.params import TrainParams

WORKERS = 3
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the tasks cannot import the tests


def collectives_on_one_rank(cell_dir: str, backend: str) -> dict[str, Any]:
    import torch

    from jobs.train import rendezvous
    from jobs.train.job import average_batchnorm_statistics
    from jobs.train.workers import start_workers

    placement = rendezvous.placement_from_submitit()
    workers = start_workers(placement, Path(cell_dir), TrainParams(gpus=WORKERS, backend=backend), "gloo")
    rank = workers.rank
    torch.set_num_threads(1)
    torch.manual_seed(rank)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.BatchNorm1d(8))
    model.train()
    model(torch.randn(16, 1, 4, 4) * (rank + 1) + rank)  # each rank's running statistics from its own data
    before = {name: buffer.tolist() for name, buffer in model.named_buffers() if "running" in name}
    average_batchnorm_statistics(model, workers)
    after = {name: buffer.tolist() for name, buffer in model.named_buffers() if "running" in name}
    weights = model.state_dict()
    workers.broadcast_parameters(weights)
    report = {
        "rank": rank, "size": workers.size, "controller": workers.controller, "before": before, "after": after,
        "weight": model[0].weight.flatten().tolist(),
        "sum": workers.sum(torch.tensor([float(rank), 1.0], dtype=torch.float64), name="sum").tolist(),
        "max": workers.max(torch.tensor([float(rank)]), name="max").tolist(),
        "object": workers.broadcast_object({"from": rank}, name="object"),
        "gathered": workers.allgather_object(f"rank{rank}", name="gathered"),
    }
    workers.barrier()
    workers.close()
    return report


@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_collectives_across_real_processes(tmp_path, backend):
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="local")
    executor.update_parameters(tasks_per_node=WORKERS, nodes=1, timeout_min=5)
    reports = sorted(executor.submit(collectives_on_one_rank, str(tmp_path), backend).results(),
                     key=lambda report: report["rank"])
    assert [report["rank"] for report in reports] == list(range(WORKERS))
    assert {report["size"] for report in reports} == {WORKERS}
    assert {report["controller"] for report in reports} == {"gloo"}
    names = reports[0]["before"].keys()
    assert len(names) == 4  # mean and var of both BatchNorm layers
    for name in names:
        per_rank = np.array([report["before"][name] for report in reports])
        assert np.ptp(per_rank, axis=0).max() > 0.01, name  # the ranks did disagree
        for report in reports:
            np.testing.assert_allclose(report["after"][name], per_rank.mean(axis=0), rtol=1e-6, err_msg=name)
    # Each rank drew its own weights (seed = rank); after the broadcast all hold rank 0's.
    import torch

    torch.manual_seed(0)
    rank0_weight = torch.nn.Conv2d(1, 2, 3).weight.flatten().tolist()
    for report in reports:
        np.testing.assert_allclose(report["weight"], rank0_weight, rtol=0, atol=0)
        assert report["sum"] == [sum(range(WORKERS)), WORKERS]
        assert report["max"] == [WORKERS - 1]
        assert report["object"] == {"from": 0}
        assert report["gathered"] == [f"rank{rank}" for rank in range(WORKERS)]
