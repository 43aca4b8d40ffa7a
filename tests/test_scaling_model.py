"""The step-time model against cells generated from T = rho (c0 + c1 b + 2 (N-1) alpha + 2 (N-1)/N M beta)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from analysis.critical_batch import fit_critical_batch
from analysis.scaling_model import (
    CANDIDATE_COLUMNS,
    NAMES,
    STEP_COLUMNS,
    Choice,
    choose,
    fit_step_time,
    holdout,
    pareto_front,
    predict,
)

# alpha is 5x the brief's 1e-4: at 1e-4 latency is under 1.4 ms of ~25 ms steps, and 2 % noise on this grid
# leaves it a ~25 % standard error, so "within 20 %" would hold for only about half the seeds.
C0, C1, ALPHA, BETA, GRADIENT = 2e-3, 5e-5, 5e-4, 1 / 5e8, 4e6
TRUTH = np.array([C0, C1, ALPHA, BETA])
BATCHES, WORKERS = (16, 32, 64, 128), (1, 2, 4, 8)


def on_gpus(workers: float) -> float:
    return 1.0


def on_two_cores(workers: float) -> float:
    return max(1.0, workers / 2)  # one thread per worker on a 2-core machine


def true_time(b: npt.ArrayLike, n: npt.ArrayLike, rho: npt.ArrayLike) -> np.ndarray:
    b, n, rho = np.asarray(b, dtype=float), np.asarray(n, dtype=float), np.asarray(rho, dtype=float)
    return rho * (C0 + C1 * b + np.where(n > 1, 2 * (n - 1) * ALPHA + 2 * (n - 1) / n * GRADIENT * BETA, 0.0))


def grid(rho: Callable[[float], float] = on_gpus, workers: tuple[int, ...] = WORKERS, repeats: int = 1,
         noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rows = [(b, n, GRADIENT, rho(n)) for b in BATCHES for n in workers for _ in range(repeats)]
    cells = pd.DataFrame(rows, columns=list(CANDIDATE_COLUMNS))
    time = true_time(cells["per_worker_batch"], cells["workers"], cells["oversubscription"])
    cells["time_per_step_s"] = time * np.exp(np.random.default_rng(seed).normal(0.0, noise, len(cells)))
    return cells


@pytest.mark.parametrize("rho", [on_gpus, on_two_cores])
def test_noiseless_grid_gives_the_constants_back(rho: Callable[[float], float]) -> None:
    model = fit_step_time(grid(rho))
    assert model.names == NAMES and all(model.identified) and model.notes == ()
    np.testing.assert_allclose(model.values, TRUTH, rtol=1e-6)
    assert model.relative_rms < 1e-9
    assert model.bandwidth_bytes_per_s == pytest.approx(1 / BETA, rel=1e-6)


@pytest.mark.parametrize("rho", [on_gpus, on_two_cores])
def test_noisy_grid_gives_the_constants_back_within_their_errors(rho: Callable[[float], float]) -> None:
    model = fit_step_time(grid(rho, repeats=2, noise=0.02))
    errors = np.sqrt(np.diag(np.asarray(model.covariance)))
    values = np.asarray(model.values)
    assert (np.abs(values - TRUTH) <= 4 * errors).all(), (values / TRUTH - 1, (values - TRUTH) / errors)
    np.testing.assert_allclose(values, TRUTH, rtol=0.2)
    assert 0.01 < model.relative_rms < 0.03
    assert model.cells == len(BATCHES) * len(WORKERS) * 2


def test_unusable_rows_are_ignored_and_none_left_raises() -> None:
    cells = grid()
    broken = pd.concat([cells, cells.head(3).assign(time_per_step_s=[0.0, -1.0, float("nan")])], ignore_index=True)
    assert fit_step_time(broken).cells == len(cells)
    with pytest.raises(ValueError, match="no cell"):
        fit_step_time(cells.assign(time_per_step_s=float("nan")))


def test_one_worker_count_above_one_folds_latency_into_bandwidth() -> None:
    cells = grid(workers=(1, 2))
    model = fit_step_time(cells)
    assert model.identified == (True, True, False, True)
    assert model.values[2] == 0.0 and model.covariance[2][2] == 0.0
    assert any("latency folded into bandwidth" in note for note in model.notes)
    predicted = model.step_time(*(cells[column] for column in CANDIDATE_COLUMNS))
    np.testing.assert_allclose(predicted, cells["time_per_step_s"], rtol=1e-6)


def test_one_worker_leaves_communication_unidentified() -> None:
    model = fit_step_time(grid(workers=(1,)))
    assert model.identified == (True, True, False, False)
    assert model.values[2:] == (0.0, 0.0) and model.bandwidth_bytes_per_s == math.inf
    assert any("no cell has more than one worker" in note for note in model.notes)


def test_one_batch_folds_per_sample_compute_into_fixed() -> None:
    cells = grid()
    model = fit_step_time(cells[cells["per_worker_batch"] == 64])
    assert model.identified == (True, False, True, True)
    assert model.values[0] == pytest.approx(C0 + 64 * C1, rel=1e-6)
    assert any("same per-worker batch" in note for note in model.notes)


def test_as_many_parameters_as_cells_has_no_covariance() -> None:
    cells = grid(workers=(1,))
    model = fit_step_time(cells[cells["per_worker_batch"].isin([16, 32])])
    assert model.cells == 2 and np.isnan(model.covariance[0][0])
    assert any("no residual" in note for note in model.notes)


def test_holdout_predicts_the_largest_worker_count() -> None:
    held = holdout(grid())
    assert held is not None and set(held["workers"]) == {8} and len(held) == len(BATCHES)
    assert set(STEP_COLUMNS) <= set(held.columns)
    assert (held["relative_error"].abs() < 1e-6).all()
    noisy = holdout(grid(repeats=2, noise=0.02))
    assert noisy is not None
    low, high = noisy["predicted_low_s"], noisy["predicted_high_s"]
    assert ((low <= noisy["time_per_step_s"]) & (noisy["time_per_step_s"] <= high)).mean() > 0.5
    assert ((low < noisy["predicted_s"]) & (noisy["predicted_s"] < high)).all()
    np.testing.assert_allclose(noisy["relative_error"], noisy["predicted_s"] / noisy["time_per_step_s"] - 1)
    assert holdout(grid(workers=(2,))) is None
    # Without the largest count only 1 worker would be left: nothing learnt of communication, no check.
    assert holdout(grid(workers=(1, 2))) is None
    assert holdout(grid(workers=(1, 2, 4))) is not None


def candidates(rho: Callable[[float], float]) -> pd.DataFrame:
    rows = [(b, n, GRADIENT, rho(n), rho(1)) for b in (16, 128) for n in (1, 4, 32)]
    return pd.DataFrame(rows, columns=[*CANDIDATE_COLUMNS, "oversubscription_1"])


def test_predict_follows_the_closed_form() -> None:
    model = fit_step_time(grid(on_two_cores))
    wanted = candidates(on_two_cores)
    out = predict(model, None, wanted, draws=200)
    b, n, rho = wanted["per_worker_batch"], wanted["workers"], wanted["oversubscription"]
    time = true_time(b, n, rho)
    np.testing.assert_allclose(out["global_batch"], b * n)
    np.testing.assert_allclose(out["time_per_step_s"], time, rtol=1e-6)
    np.testing.assert_allclose(out["throughput"], b * n / time, rtol=1e-6)
    np.testing.assert_allclose(out["efficiency"], true_time(b, 1, 1.0) / time, rtol=1e-6)
    assert out["time_to_target_s"].isna().all() and out["gpu_hours_high"].isna().all()


def test_predict_time_to_target_is_steps_times_step_time() -> None:
    steps_min, critical = 300.0, 512.0
    batch = 2.0 ** np.arange(4, 14)
    crit = fit_critical_batch(batch.tolist(), (steps_min * (1 + critical / batch)).tolist())
    assert crit is not None
    model = fit_step_time(grid(repeats=2, noise=0.02))
    wanted = candidates(on_gpus)
    out = predict(model, crit, wanted, draws=2000)
    global_batch = wanted["per_worker_batch"] * wanted["workers"]
    steps = steps_min * (1 + critical / global_batch)
    np.testing.assert_allclose(out["steps_to_target"], steps, rtol=1e-6)
    np.testing.assert_allclose(out["time_to_target_s"], steps * out["time_per_step_s"], rtol=1e-6)
    np.testing.assert_allclose(out["gpu_hours"], wanted["workers"] * out["time_to_target_s"] / 3600, rtol=1e-9)
    for name in ("time_per_step", "time_to_target", "throughput", "gpu_hours"):
        suffix = "_s" if name.startswith("time") else ""
        low, value, high = out[f"{name}_low{suffix}"], out[f"{name}{suffix}"], out[f"{name}_high{suffix}"]
        assert ((low < value) & (value < high)).all(), name


def test_pareto_front_by_construction() -> None:
    time = np.array([1.0, 2.0, 3.0, 10.0, 1.0, np.nan, 2.0, 0.5])
    cost = np.array([10.0, 5.0, 6.0, 1.0, 11.0, 0.1, 5.0, np.nan])
    # (3, 6) is beaten by (2, 5); (1, 11) by (1, 10); NaN rows never count; the two (2, 5) tie and both stay.
    expected = [True, True, False, True, False, False, True, False]
    assert pareto_front(time, cost).tolist() == expected


def measured_rows() -> pd.DataFrame:
    return pd.DataFrame({"cell": ["a", "b", "c"], "workers": [1, 2, 4], "per_worker_batch": [32.0, 32.0, 32.0],
                         "global_batch": [32.0, 64.0, 128.0], "time_to_target_s": [400.0, 250.0, np.nan],
                         "gpu_hours": [400 / 3600, 500 / 3600, np.nan]})


def predicted_rows(times: list[float], workers: list[int]) -> pd.DataFrame:
    time = np.asarray(times)
    frame = pd.DataFrame({"workers": workers, "per_worker_batch": 32.0, "time_to_target_s": time,
                          "time_to_target_low_s": time * 0.9, "time_to_target_high_s": time * 1.1})
    frame["global_batch"] = frame["workers"] * 32.0
    frame["gpu_hours"] = frame["workers"] * time / 3600
    frame["gpu_hours_low"], frame["gpu_hours_high"] = frame["gpu_hours"] * 0.9, frame["gpu_hours"] * 1.1
    return frame


def test_choose_takes_the_measured_row_when_it_is_best() -> None:
    fastest, cheapest = choose(measured_rows(), predicted_rows([300.0], [8]))
    assert fastest == Choice(2, 32.0, 64.0, 250.0, 250.0, 250.0, 500 / 3600, 500 / 3600, 500 / 3600, "measured", "b")
    assert cheapest is not None and cheapest.cell == "a" and cheapest.source == "measured"


def test_choose_takes_a_better_prediction_and_skips_measured_pairs() -> None:
    # The 4-worker cell ran and never reached the target: its NaN is skipped and no prediction replaces it.
    fastest, _ = choose(measured_rows(), predicted_rows([10.0, 100.0, 120.0], [4, 8, 16]))
    assert fastest is not None and fastest.source == "predicted" and fastest.cell is None
    assert (fastest.workers, fastest.time_to_target_s, fastest.low, fastest.high) == pytest.approx((8, 100, 90, 110))
    assert fastest.gpu_hours == pytest.approx(8 * 100 / 3600)


def test_choose_breaks_ties_to_fewer_workers_and_handles_nothing() -> None:
    measured = measured_rows().assign(time_to_target_s=[300.0, 300.0, np.nan], gpu_hours=[1.0, 1.0, np.nan])
    fastest, cheapest = choose(measured, pd.DataFrame())
    assert fastest is not None and cheapest is not None and fastest.workers == 1 and cheapest.workers == 1
    nothing = measured_rows().assign(time_to_target_s=np.nan, gpu_hours=np.nan)
    assert choose(nothing, pd.DataFrame()) == (None, None)
    assert choose(pd.DataFrame(), pd.DataFrame()) == (None, None)
