"""The numbers a scaling study reports, as pure functions.

- steady-state throughput (samples/s) with a 95 % interval,
- time to a target validation accuracy with the course's patience rule,
- speed-up and weak-scaling efficiency against the 1-worker run,
- the mean of repeated measurements with its Student's t interval.

Definitions follow /work/shared/COURSE.md ("Definitions the analysis uses").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

Z_95 = 1.96
"""Two-sided 95 % quantile of the normal distribution."""

REPLICATE_AXES = ("repeat", "seed")
"""Grid axes whose values are replicates of one measurement: analysis averages over them."""


@dataclass(frozen=True)
class Replicates:
    """The mean of n repeated measurements and the half-width of its 95 % Student's t
    interval, t(0.975, n-1)·s/√n (NaN for n < 2: one run says nothing about the spread)."""

    mean: float
    ci95: float
    n: int


def across_replicates(values: Sequence[float | None]) -> Replicates:
    from scipy import stats

    measured = np.asarray([v for v in values if v is not None], dtype=float)
    measured = measured[np.isfinite(measured)]
    if measured.size == 0:
        return Replicates(float("nan"), float("nan"), 0)
    if measured.size == 1:
        return Replicates(float(measured[0]), float("nan"), 1)
    t = float(stats.t.ppf(0.975, measured.size - 1))
    return Replicates(float(measured.mean()), t * float(measured.std(ddof=1)) / math.sqrt(measured.size),
                      int(measured.size))


@dataclass(frozen=True)
class Throughput:
    """Steady-state throughput of one run.

    mean: mean of the per-epoch samples/s that were kept.
    ci95: half-width of the 95 % interval of that mean (samples/s); NaN when only
        one epoch was kept, because one value says nothing about the spread.
    epochs: how many epochs the mean is over.
    """

    mean: float
    ci95: float
    epochs: int


def steady_state_throughput(
    samples_per_s: Sequence[float | None],
    startup: Sequence[bool] | None = None,
) -> Throughput:
    """Mean per-epoch throughput leaving out the epochs that carry start-up costs.

    By default only the first epoch is a start-up epoch (data loader warm-up, first
    allreduce, allocator growth); pass ``startup`` to also flag, e.g., the first
    epoch after a requeued job resumed. Start-up epochs are dropped only while at
    least one other epoch remains, so a 1-epoch run still gets a number.
    Non-finite values (None, NaN) are ignored.

    The interval is mean ± 1.96·s/√n with s the sample standard deviation
    (ddof=1) of the kept per-epoch values: the normal approximation of a 95 %
    confidence interval of the mean. Horovod's synthetic benchmark reports
    mean ± 1.96·std of per-iteration rates, i.e. the spread of single
    measurements; dividing by √n makes it an interval for the mean instead. With
    few epochs it is optimistic: Student's t would use 4.30 instead of 1.96 for
    n = 3.
    """
    values = steady_values(samples_per_s, startup)
    if values.size == 0:
        return Throughput(mean=float("nan"), ci95=float("nan"), epochs=0)
    if values.size == 1:
        return Throughput(mean=float(values[0]), ci95=float("nan"), epochs=1)
    half_width = Z_95 * values.std(ddof=1) / np.sqrt(values.size)
    return Throughput(mean=float(values.mean()), ci95=float(half_width), epochs=int(values.size))


def steady_values(per_epoch: Sequence[float | None], startup: Sequence[bool] | None = None) -> np.ndarray:
    """The finite per-epoch values with the start-up epochs left out (by default the first), unless
    that would leave none."""
    values = np.asarray(per_epoch, dtype=float)
    if startup is None:
        is_startup = np.arange(values.size) == 0
    else:
        is_startup = np.asarray(startup, dtype=bool)
        if is_startup.shape != values.shape:
            raise ValueError("startup flags must match the per-epoch values in length")
    measured = np.isfinite(values)
    kept = measured & ~is_startup
    return values[kept if kept.any() else measured]


def time_to_accuracy(
    train_time_s: Sequence[float],
    val_accuracy: Sequence[float | None],
    target: float | None,
    patience: int | None = 1,
) -> float | None:
    """Training time (s) at which the run is known to hold the target accuracy.

    Both sequences are per epoch, in epoch order; ``train_time_s`` is cumulative
    training wall time (start-up excluded). The run reaches the target at the
    first epoch e whose validation accuracy is ≥ target at e, e+1, …, e+p-1
    (p = ``patience`` consecutive epochs; p ≤ 1 or None means the first epoch at
    or above target). The returned time is ``train_time_s`` at epoch e+p-1.

    This is the course's convention (Lab 1 stops once the accuracy stayed above
    the target for ``patience`` epochs and reports the cumulative time then), not
    DAWNBench/MLPerf's, which stop the clock at epoch e itself. With p = 1 the
    two agree. Returns None when the criterion is never met or no target is set;
    a missing (None/NaN) accuracy counts as below target.
    """
    times = np.asarray(train_time_s, dtype=float)
    if times.shape != np.asarray(val_accuracy, dtype=float).shape:
        raise ValueError("train_time_s and val_accuracy must have the same length")
    index = epoch_at_target(val_accuracy, target, patience)
    return None if index is None else float(times[index])


def epoch_at_target(val_accuracy: Sequence[float | None], target: float | None,
                    patience: int | None = 1) -> int | None:
    """The position (0-based, in epoch order) of the epoch e+p-1 at which the run is known to hold
    the target (time_to_accuracy's rule); every other "to target" quantity is read there."""
    if target is None or not np.isfinite(target):
        return None
    needed = max(1, int(patience or 1))
    streak = 0
    for index, at_target in enumerate(np.asarray(val_accuracy, dtype=float) >= target):
        streak = streak + 1 if at_target else 0
        if streak >= needed:
            return index
    return None


def epoch_at_loss_or_accuracy_target(val_accuracy: Sequence[float | None], val_loss: Sequence[float | None],
                                     target_accuracy: float | None, target_loss: float | None,
                                     patience: int | None = 1) -> int | None:
    """epoch_at_target on the cell's own target: validation loss at or below target_loss when it
    sets one (a language model's), else validation accuracy at or above target_accuracy."""
    if target_loss is not None and np.isfinite(target_loss):
        negated = [-float(loss) if loss is not None else math.nan for loss in val_loss]
        return epoch_at_target(negated, -float(target_loss), patience)
    return epoch_at_target(val_accuracy, target_accuracy, patience)


def steady_step_time(steps_s: Sequence[float | None], steps: Sequence[float | None],
                     startup: Sequence[bool] | None = None) -> float | None:
    """Seconds per training step in steady state: the median over the epochs (start-up epochs left
    out as for throughput) of each epoch's steps time / its steps."""
    per_step = np.asarray(steps_s, dtype=float) / np.asarray(steps, dtype=float)
    values = steady_values(np.where(per_step > 0, per_step, np.nan).tolist(), startup)
    return float(np.median(values)) if values.size else None


def pooled_noise_scale(gradient_sq_norm: Sequence[float | None], gradient_trace: Sequence[float | None]) -> float | None:
    """B_simple over several epochs: the mean of their tr(Sigma) estimates over the mean of their
    |G|^2 estimates (each unbiased, so their means are; the ratio is taken once, of the smoothed
    values). Epochs without an estimate are left out; None when the pooled |G|^2 is not positive."""
    norms = np.asarray(gradient_sq_norm, dtype=float)
    traces = np.asarray(gradient_trace, dtype=float)
    both = np.isfinite(norms) & np.isfinite(traces)
    if not both.any() or norms[both].mean() <= 0 or traces[both].mean() <= 0:
        return None
    return float(traces[both].mean() / norms[both].mean())


def speedup_and_efficiency(
    runs: pd.DataFrame,
    grid_axes: Sequence[str],
    workers: str = "gpus",
    throughput: str = "throughput",
    status: str = "status",
    scaling: str = "weak",
) -> pd.DataFrame:
    """Speed-up S = X_N / X_1 and scaling efficiency E = X_N / (N·X_1) per row.

    X_1 is the throughput of the row with ``workers`` == 1 and the same value of
    every other grid axis (warm-up, lr scaling, ...) and of the batch: weak scaling
    matches the per-worker batch (``batch_size``), which is what data-parallel
    training does; strong scaling matches the global batch (``global_batch``), so
    each worker's share shrinks as N grows. With the same samples per epoch in
    both runs, X_N / (N·X_1) = T_1 / (N·T_N), the strong-scaling efficiency. N is
    the row's ``workers`` value. S and E are NaN when that 1-worker baseline is
    missing or did not finish with status "complete". Replicate axes
    (REPLICATE_AXES: repeat, seed) are not matched on: the baseline is the mean over
    every repeat of the 1-worker cell.

    Returns a frame with columns ``speedup`` and ``efficiency`` on ``runs.index``.
    """
    if workers not in runs.columns:
        raise KeyError(f"runs has no {workers!r} column")
    if scaling == "strong":
        grid_axes = ["global_batch" if axis == "batch_size" else axis for axis in grid_axes]
    match_on = [axis for axis in grid_axes
                if axis != workers and axis not in REPLICATE_AXES and axis in runs.columns]
    worker_count = pd.to_numeric(runs[workers], errors="coerce").astype(float)
    own_throughput = pd.to_numeric(runs[throughput], errors="coerce").astype(float)
    is_baseline = (worker_count == 1) & (runs[status] == "complete")
    baselines = runs.loc[is_baseline, match_on].assign(baseline=own_throughput[is_baseline])

    if match_on:
        baseline_per_key = baselines.groupby(match_on, dropna=False, as_index=False)["baseline"].mean()
        matched = runs[match_on].merge(baseline_per_key, how="left", on=match_on)
        baseline = pd.Series(matched["baseline"].to_numpy(), index=runs.index)
    else:
        baseline = pd.Series(baselines["baseline"].mean(), index=runs.index, dtype=float)

    speedup = own_throughput / baseline
    return pd.DataFrame({"speedup": speedup, "efficiency": speedup / worker_count}, index=runs.index)
