"""The trade-off between steps and samples to reach a target, and the critical batch.

Training to a fixed target with global batch B takes S(B) optimizer steps and E(B) = B·S(B)
samples. McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") and Shallue et
al. (2018, "Measuring the Effects of Data Parallelism on Neural Network Training") find that the
two trade off along (S/S_min - 1)(E/E_min - 1) = 1, i.e.

    S(B) = S_min (1 + B_crit / B),    E(B) = E_min (1 + B / B_crit),    B_crit = E_min / S_min.

S_min is the fewest steps any batch can reach the target in, E_min the fewest samples, and
B_crit the batch at which both are twice their minimum. Well below B_crit doubling the batch
halves the steps (perfect scaling); well above it, it costs twice the samples for no fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

REGIME_FACTOR = 4
"""Regime boundaries: B <= B_crit / 4 is perfect scaling (steps within 25 % of the line S_min B_crit / B),
B >= 4 B_crit is no further gain (steps within 25 % of S_min), in between diminishing returns."""
REGIMES = ("perfect scaling", "diminishing returns", "no further gain")
MIN_BATCHES = 3
"""Distinct global batches the fit needs (two parameters, and one more to say how well they fit)."""
SEARCH_FACTOR = 1000.0
"""ln B_crit is searched within [min B / 1000, max B * 1000]; a fit on that bound is reported one-sided."""
_GRID_POINTS = 2001

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CriticalBatchFit:
    """S(B) = S_min (1 + B_crit / B) fitted to steps to target over global batch (samples).

    steps_min: S_min, optimizer steps at an unbounded batch. critical_batch: B_crit in samples.
    Intervals are 95 %. points: the (batch, steps) pairs fitted. log_params: (ln S_min, ln B_crit),
    log_covariance their covariance. at_bound: None, or "above"/"below" when B_crit ran into the
    search bound: "above" means every batch run is still in perfect scaling, so only a lower limit
    is known, interval (lower, inf); "below" means no batch run is small enough to gain from more
    batch, interval (0, upper). Then critical_batch is the bound itself, and log_covariance holds only
    the variance of ln S_min given B_crit (the data pin S_min B_crit = E_min for "above", S_min for "below").
    """

    steps_min: float
    critical_batch: float
    critical_batch_interval: tuple[float, float]
    steps_min_interval: tuple[float, float]
    points: int
    log_params: tuple[float, float]
    log_covariance: tuple[tuple[float, float], tuple[float, float]]
    at_bound: str | None = None

    @property
    def samples_min(self) -> float:
        """E_min = S_min B_crit, the fewest samples to the target (at a vanishing batch)."""
        return self.steps_min * self.critical_batch

    def steps(self, global_batch: npt.ArrayLike) -> FloatArray:
        """Steps to target at each global batch."""
        return self.steps_min * (1 + self.critical_batch / np.asarray(global_batch, dtype=float))

    def samples(self, global_batch: npt.ArrayLike) -> FloatArray:
        """Samples to target at each global batch (= batch x steps)."""
        return self.samples_min * (1 + np.asarray(global_batch, dtype=float) / self.critical_batch)

    def sample_steps(self, global_batch: npt.ArrayLike, rng: np.random.Generator, draws: int) -> FloatArray:
        """Steps to target at each global batch for ``draws`` draws of the parameters, shape (draws, len(batch)).

        Draws (ln S_min, ln B_crit) from the fitted normal. At a bound, B_crit is drawn log-uniformly
        over its one-sided interval cut at the search bound, with E_min ("above") or S_min ("below")
        drawn from its normal, since that is what the data determine there.
        """
        ln_batch = np.log(np.atleast_1d(np.asarray(global_batch, dtype=float)))
        mean = np.asarray(self.log_params, dtype=float)
        covariance = np.asarray(self.log_covariance, dtype=float)
        if not np.isfinite(covariance).all():
            return np.full((draws, ln_batch.size), np.nan)
        if self.at_bound is None:
            drawn = rng.multivariate_normal(mean, covariance, size=draws, check_valid="ignore")
            ln_steps_min, ln_critical = drawn[:, 0], drawn[:, 1]
        else:
            low, high = self.critical_batch_interval
            edge = math.log(low if self.at_bound == "above" else high)
            ln_critical = mean[1] + rng.uniform(size=draws) * (edge - mean[1])
            ln_steps_min = mean[0] + rng.normal(0.0, math.sqrt(covariance[0, 0]), size=draws)
            if self.at_bound == "above":
                ln_steps_min += mean[1] - ln_critical
        return np.exp(ln_steps_min[:, None] + np.logaddexp(0.0, ln_critical[:, None] - ln_batch[None, :]))


def _log_steps(ln_batch: FloatArray, ln_steps_min: float, ln_critical: float) -> FloatArray:
    return ln_steps_min + np.logaddexp(0.0, ln_critical - ln_batch)


def _log_steps_jacobian(ln_batch: FloatArray, ln_steps_min: float, ln_critical: float) -> FloatArray:
    from scipy.special import expit

    return np.column_stack([np.ones_like(ln_batch), expit(ln_critical - ln_batch)])


def _profile(ln_critical: FloatArray, ln_batch: FloatArray, ln_steps: FloatArray) -> tuple[FloatArray, FloatArray]:
    """For each ln B_crit the least-squares ln S_min (linear given B_crit) and the residual sum of squares."""
    shape = np.logaddexp(0.0, ln_critical[:, None] - ln_batch[None, :])
    ln_steps_min = (ln_steps[None, :] - shape).mean(axis=1)
    residual = ln_steps[None, :] - shape - ln_steps_min[:, None]
    return ln_steps_min, (residual**2).sum(axis=1)


def _accepted_run(accepted: npt.NDArray[np.bool_], best: int) -> tuple[int, int]:
    """First and last index of the run of accepted grid points around ``best`` (which counts as accepted)."""
    rejected = np.flatnonzero(~accepted)
    below, above = rejected[rejected < best], rejected[rejected > best]
    return (int(below[-1]) + 1 if below.size else 0), (int(above[0]) - 1 if above.size else accepted.size - 1)


def fit_critical_batch(global_batch: Sequence[float], steps_to_target: Sequence[float]) -> CriticalBatchFit | None:
    """Least-squares fit of ln S = ln S_min + ln(1 + B_crit / B) over (ln S_min, ln B_crit).

    The fit is on ln S because steps span orders of magnitude and their noise is multiplicative.
    Points may share a batch (replicates); non-finite or non-positive entries are ignored. Returns
    None with fewer than MIN_BATCHES distinct batches: through two, the two-parameter curve passes
    exactly whatever the data, so nothing would test it and its interval would be meaningless.
    Intervals: ln p ± t(0.975, n-2)·se from the covariance, exponentiated. When B_crit runs into its
    search bound (see SEARCH_FACTOR) the covariance says nothing, and the one-sided interval comes from
    the profile likelihood instead: the B_crit whose best residual sum of squares stays within
    RSS_min (1 + t^2 / (n-2)), the same t test for one parameter (Bates & Watts 1988). The same profile
    opens one side of an interior fit's interval when it stays accepted up to a search bound.
    """
    import warnings

    from scipy import optimize, stats

    batch, steps = np.asarray(global_batch, dtype=float), np.asarray(steps_to_target, dtype=float)
    if batch.shape != steps.shape:
        raise ValueError("global_batch and steps_to_target must have the same length")
    usable = np.isfinite(batch) & np.isfinite(steps) & (batch > 0) & (steps > 0)
    ln_batch, ln_steps = np.log(batch[usable]), np.log(steps[usable])
    n = int(ln_batch.size)
    if n < 3 or np.unique(ln_batch).size < MIN_BATCHES:
        return None
    lower, upper = ln_batch.min() - math.log(SEARCH_FACTOR), ln_batch.max() + math.log(SEARCH_FACTOR)
    grid = np.linspace(lower, upper, _GRID_POINTS)
    grid_ln_steps_min, grid_rss = _profile(grid, ln_batch, ln_steps)
    start = int(np.clip(np.argmin(grid_rss), 1, _GRID_POINTS - 2))  # curve_fit needs a start inside the bounds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        params, covariance = optimize.curve_fit(
            _log_steps, ln_batch, ln_steps, p0=(grid_ln_steps_min[start], grid[start]), jac=_log_steps_jacobian,
            bounds=([-np.inf, lower], [np.inf, upper]))
    rss = float(((ln_steps - _log_steps(ln_batch, *params)) ** 2).sum())
    t = float(stats.t.ppf(0.975, n - 2))
    # On a flat direction the optimizer may stop short of the bound: a bound as good as the fit counts as reached.
    at_bound = None
    if params[1] > upper - 1e-3 or grid_rss[-1] <= rss:
        at_bound, best = "above", _GRID_POINTS - 1
    elif params[1] < lower + 1e-3 or grid_rss[0] <= rss:
        at_bound, best = "below", 0
    else:
        best = int(np.argmin(np.abs(grid - params[1])))
    rss_min = min(rss, float(grid_rss[best]))
    first, last = _accepted_run(grid_rss <= rss_min * (1 + t**2 / (n - 2)), best)
    variance = rss_min / (n - 2) / n  # of ln S_min given B_crit: a mean of n residuals
    half = t * math.sqrt(variance)
    if at_bound is None:
        ln_steps_min, ln_critical = float(params[0]), float(params[1])
        se = np.sqrt(np.where(np.isfinite(np.diag(covariance)), np.diag(covariance), np.inf))
        critical_interval = (math.exp(ln_critical - t * se[1]), math.exp(ln_critical + t * se[1]))
        steps_min_interval = (math.exp(ln_steps_min - t * se[0]), math.exp(ln_steps_min + t * se[0]))
        log_covariance = ((float(covariance[0, 0]), float(covariance[0, 1])),
                          (float(covariance[1, 0]), float(covariance[1, 1])))
        # The normal approximation fails where the likelihood is flat towards a bound: then the profile's side is open.
        if last == _GRID_POINTS - 1:
            critical_interval = (math.exp(grid[first]), math.inf)
            steps_min_interval = (0.0, max(steps_min_interval[1], math.exp(grid_ln_steps_min[first] + half)))
        elif first == 0:
            critical_interval = (0.0, math.exp(grid[last]))
    else:
        ln_critical, ln_steps_min = float(grid[best]), float(grid_ln_steps_min[best])
        if at_bound == "above":
            critical_interval = (math.exp(grid[first]), math.inf)
            steps_min_interval = (0.0, math.exp(grid_ln_steps_min[first] + half))
        else:
            critical_interval = (0.0, math.exp(grid[last]))
            steps_min_interval = (math.exp(grid_ln_steps_min[last] - half), math.exp(ln_steps_min + half))
        log_covariance = ((variance, 0.0), (0.0, 0.0))
    return CriticalBatchFit(steps_min=math.exp(ln_steps_min), critical_batch=math.exp(ln_critical),
                            critical_batch_interval=critical_interval, steps_min_interval=steps_min_interval,
                            points=n, log_params=(ln_steps_min, ln_critical), log_covariance=log_covariance,
                            at_bound=at_bound)


def regime(global_batch: float, critical_batch: float) -> str:
    """Which of REGIMES a global batch is in: "perfect scaling" where steps are within 25 % of the
    perfect-scaling line (1 + B/B_crit <= 1.25, B <= B_crit/4), "no further gain" where they are within
    25 % of S_min (1 + B_crit/B <= 1.25, B >= 4 B_crit), else "diminishing returns"."""
    if global_batch * REGIME_FACTOR <= critical_batch:
        return REGIMES[0]
    if global_batch >= REGIME_FACTOR * critical_batch:
        return REGIMES[2]
    return REGIMES[1]
