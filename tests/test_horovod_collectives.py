"""The training job's own collectives, across real Horovod processes (horovodrun, Gloo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"

WORKER = """
import json, sys
import torch
from jobs.train.job import average_batchnorm_statistics
from jobs.train.workers import HorovodWorkers

workers = HorovodWorkers("gloo")
rank = workers.rank
torch.manual_seed(rank)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.BatchNorm1d(8))
model.train()
model(torch.randn(16, 1, 4, 4) * (rank + 1) + rank)  # each rank's running statistics from its own data
before = {name: buffer.tolist() for name, buffer in model.named_buffers() if "running" in name}
average_batchnorm_statistics(model, workers)
after = {name: buffer.tolist() for name, buffer in model.named_buffers() if "running" in name}
print("RESULT " + json.dumps({"rank": rank, "before": before, "after": after}), flush=True)
"""


def test_batchnorm_statistics_become_the_mean_over_workers(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = subprocess.run([str(HOROVODRUN), "-np", "3", "--gloo", "-H", "localhost:3", sys.executable, str(script)],
                            capture_output=True, text=True, timeout=300, cwd=REPO,
                            env={"PYTHONPATH": str(REPO), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reports = [json.loads(line.split("RESULT ", 1)[1]) for line in result.stdout.splitlines() if "RESULT " in line]
    assert sorted(report["rank"] for report in reports) == [0, 1, 2]
    names = reports[0]["before"].keys()
    assert len(names) == 4  # mean and var of both BatchNorm layers
    for name in names:
        per_rank = np.array([report["before"][name] for report in reports])
        assert np.ptp(per_rank, axis=0).max() > 0.01, name  # the ranks did disagree
        for report in reports:
            np.testing.assert_allclose(report["after"][name], per_rank.mean(axis=0), rtol=1e-6, err_msg=name)
