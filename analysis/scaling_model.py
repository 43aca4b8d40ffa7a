"""Time per training step as compute plus ring-allreduce communication: fit, hold-out check, predictions.

One step of data-parallel training with per-worker batch b on N workers, a gradient of M bytes and
CPU oversubscription rho (workers x threads per worker / CPUs on the node, at least 1; 1 on GPUs) takes

    T(b, N) = rho (c0 + c1 b + [N > 1] (2 (N - 1) alpha + 2 (N - 1) / N · M beta))   seconds,

with c0 the fixed compute and overhead per step, c1 the compute per sample, alpha the latency of one
hop of a ring allreduce and beta = 1 / bandwidth its seconds per byte (a ring allreduce sends 2 (N - 1)
messages of M / N bytes: Thakur et al. 2005, Patarasuk & Yuan 2009). The model is linear in
(c0, c1, alpha, beta), all >= 0. Predicted time to target = steps to target (analysis/critical_batch.py)
x time per step.

Oversubscription multiplies the whole step, communication included: when worker processes outnumber
the cores, each gets 1/rho of a core for everything it does, and a ring allreduce's every hop waits
for the slowest, time-shared process. (On this 2-core machine, 4 workers measured 26.5 ms per step
where rho x compute + communication predicted 10 ms; rho x (compute + communication) predicts 23 ms.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from analysis.critical_batch import CriticalBatchFit

NAMES = ("compute_fixed_s", "compute_per_sample_s", "latency_s", "seconds_per_byte")
STEP_COLUMNS = ("per_worker_batch", "workers", "gradient_bytes", "oversubscription", "time_per_step_s")
CANDIDATE_COLUMNS = STEP_COLUMNS[:4]
_PRIORITY = (0, 1, 3, 2)  # which parameter keeps a collinear pair: fixed over per-sample, bandwidth over latency
_NOTES = {
    "per_sample": "every cell has the same per-worker batch: compute per sample cannot be told apart from fixed "
                  "compute, folded into it.",
    "latency": "latency and bandwidth cannot be told apart with these worker counts (it needs two above 1): "
               "latency folded into bandwidth.",
    "bandwidth": "bandwidth cannot be told apart from the other terms with these cells: folded into them.",
    "communication": "communication cannot be told apart from compute with these cells: folded into the compute "
                     "terms.",
    "single": "no cell has more than one worker: communication (latency, bandwidth) not identified, set to 0.",
}

FloatArray = npt.NDArray[np.float64]


def step_design(per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike, gradient_bytes: npt.ArrayLike,
                oversubscription: npt.ArrayLike) -> FloatArray:
    """The model's design matrix, one row per (broadcast) cell: T = design @ (c0, c1, alpha, beta)."""
    b, n, m, rho = (a.ravel() for a in np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (
        per_worker_batch, workers, gradient_bytes, oversubscription))))
    hops = np.where(n > 1, 2 * (n - 1), 0.0)
    return rho[:, None] * np.column_stack([np.ones_like(b), b, hops, np.where(n > 1, hops / n * m, 0.0)])


@dataclass(frozen=True)
class StepTimeModel:
    """The fitted (c0, c1, alpha, beta) of T(b, N) above, in seconds, seconds per sample, seconds per
    hop and seconds per byte, with their covariance. A parameter the cells cannot determine is not
    identified: value 0, variance 0, and ``notes`` says why. relative_rms: rms of measured/fitted - 1."""

    names: ClassVar[tuple[str, ...]] = NAMES
    values: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    identified: tuple[bool, ...]
    cells: int
    relative_rms: float
    notes: tuple[str, ...] = ()

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Allreduce bandwidth 1/beta (inf without a bandwidth term)."""
        return 1 / self.values[3] if self.values[3] > 0 else math.inf

    def step_time(self, per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike, gradient_bytes: npt.ArrayLike,
                  oversubscription: npt.ArrayLike) -> FloatArray:
        """Seconds per step for each (broadcast, flattened) cell."""
        return step_design(per_worker_batch, workers, gradient_bytes, oversubscription) @ np.asarray(self.values)

    @property
    def residual_scale(self) -> float:
        """s, the relative scatter of a cell's time about the model: sqrt(RSS / (cells - parameters))."""
        free = self.cells - sum(self.identified)
        return self.relative_rms * math.sqrt(self.cells / free) if free > 0 else math.nan

    def sample_step_time(self, per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike,
                         gradient_bytes: npt.ArrayLike, oversubscription: npt.ArrayLike, rng: np.random.Generator,
                         draws: int, scatter: bool = True) -> FloatArray:
        """Seconds per step for ``draws`` draws of the parameters from their normal (clipped at 0), shape
        (draws, cells); NaN when the covariance is unknown (as many parameters as cells). With ``scatter``
        each draw also carries a cell's own relative scatter N(0, s^2) about the model, so that intervals
        cover a measured step time, not only the model's mean."""
        design = step_design(per_worker_batch, workers, gradient_bytes, oversubscription)
        keep = np.flatnonzero(self.identified)
        covariance = np.asarray(self.covariance, dtype=float)[np.ix_(keep, keep)]
        if not np.isfinite(covariance).all():
            return np.full((draws, design.shape[0]), np.nan)
        drawn = rng.multivariate_normal(np.asarray(self.values)[keep], covariance, size=draws, check_valid="ignore")
        times = np.clip(drawn, 0.0, None) @ design[:, keep].T
        if scatter:
            times *= np.clip(1 + self.residual_scale * rng.standard_normal(times.shape), 0.0, None)
        return times


def _usable(cells: pd.DataFrame) -> pd.DataFrame:
    values = cells[list(STEP_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
    ok = (np.isfinite(values).all(axis=1) & (values["time_per_step_s"] > 0) & (values["workers"] >= 1)
          & (values["per_worker_batch"] > 0) & (values["oversubscription"] > 0) & (values["gradient_bytes"] >= 0))
    return cells.loc[ok].assign(**{column: values.loc[ok, column] for column in STEP_COLUMNS})


def _identified_columns(scaled: FloatArray, multi_worker: bool) -> list[int]:
    """Columns kept in _PRIORITY order while each adds to the rank of the column-scaled design."""
    keep: list[int] = []
    for column in _PRIORITY if multi_worker else _PRIORITY[:2]:
        trial = sorted([*keep, column])
        if np.abs(scaled[:, column]).max() > 0 and np.linalg.matrix_rank(scaled[:, trial]) == len(trial):
            keep = trial
    return keep


def fit_step_time(cells: pd.DataFrame) -> StepTimeModel:
    """Fit (c0, c1, alpha, beta) >= 0 to the cells' STEP_COLUMNS by non-negative least squares on
    relative residuals (each row divided by its measured time: cells of 5 ms and 5 s count alike).

    Rows with a non-finite value or a non-positive time are ignored. Which parameters are identified
    is decided by the rank of the column-scaled design (see _PRIORITY for who keeps a collinear pair);
    no cell with 2+ workers leaves both communication terms out. Covariance s^2 (X^T X)^-1 over the
    identified parameters, s^2 = residual sum of squares / (rows - parameters), NaN when that is 0
    rows; it ignores the bound at 0. Raises ValueError when no row is usable.
    """
    from scipy import optimize

    data = _usable(cells)
    if data.empty:
        raise ValueError("no cell has a finite, positive time per step with finite batch, workers, bytes and rho")
    design = step_design(*(data[column].to_numpy() for column in CANDIDATE_COLUMNS))
    weighted = design / data["time_per_step_s"].to_numpy()[:, None]
    norms = np.linalg.norm(weighted, axis=0)
    scaled = weighted / np.where(norms > 0, norms, 1.0)
    multi_worker = bool((data["workers"] > 1).any())
    keep = _identified_columns(scaled, multi_worker)
    notes = [_NOTES["per_sample"]] if 1 not in keep else []
    if not multi_worker:
        notes.append(_NOTES["single"])
    elif 2 not in keep or 3 not in keep:
        notes.append(_NOTES["communication" if 2 not in keep and 3 not in keep else
                            "latency" if 3 in keep else "bandwidth"])
    rows = len(data)
    result = optimize.lsq_linear(scaled[:, keep], np.ones(rows), bounds=(0.0, np.inf), method="bvls")
    residual = scaled[:, keep] @ result.x - 1.0
    values, covariance = np.zeros(4), np.zeros((4, 4))
    values[keep] = result.x / norms[keep]
    if rows > len(keep):
        s2 = float(residual @ residual) / (rows - len(keep))
        inverse = np.linalg.inv(scaled[:, keep].T @ scaled[:, keep])
        covariance[np.ix_(keep, keep)] = s2 * inverse / np.outer(norms[keep], norms[keep])
    else:
        covariance[np.ix_(keep, keep)] = np.nan
        notes.append(f"{rows} cells for {len(keep)} parameters: no residual left to estimate the uncertainty from.")
    return StepTimeModel(values=tuple(float(v) for v in values),
                         covariance=tuple(tuple(float(v) for v in row) for row in covariance),
                         identified=tuple(column in keep for column in range(4)), cells=rows,
                         relative_rms=float(np.sqrt(np.mean(residual**2))), notes=tuple(notes))


def _interval(draws: FloatArray) -> tuple[FloatArray, FloatArray]:
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def holdout(cells: pd.DataFrame, rng_seed: int = 0, draws: int = 2000) -> pd.DataFrame | None:
    """Fit on the cells with fewer workers than the largest worker count and predict those at it.

    Returns the held-out (usable) rows with ``predicted_s``, its 95 % Monte-Carlo interval
    ``predicted_low_s``/``predicted_high_s`` and ``relative_error`` = predicted / measured - 1. None with
    fewer than 3 worker counts: the fit without the largest must keep one above 1, or it would know
    nothing of communication and its "prediction" would be the compute alone. The interval is NaN when
    the fit has no residual degree of freedom.
    """
    data = _usable(cells)
    counts = np.unique(data["workers"])
    if counts.size < 3 or counts[-2] <= 1:
        return None
    model = fit_step_time(data[data["workers"] < counts[-1]])
    held = data[data["workers"] == counts[-1]].copy()
    b, n, m, rho = (held[column].to_numpy() for column in CANDIDATE_COLUMNS)
    held["predicted_s"] = model.step_time(b, n, m, rho)
    held["predicted_low_s"], held["predicted_high_s"] = _interval(
        model.sample_step_time(b, n, m, rho, np.random.default_rng(rng_seed), draws))
    held["relative_error"] = held["predicted_s"] / held["time_per_step_s"] - 1
    return held


def predict(model: StepTimeModel, crit: CriticalBatchFit | None, candidates: pd.DataFrame, rng_seed: int = 0,
            draws: int = 2000) -> pd.DataFrame:
    """Predictions for each candidate (columns CANDIDATE_COLUMNS, optional ``oversubscription_1``, the rho
    a single worker would have, default 1), each with a 95 % Monte-Carlo interval (``*_low``/``*_high``
    before the unit suffix):

    global_batch (samples per step), time_per_step_s, throughput (samples/s), efficiency = T(b, 1 worker) /
    T(b, N) (weak scaling, point only), and with ``crit``: steps_to_target, time_to_target_s = steps x
    time per step and gpu_hours = N x that / 3600, the two fits drawn independently; NaN without ``crit``.
    """
    rng = np.random.default_rng(rng_seed)
    out = candidates.copy()
    b, n, m, rho = (pd.to_numeric(out[column]).to_numpy(dtype=float) for column in CANDIDATE_COLUMNS)
    rho1 = pd.to_numeric(out["oversubscription_1"]).fillna(1.0).to_numpy(dtype=float) \
        if "oversubscription_1" in out else 1.0
    batch = b * n
    time, time_draws = model.step_time(b, n, m, rho), model.sample_step_time(b, n, m, rho, rng=rng, draws=draws)
    out["global_batch"] = batch
    out["time_per_step_s"] = time
    low, high = _interval(time_draws)
    out["time_per_step_low_s"], out["time_per_step_high_s"] = low, high
    out["throughput"], out["throughput_low"], out["throughput_high"] = batch / time, batch / high, batch / low
    out["efficiency"] = model.step_time(b, 1, m, rho1) / time
    targets = ("steps_to_target", "time_to_target_s", "gpu_hours")
    if crit is None:
        for name in targets:
            out[name] = out[_bound(name, "low")] = out[_bound(name, "high")] = np.nan
        return out
    steps_draws = crit.sample_steps(batch, rng, draws)
    values = {"steps_to_target": crit.steps(batch), "time_to_target_s": crit.steps(batch) * time}
    values["gpu_hours"] = n * values["time_to_target_s"] / 3600
    samples = {"steps_to_target": steps_draws, "time_to_target_s": steps_draws * time_draws}
    samples["gpu_hours"] = n * samples["time_to_target_s"] / 3600
    for name in targets:
        out[name] = values[name]
        out[_bound(name, "low")], out[_bound(name, "high")] = _interval(samples[name])
    return out


def _bound(name: str, side: str) -> str:
    return f"{name[:-2]}_{side}_s" if name.endswith("_s") else f"{name}_{side}"


def pareto_front(time_s: npt.ArrayLike, cost: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True for rows no other row dominates (as fast and as cheap, and strictly better in one). Rows with a
    NaN are never on the front and dominate nothing."""
    time, spent = np.asarray(time_s, dtype=float), np.asarray(cost, dtype=float)
    valid = np.isfinite(time) & np.isfinite(spent)
    t, c = time[valid], spent[valid]
    as_good = (t[:, None] <= t[None, :]) & (c[:, None] <= c[None, :])  # [j, i]: row j at least as good as row i
    better = (t[:, None] < t[None, :]) | (c[:, None] < c[None, :])
    front = np.zeros(time.shape, dtype=bool)
    front[valid] = ~(as_good & better).any(axis=0)
    return front


@dataclass(frozen=True)
class Choice:
    """One configuration to reach the target: time to target (s) and GPU-hours with 95 % intervals (for
    a measured one, its own columns if given, else the value itself); source "measured" or "predicted"."""

    workers: float
    per_worker_batch: float
    global_batch: float
    time_to_target_s: float
    low: float
    high: float
    gpu_hours: float
    gpu_hours_low: float
    gpu_hours_high: float
    source: str
    cell: str | None


def _options(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    frame = rows.reset_index(drop=True)
    time = pd.to_numeric(frame["time_to_target_s"], errors="coerce")
    hours = pd.to_numeric(frame["gpu_hours"], errors="coerce")
    return pd.DataFrame({
        "workers": frame["workers"], "per_worker_batch": frame["per_worker_batch"],
        "global_batch": frame["global_batch"], "time_to_target_s": time,
        "low": frame.get("time_to_target_low_s", time), "high": frame.get("time_to_target_high_s", time),
        "gpu_hours": hours, "gpu_hours_low": frame.get("gpu_hours_low", hours),
        "gpu_hours_high": frame.get("gpu_hours_high", hours), "source": source,
        "cell": frame["cell"].astype(object) if source == "measured" and "cell" in frame else None})


def choose(measured: pd.DataFrame, predicted: pd.DataFrame) -> tuple[Choice | None, Choice | None]:
    """(fastest, cheapest): least time to target and least GPU-hours to it, over the measured rows
    that reached the target and the predicted rows of (workers, per_worker_batch) pairs not measured
    (a pair that ran and did not reach the target is not replaced by a prediction). Ties go to fewer
    workers, then the smaller batch. None when no row has a finite value."""
    parts = [_options(measured, "measured")] if len(measured) else []
    if len(predicted) and "time_to_target_s" in predicted:
        ran = set(zip(measured["workers"].astype(float), measured["per_worker_batch"].astype(float).round(9))) \
            if len(measured) else set()
        pairs = zip(predicted["workers"].astype(float), predicted["per_worker_batch"].astype(float).round(9))
        parts.append(_options(predicted[[pair not in ran for pair in pairs]], "predicted"))
    options = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return _best(options, "time_to_target_s"), _best(options, "gpu_hours")


def _best(options: pd.DataFrame, by: str) -> Choice | None:
    if options.empty:
        return None
    finite = options[np.isfinite(options[by].astype(float))]
    if finite.empty:
        return None
    row = finite.sort_values([by, "workers", "per_worker_batch"], kind="stable").iloc[0]
    numbers = {name: float(row[name]) for name in Choice.__dataclass_fields__ if name not in ("source", "cell")}
    cell = row["cell"]
    return Choice(**numbers, source=str(row["source"]), cell=None if cell is None or pd.isna(cell) else str(cell))
