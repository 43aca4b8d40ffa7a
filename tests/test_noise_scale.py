"""The gradient noise scale (jobs/train/noise.py) against its exact value.

On linear regression with the mean squared error, sample i's gradient at (w, b) is
2 r_i (x_i, 1) with r_i = w x_i + b - y_i, so the true gradient G (their mean), its
squared norm, the per-sample covariance's trace tr(Sigma) and B_simple = tr(Sigma)/|G|^2
follow exactly from the data. A 4-worker cell whose parameters barely move (lr 1e-9)
estimates them over thousands of steps, with Horovod and with DDP; the estimate must
agree within 10 %.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import default_config, run_snakemake, write_config

from jobs.train.data import load_linear
from jobs.train.noise import noise_estimate

SEED = 5
POINTS = 4096
BATCH = 8  # per worker
WORKERS = 4
EPOCHS = 12
BACKENDS = ["horovod", "ddp"]  # each measures the local norms before, and the averaged one after, its allreduce


def test_the_estimators_recover_norm_and_trace_from_their_expectations():
    # E|g_B|^2 = |G|^2 + tr(Sigma)/B for a batch of B independent samples: given the exact
    # expectations at two batch sizes, the estimators must return |G|^2 and tr(Sigma).
    g2, trace = 3.5, 420.0
    for small, big in ((8, 32), (1, 2), (64, 512)):
        estimate = noise_estimate(g2 + trace / small, g2 + trace / big, small, big)
        assert estimate.gradient_sq_norm == pytest.approx(g2, rel=1e-9)
        assert estimate.gradient_trace == pytest.approx(trace, rel=1e-9)
        assert estimate.noise_scale == pytest.approx(trace / g2, rel=1e-9)
    # Noise can make |G|^2's estimate negative: then B_simple is not defined, not negative.
    assert noise_estimate(1.0, 0.2, 8, 32).gradient_sq_norm < 0
    assert noise_estimate(1.0, 0.2, 8, 32).noise_scale is None
    with pytest.raises(ValueError, match="must exceed"):
        noise_estimate(1.0, 1.0, 8, 8)


def exact_noise(weight: float, bias: float) -> tuple[float, float]:
    """(|G|^2, tr(Sigma)) of the training set's per-sample gradients at (w, b), in float64."""
    data = load_linear(seed=SEED, num_train=POINTS)
    x, y = (tensor.numpy().astype(np.float64).ravel() for tensor in data.train.tensors)
    residual = weight * x + bias - y
    per_sample = np.column_stack([2 * residual * x, 2 * residual])
    mean = per_sample.mean(axis=0)
    return float(mean @ mean), float(((per_sample - mean) ** 2).sum(axis=1).mean())


@pytest.fixture(scope="module")
def held_still(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    workdir: Path = tmp_path_factory.mktemp("noise")
    config = default_config()
    fixed = {"dataset": "linear", "model": "linear", "train_subset": POINTS, "epochs": EPOCHS, "lr": 1e-9,
             "lr_scaling": "none", "optimizer": "sgd", "momentum": 0.0, "seed": SEED, "target_accuracy": 0.5}
    config["studies"] = {"noise": {"grid": {"batch_size": [BATCH], "gpus": [1, WORKERS], "backend": BACKENDS},
                                   "fixed": fixed}}
    write_config(workdir, config)
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    epochs = pd.read_csv(workdir / "results" / "noise" / "epochs.csv")
    runs = pd.read_csv(workdir / "results" / "noise" / "runs.csv")
    return epochs, runs


@pytest.mark.workflow
@pytest.mark.parametrize("backend", BACKENDS)
def test_several_workers_measure_the_exact_noise_scale_of_linear_regression(held_still, backend):
    epochs, _ = held_still
    many = epochs[(epochs["gpus"] == WORKERS) & (epochs["backend"] == backend)].sort_values("epoch")
    assert len(many) == EPOCHS
    # The parameters hardly moved (w from 0 to about 0.001, where the data's slope is 10), so every
    # epoch measured the noise at about the same (w, b): their mean.
    assert many["weight"].max() - many["weight"].min() < 0.01
    g2, trace = exact_noise(float(many["weight"].mean()), float(many["bias"].mean()))
    # Every epoch has as many full steps, so the epochs' means pool into the run's.
    pooled = noise_estimate(many["grad_sq_norm_local"].mean(), many["grad_sq_norm_averaged"].mean(),
                            BATCH, BATCH * WORKERS)
    assert pooled.gradient_sq_norm == pytest.approx(g2, rel=0.10)
    assert pooled.gradient_trace == pytest.approx(trace, rel=0.10)
    assert pooled.noise_scale == pytest.approx(trace / g2, rel=0.10)
    # Each epoch's own estimate is recorded, and its B_simple is the ratio of its estimates.
    ratios = many["grad_trace"] / many["grad_sq_norm"]
    np.testing.assert_allclose(many["noise_scale"], ratios, rtol=1e-9)


@pytest.mark.workflow
def test_one_worker_cannot_measure_it_and_records_nothing(held_still):
    epochs, _ = held_still
    one = epochs[epochs["gpus"] == 1]
    assert len(one) == EPOCHS * len(BACKENDS)
    assert one["noise_scale"].isna().all() and one["grad_sq_norm_local"].isna().all()
