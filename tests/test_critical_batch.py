"""The critical-batch fit against data generated from S(B) = S_min (1 + B_crit / B) with known constants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.critical_batch import REGIME_FACTOR, REGIMES, SEARCH_FACTOR, fit_critical_batch, regime

STEPS_MIN, CRITICAL = 200.0, 256.0
BATCHES = 2.0 ** np.arange(3, 13)  # 8 .. 4096


def true_steps(batch: np.ndarray) -> np.ndarray:
    return STEPS_MIN * (1 + CRITICAL / batch)


def test_noiseless_points_give_the_constants_back() -> None:
    fit = fit_critical_batch(BATCHES.tolist(), true_steps(BATCHES).tolist())
    assert fit is not None and fit.at_bound is None and fit.points == BATCHES.size
    assert fit.steps_min == pytest.approx(STEPS_MIN, rel=1e-6)
    assert fit.critical_batch == pytest.approx(CRITICAL, rel=1e-6)
    assert fit.samples_min == pytest.approx(STEPS_MIN * CRITICAL, rel=1e-6)
    assert fit.log_params == pytest.approx((math.log(STEPS_MIN), math.log(CRITICAL)), abs=1e-6)


def test_noisy_points_give_the_constants_back_within_their_intervals() -> None:
    rng = np.random.default_rng(0)
    batch = np.repeat(BATCHES, 2)  # two replicates per batch
    steps = true_steps(batch) * np.exp(rng.normal(0.0, 0.05, batch.size))
    fit = fit_critical_batch(batch.tolist(), steps.tolist())
    assert fit is not None and fit.at_bound is None
    low, high = fit.critical_batch_interval
    assert low < CRITICAL < high
    assert fit.steps_min_interval[0] < STEPS_MIN < fit.steps_min_interval[1]
    assert fit.critical_batch == pytest.approx(CRITICAL, rel=0.15)
    assert fit.steps_min == pytest.approx(STEPS_MIN, rel=0.15)
    # The interval is the t interval of ln B_crit from the covariance.
    t = stats.t.ppf(0.975, batch.size - 2)
    se = math.sqrt(fit.log_covariance[1][1])
    assert math.log(high) - math.log(fit.critical_batch) == pytest.approx(t * se, rel=1e-3)


def test_intervals_cover_the_constants_about_95_percent_of_the_time() -> None:
    covered, trials = np.zeros(2), 200
    for seed in range(trials):
        steps = true_steps(BATCHES) * np.exp(np.random.default_rng(seed).normal(0.0, 0.05, BATCHES.size))
        fit = fit_critical_batch(BATCHES.tolist(), steps.tolist())
        assert fit is not None
        covered += [fit.critical_batch_interval[0] < CRITICAL < fit.critical_batch_interval[1],
                    fit.steps_min_interval[0] < STEPS_MIN < fit.steps_min_interval[1]]
    # Binomial(200, 0.95) lies within 0.88 .. 0.995 with probability > 0.999.
    assert ((covered / trials > 0.88) & (covered / trials < 0.995)).all(), covered / trials


def test_fitted_curve_lies_on_the_steps_samples_hyperbola() -> None:
    rng = np.random.default_rng(3)
    steps = true_steps(BATCHES) * np.exp(rng.normal(0.0, 0.05, BATCHES.size))
    fit = fit_critical_batch(BATCHES.tolist(), steps.tolist())
    assert fit is not None
    batch = np.array([1.0, 7.3, 100.0, 333.3, 5000.0, 1e6])
    s, e = fit.steps(batch), fit.samples(batch)
    np.testing.assert_allclose(e, batch * s, rtol=1e-12)
    np.testing.assert_allclose((s / fit.steps_min - 1) * (e / fit.samples_min - 1), 1.0, rtol=1e-9)


def test_sample_steps_centres_on_the_fit() -> None:
    rng = np.random.default_rng(11)
    steps = true_steps(BATCHES) * np.exp(rng.normal(0.0, 0.05, BATCHES.size))
    fit = fit_critical_batch(BATCHES.tolist(), steps.tolist())
    assert fit is not None
    batch = np.array([16.0, 256.0, 8192.0])
    draws = fit.sample_steps(batch, np.random.default_rng(0), 4000)
    assert draws.shape == (4000, 3)
    np.testing.assert_allclose(np.median(draws, axis=0), fit.steps(batch), rtol=0.02)


def test_perfect_scaling_runs_into_the_upper_bound() -> None:
    steps = 1e5 / BATCHES  # S = E_min / B: every batch far below B_crit
    fit = fit_critical_batch(BATCHES.tolist(), steps.tolist())
    assert fit is not None and fit.at_bound == "above"
    low, high = fit.critical_batch_interval
    assert high == math.inf and BATCHES.max() < low <= fit.critical_batch
    assert fit.critical_batch == pytest.approx(BATCHES.max() * SEARCH_FACTOR, rel=1e-9)
    assert fit.samples_min == pytest.approx(1e5, rel=1e-3)
    assert fit.steps_min_interval[0] == 0.0
    # What the data pin down, E_min / B, holds in every draw within the batches run.
    draws = fit.sample_steps(BATCHES, np.random.default_rng(0), 500)
    np.testing.assert_allclose(draws, np.broadcast_to(steps, draws.shape), rtol=0.01)


def test_no_gain_from_batch_runs_into_the_lower_bound() -> None:
    fit = fit_critical_batch(BATCHES.tolist(), [500.0] * BATCHES.size)
    assert fit is not None and fit.at_bound == "below"
    low, high = fit.critical_batch_interval
    assert low == 0.0 and fit.critical_batch <= high < BATCHES.min()
    assert fit.steps_min == pytest.approx(500.0, rel=1e-3)


def test_too_few_points_or_batches_give_none() -> None:
    assert fit_critical_batch([64.0, 128.0], [100.0, 60.0]) is None
    assert fit_critical_batch([64.0, 64.0, 64.0], [100.0, 90.0, 110.0]) is None
    # Two batches, replicated: the curve passes through both means whatever they are; no fit.
    assert fit_critical_batch([64.0, 64.0, 128.0, 128.0], [100.0, 90.0, 60.0, 62.0]) is None
    # Unusable entries do not count.
    assert fit_critical_batch([64.0, 128.0, float("nan"), 256.0], [100.0, 60.0, 40.0, -1.0]) is None
    assert fit_critical_batch([64.0, 128.0, 256.0, 512.0], [100.0, 60.0, float("inf"), 30.0]) is not None


def test_regime_boundaries() -> None:
    b_crit = 256.0
    assert REGIME_FACTOR == 4
    assert regime(b_crit / REGIME_FACTOR, b_crit) == "perfect scaling"
    assert regime(b_crit / REGIME_FACTOR + 1, b_crit) == "diminishing returns"
    assert regime(b_crit, b_crit) == "diminishing returns"
    assert regime(b_crit * REGIME_FACTOR - 1, b_crit) == "diminishing returns"
    assert regime(b_crit * REGIME_FACTOR, b_crit) == "no further gain"
    assert set(REGIMES) == {"perfect scaling", "diminishing returns", "no further gain"}
    # At the boundaries steps are 25 % above the perfect-scaling line and above S_min, from the closed form.
    s = STEPS_MIN * (1 + b_crit / np.array([b_crit / 4, b_crit * 4]))
    assert s[0] / (STEPS_MIN * b_crit / (b_crit / 4)) == pytest.approx(1.25)
    assert s[1] / STEPS_MIN == pytest.approx(1.25)
