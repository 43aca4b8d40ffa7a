"""The course's studies: run by name, at a small or the full size, and Lab 1's numbers
(the per-update (w, b), the stop rule) against references computed here."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from conftest import default_config, run_snakemake, write_config

from analysis import FIGURE_NAMES, LAB1_FIGURE_NAMES
from analysis.collect import collect_tables
from jobs.cell import CellDir
from jobs.plan.config import ConfigError
from jobs.plan.datasets import linear_splits
from jobs.plan.grid import make_plan
from jobs.plan.params import TrainParams
from jobs.plan.studies import SHIPPED_STUDIES_DIR, available_studies
from jobs.plan.studies import main as list_studies
from jobs.train.data import epoch_shard
from jobs.train.job import TrainingJob, loss_settled, run_training
from jobs.train.workers import SingleWorker

LAB1 = "lab1_gd_vs_sgd"


def quiet(message: str) -> None:
    pass


# ----------------------------------------------------------------------------- studies by name

def test_a_named_study_replaces_the_studies_of_the_config(tmp_path):
    config = {**default_config(), "study": LAB1}
    plan = make_plan(config, root=tmp_path, warn=quiet)
    assert list(plan.studies) == [LAB1]
    assert sorted(plan.studies[LAB1].cells) == sorted(f"bs{b}-gpus1" for b in (1, 16, 32, 64, 100))
    full = make_plan({**config, "size": "full"}, root=tmp_path, warn=quiet)
    assert list(full.studies) == [f"{LAB1}_full"]  # its own results directory: neither size overwrites the other
    assert make_plan(default_config(), root=tmp_path, warn=quiet).studies.keys() == {"default"}


def test_a_study_file_in_the_working_directory_comes_before_the_shipped_one(tmp_path):
    own = tmp_path / "config" / "studies"
    own.mkdir(parents=True)
    (own / f"{LAB1}.yaml").write_text(
        "description: mine\ngrid: {batch_size: [8], gpus: [1]}\nfixed: {dataset: linear, model: linear}\n"
        "full: {grid: {batch_size: [8, 16]}}\n")
    (own / "mine.yaml").write_text("description: also mine\ngrid: {batch_size: [4], gpus: [1]}\n")
    studies = available_studies(tmp_path)
    assert studies[LAB1].path == own / f"{LAB1}.yaml" and "mine" in studies
    plan = make_plan({**default_config(), "study": LAB1, "size": "full"}, root=tmp_path, warn=quiet)
    assert sorted(plan.studies[f"{LAB1}_full"].cells) == ["bs16-gpus1", "bs8-gpus1"]


@pytest.mark.parametrize("size", ["small", "full"])
def test_every_shipped_study_is_a_valid_study_at_both_sizes(tmp_path, size):
    shipped = sorted(path.stem for path in SHIPPED_STUDIES_DIR.glob("*.yaml"))
    assert LAB1 in shipped
    for name in shipped:
        plan = make_plan({**default_config(), "study": name, "size": size}, root=tmp_path, warn=quiet)
        [study] = plan.studies.values()
        assert study.cells, name


def test_scaling_studies_lists_every_study_with_its_description_and_command(tmp_path, capsys):
    list_studies(["--root", str(tmp_path)])
    out = capsys.readouterr().out
    for study in available_studies(tmp_path).values():
        assert study.name in out and study.description[:60] in out
        assert f"snakemake --config study={study.name}" in out


def test_a_broken_study_file_is_one_line(tmp_path):
    own = tmp_path / "config" / "studies"
    own.mkdir(parents=True)
    (own / "broken.yaml").write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match=r"^config error: .*broken.yaml: not valid YAML"):
        make_plan({**default_config(), "study": "broken"}, root=tmp_path, warn=quiet)


# ----------------------------------------------------------------------------- Lab 1's numbers

def run_linear_cell(tmp_path, name: str, **values) -> CellDir:
    params = TrainParams.from_dict({"dataset": "linear", "model": "linear", "optimizer": "sgd", "momentum": 0.0,
                                    "lr": 0.001, "lr_scaling": "none", "record_updates": True, **values})
    cell_dir = tmp_path / "cells" / name  # tmp_path is the study's directory
    cell_dir.mkdir(parents=True)
    job = TrainingJob(cell_dir=str(cell_dir), study="lab1", cell=name, grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir=str(tmp_path))
    run_training(job, SingleWorker(), "localhost", "1", 0, 0.0)
    return CellDir(cell_dir)


def sgd_reference(batch_size: int, epochs: int, lr: float, seed: int = 0) -> np.ndarray:
    """(w, b) after each update of plain SGD on the mean squared error, in float64 numpy, from
    w = b = 0, over the same batches: each epoch's seeded permutation, the last batch short."""
    (x, y), _ = linear_splits(seed, 100)
    w = b = 0.0
    path = []
    for epoch in range(1, epochs + 1):
        order = epoch_shard(len(x), 1, 0, seed=seed, epoch=epoch).numpy()
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            residual = w * x[chosen] + b - y[chosen]
            w, b = w - lr * 2 * np.mean(residual * x[chosen]), b - lr * 2 * np.mean(residual)
            path.append((w, b))
    return np.array(path)


@pytest.mark.parametrize("batch_size", [100, 16, 1])
def test_recorded_updates_follow_sgd_computed_by_hand(tmp_path, batch_size):
    """Batch 100 is gradient descent; 16 has a short last batch (100 = 6 x 16 + 4)."""
    epochs = 6
    cell = run_linear_cell(tmp_path, f"bs{batch_size}", batch_size=batch_size, epochs=epochs)
    updates = collect_tables(tmp_path, [cell.name]).updates
    reference = sgd_reference(batch_size, epochs, lr=0.001)
    assert list(updates["update"]) == list(range(1, len(reference) + 1))
    assert list(updates.groupby("epoch").size()) == [math.ceil(100 / batch_size)] * epochs
    np.testing.assert_allclose(updates[["weight", "bias"]].to_numpy(), reference, rtol=2e-4, atol=2e-5)


def test_the_course_stop_rule_stops_at_the_first_epoch_whose_loss_changed_by_less_than_the_tolerance(tmp_path):
    tolerance = 0.001
    cell = run_linear_cell(tmp_path, "gd", batch_size=100, epochs=1000, stop_at_loss_change=tolerance)
    losses = [epoch["train_loss"] for epoch in cell.read_metrics().epochs]
    changes = [abs(now - before) / before for before, now in itertools.pairwise(losses)]
    assert 2 < len(losses) < 1000
    assert changes[-1] < tolerance and all(change >= tolerance for change in changes[:-1])
    assert (cell.read_result() or {})["stop_reason"] == "converged"


def test_loss_settled():
    assert loss_settled(100.0, 99.95, 0.001)
    assert not loss_settled(100.0, 99.8, 0.001)
    assert not loss_settled(100.0, 100.2, 0.001)
    assert not loss_settled(None, 1.0, 0.001) and not loss_settled(1.0, 1.0, None)
    assert not loss_settled(1.0, float("nan"), 0.001)


# ----------------------------------------------------------------------------- the study, through the workflow

@pytest.mark.workflow
def test_lab1_runs_by_name_and_draws_its_figures(tmp_path):
    config = copy.deepcopy(default_config())
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, "--config", f"study={LAB1}")
    assert result.returncode == 0, result.stderr[-4000:]
    assert not (tmp_path / "results" / "default").exists()
    study = tmp_path / "results" / LAB1
    runs = pd.read_csv(study / "runs.csv")
    assert sorted(runs["batch_size"]) == [1, 16, 32, 64, 100]
    assert set(runs["status"]) == {"complete"} and set(runs["stop_reason"]) == {"converged"}
    updates = pd.read_csv(study / "updates.csv")
    # Every update of every cell: epochs x ceil(100 / batch).
    expected = {row.cell: row.epochs_run * math.ceil(100 / row.batch_size) for row in runs.itertuples()}
    assert updates.groupby("cell").size().to_dict() == expected
    for name in (*FIGURE_NAMES, *LAB1_FIGURE_NAMES):
        assert (study / "figures" / f"{name}.png").stat().st_size > 10_000, name
