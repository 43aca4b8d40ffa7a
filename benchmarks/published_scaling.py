"""The step-time model (analysis/scaling_model.py) against published measurements of real clusters.

Each table is split as issue 20 fixed it before this file was run: the model is fitted on the first worker
counts and predicts the rest, which it never saw. Printed per prediction: measured and predicted
throughput, predicted / measured time per step, and whether the 95 % interval holds the measurement; then
how many predictions are within 10 % and how many intervals hold.

    .venv/bin/python benchmarks/published_scaling.py

The numbers are copied from the sources' own text tables (none read off a plot):

* Horovod's README, September 2017 (horovod/horovod, commit d54e3a88, README.md): tf_cnn_benchmarks,
  synthetic data, batch 64 per GPU, Pascal GPUs, 4 GPUs per server, RoCE-capable 25 Gbit/s network; images/s
  on 1 GPU and on 16 GPUs with RDMA Horovod and NCCL. Scaling efficiency at 128 GPUs from the README at commit
  6bb6a2db, at 512 GPUs from docs/benchmarks.rst (same network and servers). Fitted on 1, 16 and 128 GPUs;
  predicts 512 (4x beyond the fit, across 128 servers). Its 40 Gbit/s table has only 1 and 64 GPUs and cannot
  be split.
* NVIDIA DeepLearningExamples, MXNet ResNet-50 v1.5 (MxNet/Classification/RN50v1.5/README.md), weak scaling
  within one node: DGX-2 (16 V100 32 GB, NVSwitch), batch per GPU 256 mixed / 128 fp32; DGX-1 (8 V100), 192
  mixed / 96 fp32; images/s. Fitted on 1, 2 and 4 GPUs; predicts 8 and 16.
* Parameter counts (keras.io applications table): Inception V3 23,851,784, ResNet-101 44,707,176, VGG-16
  138,357,544, ResNet-50 25,636,712; gradients of 4 bytes each (2 in mixed precision). Within one table the
  gradient size is a constant, so it scales the fitted bandwidth and changes no prediction.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.scaling_model import CANDIDATE_COLUMNS, fit_step_time

HOROVOD_PER_NODE, HOROVOD_BATCH = 4, 64
WITHIN = 0.10


@dataclass(frozen=True)
class Table:
    """One published table: images/s per GPU count, the GPU counts to fit on, and the setup."""

    name: str
    source: str
    per_worker_batch: int
    workers_per_node: int
    gradient_bytes: float
    throughput: dict[int, float]
    fitted_on: tuple[int, ...]


def horovod(name: str, parameters: int, single: float, sixteen: float, efficiency_128: float,
            efficiency_512: float) -> Table:
    """A stated efficiency E at N GPUs is a throughput of E x N x the single GPU's."""
    return Table(f"Horovod 2017, {name}", "Horovod README 2017 (25 Gbit/s RoCE)", HOROVOD_BATCH, HOROVOD_PER_NODE,
                 4.0 * parameters, {1: single, 16: sixteen, 128: efficiency_128 * 128 * single,
                                    512: efficiency_512 * 512 * single}, (1, 16, 128))


RESNET50 = 25_636_712
TABLES = (
    horovod("Inception V3", 23_851_784, 134.4, 2022.6, 0.90, 0.90),
    horovod("ResNet-101", 44_707_176, 119.4, 1746.2, 0.90, 0.90),
    horovod("VGG-16", 138_357_544, 130.9, 1787.4, 0.79, 0.68),
    Table("DGX-2, RN50 mixed", "NVIDIA DeepLearningExamples MXNet", 256, 16, 2.0 * RESNET50,
          {1: 1492, 2: 2935, 4: 5726, 8: 11368, 16: 21484}, (1, 2, 4)),
    Table("DGX-2, RN50 fp32", "NVIDIA DeepLearningExamples MXNet", 128, 16, 4.0 * RESNET50,
          {1: 417, 2: 821, 4: 1623, 8: 3223, 16: 6338}, (1, 2, 4)),
    Table("DGX-1, RN50 mixed", "NVIDIA DeepLearningExamples MXNet", 192, 8, 2.0 * RESNET50,
          {1: 1376, 2: 2768, 4: 5357, 8: 10723}, (1, 2, 4)),
    Table("DGX-1, RN50 fp32", "NVIDIA DeepLearningExamples MXNet", 96, 8, 4.0 * RESNET50,
          {1: 384, 2: 763, 4: 1513, 8: 3005}, (1, 2, 4)),
)


def measurements(table: Table) -> pd.DataFrame:
    """The table as the model's cells: time per step = per-worker batch x workers / throughput."""
    workers = np.array(sorted(table.throughput), dtype=float)
    throughput = np.array([table.throughput[int(n)] for n in workers])
    return pd.DataFrame({"per_worker_batch": float(table.per_worker_batch), "workers": workers,
                         "workers_per_node": float(table.workers_per_node), "gradient_bytes": table.gradient_bytes,
                         "oversubscription": 1.0, "throughput": throughput,
                         "time_per_step_s": table.per_worker_batch * workers / throughput})


def validate(table: Table, draws: int = 4000) -> pd.DataFrame:
    cells = measurements(table)
    fitted = cells["workers"].isin(table.fitted_on)
    model = fit_step_time(cells[fitted])
    held = cells[~fitted].copy()
    b, n, k, m, rho = (held[column].to_numpy() for column in CANDIDATE_COLUMNS)
    held["predicted_s"] = model.step_time(b, n, k, m, rho)
    low, high = np.percentile(model.sample_step_time(b, n, k, m, rho, rng=np.random.default_rng(0), draws=draws),
                              [2.5, 97.5], axis=0)
    held["low_s"], held["high_s"] = low, high
    held["predicted_throughput"] = held["per_worker_batch"] * held["workers"] / held["predicted_s"]
    held["ratio"] = held["predicted_s"] / held["time_per_step_s"]
    held["holds"] = (low <= held["time_per_step_s"]) & (held["time_per_step_s"] <= high)
    held["table"], held["form"] = table.name, f"{model.form.text()}"
    held["fitted_on"] = ", ".join(str(n) for n in table.fitted_on)
    return held


def main() -> None:
    rows = pd.concat([validate(table) for table in TABLES], ignore_index=True)
    shown = pd.DataFrame({
        "table": rows["table"], "fitted on": rows["fitted_on"], "predicts": rows["workers"].astype(int),
        "measured img/s": rows["throughput"].round(0).astype(int),
        "predicted img/s": rows["predicted_throughput"].round(0).astype(int),
        "predicted/measured time": rows["ratio"].map(lambda value: f"{value:.3f}"),
        "95 % interval (time, /measured)": [f"{low / t:.3f} to {high / t:.3f}" for low, high, t in
                                             zip(rows["low_s"], rows["high_s"], rows["time_per_step_s"])],
        "holds": rows["holds"].map({True: "yes", False: "no"}), "form chosen": rows["form"]})
    print(shown.to_string(index=False))
    within = int(((rows["ratio"] - 1).abs() <= WITHIN).sum())
    print(f"\n{within} of {len(rows)} predictions within {WITHIN:.0%} of the measurement; the 95 % interval holds "
          f"{int(rows['holds'].sum())} of {len(rows)}.")


if __name__ == "__main__":
    main()
