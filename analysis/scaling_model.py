"""Time per training step as compute plus a hierarchical allreduce: forms, fit, hold-out check.

One step of data-parallel training with per-worker batch b on N workers placed k to a node (n = ceil(N / k)
nodes), a gradient of M bytes and CPU oversubscription rho (workers x threads per worker / CPUs on the node,
at least 1; 1 on GPUs) takes

    T = rho · combine_gamma(compute, communication)                                         seconds,
    compute       = c0 + c1 b
    communication = [k > 1] (L(k) alpha_in + 2 (k - 1) / k · M beta_in)          inside each node
                  + [n > 1] (L(n) alpha_across + 2 (n - 1) / n · M beta_across)  across the nodes
    combine_1(a, c) = a + c,   combine_gamma(a, c) = (a^gamma + c^gamma)^(1 / gamma),  1 <= gamma <= 10.

The communication is a hierarchical allreduce as NCCL and Horovod's hierarchical mode do it: reduce inside the
node, allreduce across nodes, broadcast inside; each stage moves 2 (p - 1) / p of the gradient per link
(Thakur et al. 2005, Patarasuk & Yuan 2009). The latency of a stage grows as L(p) = 2 (p - 1) hops for a ring
or 2 log2 p for a tree (NCCL's trees across nodes). gamma is the overlap of communication with the backward
pass (Pollux, Qiao et al. OSDI 2021, adaptdl/goodput.py): 1 = none, towards 10 = communication hidden behind
compute. c0 the fixed compute and overhead per step, c1 the compute per sample, alpha a latency per hop,
beta = 1 / bandwidth in seconds per byte. Predicted time to target = steps to target
(analysis/critical_batch.py) x time per step.

A form is the latency shape (ring or tree) and whether gamma is fitted. fit_step_time chooses it by the error
of each form on the largest worker count when fitted without it; on a tie (the data cannot tell the forms apart)
or with too few worker counts to hold one out, it keeps the first of FORMS: ring, no overlap. Parameters the
cells cannot determine are pinned (see _PRIORITY), and the notes say so.

Oversubscription multiplies the whole step, communication included: when worker processes outnumber
the cores, each gets 1/rho of a core for everything it does, and a ring allreduce's every hop waits
for the slowest, time-shared process. (On this 2-core machine, 4 workers measured 26.5 ms per step
where rho x compute + communication predicted 10 ms; rho x (compute + communication) predicts 23 ms.)

Uncertainty: the relative scatter sigma of one measured step time about the model has a scaled inverse
chi-square prior, NOISE_PRIOR worth NOISE_PRIOR_WEIGHT measurements, updated by the fit's residuals; intervals
draw sigma from its posterior, the parameters from N(fit, sigma^2 (J^T J)^-1) and a measurement's own scatter
N(0, sigma^2), so a fit with no residual left still gets a stated, wide interval instead of none or a falsely
narrow one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:
    from analysis.critical_batch import CriticalBatchFit

NAMES = ("compute_fixed_s", "compute_per_sample_s", "latency_in_node_s", "seconds_per_byte_in_node",
         "latency_across_nodes_s", "seconds_per_byte_across_nodes")
OVERLAP = "overlap"
STEP_COLUMNS = ("per_worker_batch", "workers", "workers_per_node", "gradient_bytes", "oversubscription",
                "time_per_step_s")
CANDIDATE_COLUMNS = STEP_COLUMNS[:5]
# Which parameter keeps a collinear set: compute first, then the link across nodes (the slow one wherever
# cells cross nodes: what the data cannot split between the two links goes to it), bandwidth before latency.
_PRIORITY = (0, 1, 5, 4, 3, 2)
COMPUTE, COMMUNICATION = (0, 1), (2, 3, 4, 5)
MAX_OVERLAP = 10.0
# Run-to-run scatter of one throughput measurement on a shared cluster is commonly 1-5 %: 3 %, worth two
# measurements, so that the cells' own residuals outweigh it as soon as there are a few.
NOISE_PRIOR, NOISE_PRIOR_WEIGHT = 0.03, 2.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Form:
    """How the latency grows with the workers of a stage (ring: 2 (p - 1) hops, tree: 2 log2 p) and whether
    communication overlaps the backward pass (a fitted gamma) or adds to it (gamma = 1)."""

    latency: str
    overlap: bool

    def text(self) -> str:
        return f"{self.latency} latency, {'overlap fitted' if self.overlap else 'no overlap'}"


FORMS = (Form("ring", False), Form("tree", False), Form("ring", True), Form("tree", True))


def hops(participants: FloatArray, latency: str) -> FloatArray:
    """Latency steps of one allreduce stage among p participants: 2 (p - 1) for a ring, 2 log2 p for a tree."""
    p = np.maximum(participants, 1.0)
    return 2 * (p - 1) if latency == "ring" else 2 * np.log2(p)


def placement(workers: FloatArray, workers_per_node: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(workers on each node k, nodes n): k = min(workers per node, N), all on one node where it is unknown."""
    per_node = np.where(np.isfinite(workers_per_node) & (workers_per_node > 0),
                        np.minimum(workers_per_node, workers), workers)
    return per_node, np.ceil(workers / per_node - 1e-9)


def step_design(per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike, workers_per_node: npt.ArrayLike,
                gradient_bytes: npt.ArrayLike, latency: str = "ring") -> FloatArray:
    """One row per (broadcast) cell, one column per parameter of NAMES: compute = row[:2] @ values[:2],
    communication = row[2:] @ values[2:] (no oversubscription)."""
    b, n, per_node, m = (a.ravel() for a in np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (
        per_worker_batch, workers, workers_per_node, gradient_bytes))))
    k, nodes = placement(n, per_node)
    inside, across = k > 1, nodes > 1
    return np.column_stack([
        np.ones_like(b), b,
        np.where(inside, hops(k, latency), 0.0), np.where(inside, 2 * (k - 1) / k * m, 0.0),
        np.where(across, hops(nodes, latency), 0.0), np.where(across, 2 * (nodes - 1) / nodes * m, 0.0)])


def combine(compute: npt.ArrayLike, communication: npt.ArrayLike, gamma: npt.ArrayLike) -> FloatArray:
    """(a^gamma + c^gamma)^(1/gamma), written so that large gamma and zeros neither overflow nor divide by 0."""
    a, c, g = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (compute, communication, gamma)))
    high, low = np.maximum(a, c), np.minimum(a, c)
    ratio = np.divide(low, high, out=np.zeros_like(high), where=high > 0)
    return high * (1 + ratio**g) ** (1 / g)


@dataclass(frozen=True)
class StepTimeModel:
    """The fitted parameters of T above (seconds, seconds per sample, seconds per hop, seconds per byte, for
    each link) and the overlap gamma, with their covariance (7 x 7, gamma last; 0 where not fitted). A
    parameter the cells cannot determine is not identified: value 0, and ``notes`` says why; where no cell
    crosses nodes, the link across nodes is taken to be the in-node one (``across_as_in_node``).
    relative_rms: rms of fitted/measured - 1; ``noise_scale`` and ``noise_dof``: the posterior scale and
    degrees of freedom of a measurement's relative scatter."""

    names: ClassVar[tuple[str, ...]] = NAMES
    values: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    identified: tuple[bool, ...]
    cells: int
    relative_rms: float
    form: Form = FORMS[0]
    overlap: float = 1.0
    noise_scale: float = NOISE_PRIOR
    noise_dof: float = NOISE_PRIOR_WEIGHT
    across_as_in_node: bool = False
    form_reason: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def residual_dof(self) -> int:
        return self.cells - sum(self.identified) - int(self.form.overlap)

    def bandwidth_bytes_per_s(self, link: str = "in_node") -> float:
        """1/beta of a link ("in_node" or "across_nodes"), inf without a bandwidth term."""
        beta = self.values[3 if link == "in_node" or self.across_as_in_node else 5]
        return 1 / beta if beta > 0 else math.inf

    def design(self, per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike, workers_per_node: npt.ArrayLike,
               gradient_bytes: npt.ArrayLike) -> FloatArray:
        design = step_design(per_worker_batch, workers, workers_per_node, gradient_bytes, self.form.latency)
        if self.across_as_in_node:
            design[:, 2:4] += design[:, 4:6]
            design[:, 4:6] = 0.0
        return design

    def step_time(self, per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike, workers_per_node: npt.ArrayLike,
                  gradient_bytes: npt.ArrayLike, oversubscription: npt.ArrayLike) -> FloatArray:
        """Seconds per step for each (broadcast, flattened) cell."""
        design = self.design(per_worker_batch, workers, workers_per_node, gradient_bytes)
        rho = np.broadcast_to(np.asarray(oversubscription, dtype=float), np.broadcast_shapes(
            *(np.shape(v) for v in (per_worker_batch, workers, workers_per_node, gradient_bytes,
                                    oversubscription)))).ravel()
        values = np.asarray(self.values)
        return rho * combine(design[:, :2] @ values[:2], design[:, 2:] @ values[2:], self.overlap)

    def sample_step_time(self, per_worker_batch: npt.ArrayLike, workers: npt.ArrayLike,
                         workers_per_node: npt.ArrayLike, gradient_bytes: npt.ArrayLike,
                         oversubscription: npt.ArrayLike, rng: np.random.Generator, draws: int,
                         scatter: bool = True) -> FloatArray:
        """Seconds per step for ``draws`` draws from the posterior (module docstring), shape (draws, cells).
        With ``scatter`` each draw also carries a measurement's own relative scatter, so that intervals cover a
        measured step time, not only the model's mean."""
        design = self.design(per_worker_batch, workers, workers_per_node, gradient_bytes)
        rho = np.broadcast_to(np.asarray(oversubscription, dtype=float), (design.shape[0],)) \
            if np.ndim(oversubscription) == 0 else np.asarray(oversubscription, dtype=float).ravel()
        free = [*np.flatnonzero(self.identified), *([6] if self.form.overlap else [])]
        mean = np.array([*self.values, self.overlap])
        unit = np.asarray(self.covariance, dtype=float)[np.ix_(free, free)] / self.noise_scale**2
        sigma = self.noise_scale * np.sqrt(self.noise_dof / rng.chisquare(self.noise_dof, size=draws))
        params = np.tile(mean, (draws, 1))
        params[:, free] += sigma[:, None] * rng.multivariate_normal(np.zeros(len(free)), unit, size=draws,
                                                                    check_valid="ignore", method="eigh")
        params[:, :6] = np.clip(params[:, :6], 0.0, None)
        gamma = np.clip(params[:, 6], 1.0, MAX_OVERLAP)[:, None]
        times = rho * combine(params[:, :2] @ design[:, :2].T, params[:, 2:6] @ design[:, 2:].T, gamma)
        if scatter:
            times *= np.clip(1 + sigma[:, None] * rng.standard_normal(times.shape), 0.0, None)
        return times


def _usable(cells: pd.DataFrame) -> pd.DataFrame:
    frame = cells if "workers_per_node" in cells else cells.assign(workers_per_node=np.nan)
    values = frame[list(STEP_COLUMNS)].apply(pd.to_numeric, errors="coerce").astype(float)
    values["workers_per_node"] = values["workers_per_node"].where(values["workers_per_node"] > 0,
                                                                  values["workers"])
    ok = (np.isfinite(values).all(axis=1) & (values["time_per_step_s"] > 0) & (values["workers"] >= 1)
          & (values["per_worker_batch"] > 0) & (values["oversubscription"] > 0) & (values["gradient_bytes"] >= 0))
    return frame.loc[ok].assign(**{column: values.loc[ok, column] for column in STEP_COLUMNS})


def _identified_columns(scaled: FloatArray) -> list[int]:
    """Columns kept in _PRIORITY order while each adds to the rank of the column-scaled design."""
    keep: list[int] = []
    for column in _PRIORITY:
        trial = sorted([*keep, column])
        if np.abs(scaled[:, column]).max() > 0 and np.linalg.matrix_rank(scaled[:, trial]) == len(trial):
            keep = trial
    return keep


def _notes(design: FloatArray, keep: list[int], multi_worker: bool) -> list[str]:
    notes = [] if 1 in keep else ["every cell has the same per-worker batch: compute per sample cannot be told "
                                  "apart from fixed compute, folded into it."]
    if not multi_worker:
        return [*notes, "no cell has more than one worker: communication (latency, bandwidth) not identified, "
                        "set to 0."]
    crosses, inside = bool(design[:, 4:].any()), bool(design[:, 2:4].any())
    if not crosses:
        notes.append("no cell crosses nodes: the link across nodes is taken to be the in-node one, so predictions "
                     "across nodes assume a network as fast as the node's own.")
    elif inside and not {2, 3} & set(keep):
        notes.append("the link inside a node cannot be told apart from the one across nodes with these cells "
                     "(they all put as many workers on each node): folded into it.")
    for latency, bandwidth, link in ((2, 3, "in-node"), (4, 5, "across-node")):
        if not design[:, bandwidth].any() or (link == "in-node" and crosses and not {2, 3} & set(keep)):
            continue
        if latency not in keep and bandwidth not in keep:
            notes.append(f"{link} communication cannot be told apart from compute with these cells: folded into "
                         "the compute terms.")
        elif latency not in keep:
            notes.append(f"{link} latency and bandwidth cannot be told apart with these worker counts (it needs "
                         "two above 1): latency folded into bandwidth.")
        elif bandwidth not in keep:
            notes.append(f"{link} bandwidth cannot be told apart from the other terms with these cells: folded "
                         "into them.")
    return notes


def _fit_form(data: pd.DataFrame, form: Form) -> StepTimeModel | None:
    """The least-squares fit of one form on relative residuals (each row divided by its measured time:
    cells of 5 ms and 5 s count alike), parameters >= 0; None for an overlap form the cells cannot fit (it
    needs cells of 2+ workers and a residual left after the linear terms)."""
    from scipy import optimize

    time = data["time_per_step_s"].to_numpy()
    b, n, k, m = (data[column].to_numpy() for column in CANDIDATE_COLUMNS[:4])
    design = step_design(b, n, k, m, form.latency)
    weighted = data["oversubscription"].to_numpy()[:, None] * design / time[:, None]
    norms = np.linalg.norm(weighted, axis=0)
    scaled = weighted / np.where(norms > 0, norms, 1.0)
    multi_worker = bool((data["workers"] > 1).any())
    keep = _identified_columns(scaled)
    compute, communication = [c for c in keep if c in COMPUTE], [c for c in keep if c in COMMUNICATION]
    rows = len(data)
    if form.overlap and (not communication or rows <= len(keep) + 1):
        return None
    result = optimize.lsq_linear(scaled[:, keep], np.ones(rows), bounds=(0.0, np.inf), method="bvls")
    unknowns, gamma = result.x, 1.0
    jacobian = scaled[:, keep]
    if form.overlap:
        def residual(x: FloatArray) -> FloatArray:
            u = dict(zip(keep, x[:-1]))
            return combine(scaled[:, compute] @ [u[c] for c in compute],
                           scaled[:, communication] @ [u[c] for c in communication], x[-1]) - 1.0

        lower, upper = np.zeros(len(keep) + 1), np.full(len(keep) + 1, np.inf)
        lower[-1], upper[-1] = 1.0, MAX_OVERLAP
        tries = [optimize.least_squares(residual, np.append(np.maximum(unknowns, 1e-3), start), bounds=(lower, upper),
                                        x_scale=1.0, xtol=1e-14, ftol=1e-14, gtol=1e-14)
                 for start in (1.5, 3.0, 6.0)]
        best = min(tries, key=lambda attempt: attempt.cost)
        unknowns, gamma, jacobian = best.x[:-1], float(best.x[-1]), best.jac
    fitted = combine(scaled[:, compute] @ unknowns[:len(compute)], scaled[:, communication] @ unknowns[len(compute):],
                     gamma) - 1.0
    free = len(keep) + int(form.overlap)
    rss = float(fitted @ fitted)
    dof = rows - free
    noise_dof = dof + NOISE_PRIOR_WEIGHT
    noise_scale = math.sqrt((rss + NOISE_PRIOR_WEIGHT * NOISE_PRIOR**2) / noise_dof)
    scale = np.append(norms[keep], 1.0)[:free]
    unit = np.linalg.pinv(jacobian.T @ jacobian) / np.outer(scale, scale)
    values, covariance = np.zeros(6), np.zeros((7, 7))
    values[keep] = unknowns / norms[keep]
    index = [*keep, *([6] if form.overlap else [])]
    covariance[np.ix_(index, index)] = noise_scale**2 * unit
    notes = _notes(design, keep, multi_worker)
    if dof <= 0:
        notes.append(f"{rows} cells for {free} parameters: no residual left to estimate the scatter from; the "
                     f"intervals rest on the prior of {NOISE_PRIOR:.0%} relative scatter per measurement.")
    if form.overlap:
        notes.append(f"communication overlaps compute with gamma = {gamma:.3g} (1: not at all, "
                     f"{MAX_OVERLAP:g}: hidden).")
    return StepTimeModel(values=tuple(float(v) for v in values),
                         covariance=tuple(tuple(float(v) for v in row) for row in covariance),
                         identified=tuple(column in keep for column in range(6)), cells=rows,
                         relative_rms=float(np.sqrt(np.mean(fitted**2))), form=form, overlap=gamma,
                         noise_scale=noise_scale, noise_dof=noise_dof,
                         across_as_in_node=multi_worker and not design[:, 4:].any(), notes=tuple(notes))


def _held_out_error(model: StepTimeModel, held: pd.DataFrame) -> float:
    predicted = model.step_time(*(held[column].to_numpy() for column in CANDIDATE_COLUMNS))
    return float(np.mean(np.abs(predicted / held["time_per_step_s"].to_numpy() - 1)))


def choose_form(data: pd.DataFrame) -> tuple[Form, str]:
    """The form with the least error on the largest worker count when fitted without it (mean |predicted /
    measured - 1|), and why; FORMS[0] when there are too few worker counts or the forms tie."""
    counts = np.unique(data["workers"])
    if counts.size < 3 or counts[-2] <= 1:
        return FORMS[0], "by default: choosing a form needs 3 worker counts, 2 of them above 1, to fit without the " \
                         "largest"
    fit, held = data[data["workers"] < counts[-1]], data[data["workers"] == counts[-1]]
    errors = {form: _held_out_error(model, held) for form in FORMS if (model := _fit_form(fit, form)) is not None}
    best = min(errors, key=lambda form: (round(errors[form], 6), FORMS.index(form)))
    tied = [form for form in errors if form != best and round(errors[form], 6) == round(errors[best], 6)]
    scores = ", ".join(f"{form.text()} {error:.1%}" for form, error in errors.items())
    reason = f"chosen by the error on the held-out {counts[-1]:g} workers when fitted without them ({scores})"
    if tied:
        reason += "; the forms that tie cannot be told apart by these cells, the first is kept"
    if len(errors) < len(FORMS):
        reason += "; an overlap cannot be fitted to so few cells"
    return best, reason


def fit_step_time(cells: pd.DataFrame, form: Form | None = None) -> StepTimeModel:
    """Fit the model to the cells' STEP_COLUMNS (workers_per_node optional: all on one node where missing), in
    the given form or the one choose_form picks. Rows with a non-finite value or a non-positive time are
    ignored. Which parameters are identified is decided by the rank of the column-scaled design (see _PRIORITY
    for who keeps a collinear set). Raises ValueError when no row is usable."""
    data = _usable(cells)
    if data.empty:
        raise ValueError("no cell has a finite, positive time per step with finite batch, workers, bytes and rho")
    reason = "given"
    if form is None:
        form, reason = choose_form(data)
    model = _fit_form(data, form)
    if model is None:
        raise ValueError(f"{form.text()} cannot be fitted to {len(data)} cells")
    return dataclasses.replace(model, form_reason=reason)


def _interval(draws: FloatArray) -> tuple[FloatArray, FloatArray]:
    return np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)


def holdout(cells: pd.DataFrame, rng_seed: int = 0, draws: int = 2000) -> pd.DataFrame | None:
    """Fit on the cells with fewer workers than the largest worker count (choosing the form among them alone)
    and predict those at it.

    Returns the held-out (usable) rows with ``predicted_s``, its 95 % Monte-Carlo interval
    ``predicted_low_s``/``predicted_high_s`` and ``relative_error`` = predicted / measured - 1. None with
    fewer than 3 worker counts: the fit without the largest must keep one above 1, or it would know
    nothing of communication and its "prediction" would be the compute alone.
    """
    data = _usable(cells)
    counts = np.unique(data["workers"])
    if counts.size < 3 or counts[-2] <= 1:
        return None
    model = fit_step_time(data[data["workers"] < counts[-1]])
    held = data[data["workers"] == counts[-1]].copy()
    b, n, k, m, rho = (held[column].to_numpy() for column in CANDIDATE_COLUMNS)
    held["predicted_s"] = model.step_time(b, n, k, m, rho)
    held["predicted_low_s"], held["predicted_high_s"] = _interval(
        model.sample_step_time(b, n, k, m, rho, rng=np.random.default_rng(rng_seed), draws=draws))
    held["relative_error"] = held["predicted_s"] / held["time_per_step_s"] - 1
    return held


def predict(model: StepTimeModel, crit: CriticalBatchFit | None, candidates: pd.DataFrame, rng_seed: int = 0,
            draws: int = 2000) -> pd.DataFrame:
    """Predictions for each candidate (columns CANDIDATE_COLUMNS, workers_per_node optional: all on one node
    where missing; optional ``oversubscription_1``, the rho
    a single worker would have, default 1), each with a 95 % Monte-Carlo interval (``*_low``/``*_high``
    before the unit suffix):

    global_batch (samples per step), time_per_step_s, throughput (samples/s), efficiency = T(b, 1 worker) /
    T(b, N) (weak scaling, point only), and with ``crit``: steps_to_target, time_to_target_s = steps x
    time per step and gpu_hours = N x that / 3600, the two fits drawn independently; NaN without ``crit``.
    """
    rng = np.random.default_rng(rng_seed)
    out = candidates.copy()
    if "workers_per_node" not in out:
        out["workers_per_node"] = out["workers"]
    b, n, k, m, rho = (pd.to_numeric(out[column]).to_numpy(dtype=float) for column in CANDIDATE_COLUMNS)
    rho1 = pd.to_numeric(out["oversubscription_1"]).fillna(1.0).to_numpy(dtype=float) \
        if "oversubscription_1" in out else 1.0
    batch = b * n
    time, time_draws = model.step_time(b, n, k, m, rho), model.sample_step_time(b, n, k, m, rho, rng=rng,
                                                                                    draws=draws)
    out["global_batch"] = batch
    out["time_per_step_s"] = time
    low, high = _interval(time_draws)
    out["time_per_step_low_s"], out["time_per_step_high_s"] = low, high
    out["throughput"], out["throughput_low"], out["throughput_high"] = batch / time, batch / high, batch / low
    out["efficiency"] = model.step_time(b, 1, 1, m, rho1) / time
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
    cost: float = math.nan  # GPU-hours x the hardware's price per GPU-hour; NaN where unpriced
    cost_low: float = math.nan
    cost_high: float = math.nan


def _options(rows: pd.DataFrame, source: str) -> pd.DataFrame:
    frame = rows.reset_index(drop=True)
    time = pd.to_numeric(frame["time_to_target_s"], errors="coerce")
    hours = pd.to_numeric(frame["gpu_hours"], errors="coerce")
    options = pd.DataFrame({
        "workers": frame["workers"], "per_worker_batch": frame["per_worker_batch"],
        "global_batch": frame["global_batch"], "time_to_target_s": time,
        "low": frame.get("time_to_target_low_s", time), "high": frame.get("time_to_target_high_s", time),
        "gpu_hours": hours, "gpu_hours_low": frame.get("gpu_hours_low", hours),
        "gpu_hours_high": frame.get("gpu_hours_high", hours), "source": source,
        **{name: pd.to_numeric(frame.get(name, frame.get("cost", np.nan)), errors="coerce")
           for name in ("cost", "cost_low", "cost_high")},
        "cell": frame["cell"].astype(object) if source == "measured" and "cell" in frame else None})
    numeric = [name for name in options.columns if name not in ("source", "cell")]
    options[numeric] = options[numeric].apply(pd.to_numeric, errors="coerce").astype(float)  # collect's <NA>: NaN
    return options


def choose(measured: pd.DataFrame, predicted: pd.DataFrame) -> tuple[Choice | None, Choice | None]:
    """(fastest, cheapest): least time to target and least cost to it (GPU-hours where unpriced), over the
    measured rows that reached the target and the predicted rows of (workers, per_worker_batch) pairs not measured
    (a pair that ran and did not reach the target is not replaced by a prediction). Ties go to fewer
    workers, then the smaller batch. None when no row has a finite value."""
    parts = [_options(measured, "measured")] if len(measured) else []
    if len(predicted) and "time_to_target_s" in predicted:
        ran = set(zip(measured["workers"].astype(float), measured["per_worker_batch"].astype(float).round(9))) \
            if len(measured) else set()
        pairs = zip(predicted["workers"].astype(float), predicted["per_worker_batch"].astype(float).round(9))
        parts.append(_options(predicted[[pair not in ran for pair in pairs]], "predicted"))
    options = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    spent = options[np.isfinite(options["gpu_hours"].astype(float))]["cost"].tolist() if len(options) else []
    return _best(options, "time_to_target_s"), _best(options, "cost" if in_money(spent) else "gpu_hours")


def in_money(costs: Sequence[float]) -> bool:
    """Whether "cheapest" compares money: every option it compares is priced; else GPU-hours."""
    values = pd.to_numeric(pd.Series(list(costs), dtype=object), errors="coerce").astype(float)  # <NA>: NaN
    return len(values) > 0 and bool(np.isfinite(values).all())


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
