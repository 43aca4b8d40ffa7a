"""scaling-predict: the answer's step-time model fed any table of measurements."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from analysis.predict import main

# A cluster made up for the test: 10 ms fixed, 0.2 ms per sample, 50 us per ring hop, 10 GB/s, a 100 MB gradient.
C0, C1, ALPHA, BETA, GRADIENT = 0.01, 2e-4, 5e-5, 1 / 10e9, 100e6


def closed_form(batch: float, workers: float) -> float:
    """T(b, N) of analysis/scaling_model.py, written out: the reference the fit must find again."""
    hops = 2 * (workers - 1)
    return C0 + C1 * batch + (hops * ALPHA + hops / workers * GRADIENT * BETA if workers > 1 else 0.0)


def measurements(scatter: float = 0.01) -> pd.DataFrame:
    """Measured on 1 to 8 workers at two batches, each time off the model by +-1 % in turn."""
    rows = [{"workers": n, "per_worker_batch": b, "gradient_bytes": GRADIENT,
             "time_per_step_s": closed_form(b, n) * (1 + scatter * (-1) ** i)}
            for i, (n, b) in enumerate((n, b) for n in (1, 2, 4, 8) for b in (32, 64))]
    return pd.DataFrame(rows)


def predicted(tmp_path: Path, table: pd.DataFrame, *options: str) -> pd.DataFrame:
    source, out = tmp_path / "measured.csv", tmp_path / "predicted.csv"
    table.to_csv(source, index=False)
    main([str(source), *options, "--out", str(out)])
    return pd.read_csv(out)


def test_predictions_beyond_the_measurements_follow_the_model_they_came_from(tmp_path, capsys):
    result = predicted(tmp_path, measurements(), "--workers", "16", "32", "--per-worker-batch", "64")
    assert list(result["workers"]) == [16, 32]
    truth = np.array([closed_form(64, 16), closed_form(64, 32)])
    np.testing.assert_allclose(result["time_per_step_s"], truth, rtol=0.03)
    assert ((result["time_per_step_low_s"] <= truth) & (truth <= result["time_per_step_high_s"])).all()
    np.testing.assert_allclose(result["throughput"], 64 * result["workers"] / result["time_per_step_s"])
    np.testing.assert_allclose(result["efficiency"], [closed_form(64, 1) / t for t in truth], rtol=0.03)
    printed = capsys.readouterr().out
    assert "allreduce bandwidth in node 1/beta = " in printed and "fitted to 8 measurements" in printed
    bandwidth = float(printed.split("allreduce bandwidth in node 1/beta = ")[1].split()[0])
    assert bandwidth == pytest.approx(10, rel=0.1)  # GB/s


def test_throughput_is_read_as_samples_per_second_of_all_workers(tmp_path):
    timed = measurements()
    as_throughput = timed.assign(throughput=timed["workers"] * timed["per_worker_batch"] / timed["time_per_step_s"])
    as_throughput = as_throughput.drop(columns="time_per_step_s")
    pd.testing.assert_frame_equal(predicted(tmp_path, as_throughput, "--workers", "16"),
                                  predicted(tmp_path, timed, "--workers", "16"))


def test_a_studys_runs_table_is_read_as_it_is_with_its_critical_batch(tmp_path, capsys):
    """runs.csv's own columns; steps to target on S = S_min (1 + B_crit / B) give B_crit back."""
    s_min, b_crit = 40.0, 300.0
    table = measurements(scatter=0.0)
    runs = pd.DataFrame({
        "cell": [f"c{i}" for i in range(len(table))], "status": "complete", "world_size": table["workers"],
        "global_batch": table["workers"] * table["per_worker_batch"], "gradient_bytes": GRADIENT,
        "oversubscription": 1.0, "step_time_s": table["time_per_step_s"]})
    runs["steps_to_target"] = s_min * (1 + b_crit / runs["global_batch"])
    result = predicted(tmp_path, runs, "--workers", "16", "--per-worker-batch", "32")
    assert result["time_per_step_s"].iloc[0] == pytest.approx(closed_form(32, 16), rel=1e-6)
    assert result["steps_to_target"].iloc[0] == pytest.approx(s_min * (1 + b_crit / 512), rel=1e-4)
    assert "Critical batch B_crit = 300 samples" in capsys.readouterr().out


# Two links: 4 workers to a node at 20 us / 50 GB/s inside, 80 us / 5 GB/s across nodes.
INSIDE, ACROSS = (2e-5, 1 / 50e9), (8e-5, 1 / 5e9)


def two_link_form(batch: float, workers: int, per_node: int) -> float:
    """The hierarchical allreduce written out: ring inside each node of k workers, ring across the n nodes."""
    k = min(workers, per_node)
    nodes = -(-workers // k)
    inside = 2 * (k - 1) * INSIDE[0] + 2 * (k - 1) / k * GRADIENT * INSIDE[1] if k > 1 else 0.0
    across = 2 * (nodes - 1) * ACROSS[0] + 2 * (nodes - 1) / nodes * GRADIENT * ACROSS[1] if nodes > 1 else 0.0
    return C0 + C1 * batch + inside + across


def test_a_table_across_nodes_predicts_each_link_and_any_placement(tmp_path, capsys):
    table = pd.DataFrame([{"workers": n, "per_worker_batch": b, "workers_per_node": 4, "gradient_bytes": GRADIENT,
                           "throughput": n * b / two_link_form(b, n, 4)}
                          for n in (1, 2, 4, 8, 16, 32) for b in (32, 64)])
    result = predicted(tmp_path, table, "--workers", "64", "128", "--per-worker-batch", "64")
    assert list(result["workers_per_node"]) == [4, 4]
    np.testing.assert_allclose(result["time_per_step_s"], [two_link_form(64, n, 4) for n in (64, 128)], rtol=1e-6)
    printed = capsys.readouterr().out
    assert "allreduce bandwidth across nodes 1/beta = 5 GB/s" in printed and "Form: ring latency" in printed
    eight = predicted(tmp_path, table, "--workers", "64", "--per-worker-batch", "64", "--workers-per-node", "8")
    assert eight["workers_per_node"].iloc[0] == 8
    assert eight["time_per_step_s"].iloc[0] == pytest.approx(two_link_form(64, 64, 8), rel=1e-6)


BAD = {
    "a missing column": (lambda t: t.drop(columns="gradient_bytes"),
                         "measured.csv: no column gradient_bytes; a measurements table needs workers, "
                         "per_worker_batch, gradient_bytes and time_per_step_s or throughput"),
    "no time at all": (lambda t: t.drop(columns="time_per_step_s"),
                       "measured.csv: no column time_per_step_s or throughput; a measurements table needs workers, "
                       "per_worker_batch, gradient_bytes and time_per_step_s or throughput"),
    "text in a number column": (lambda t: t.astype({"workers": object}).assign(
        workers=["1", "1", "two", "2", "4", "4", "8", "8"]),
        "measured.csv row 4, column workers: 'two' is not a finite number"),
    "a non-positive batch": (lambda t: t.assign(per_worker_batch=[32, 64, 32, 0, 32, 64, 32, 64]),
                             "measured.csv row 5, column per_worker_batch: 0; it must be > 0"),
    "one row": (lambda t: t.head(1), "measured.csv: 1 row(s); the fit needs at least 2"),
    "no workers on a node": (lambda t: t.assign(workers_per_node=[1, 1, 2, 2, 4, 4, 8, 0]),
                             "measured.csv row 9, column workers_per_node: 0; it must be > 0"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_measurements_are_one_line_naming_the_row_and_column(tmp_path, case):
    change, expected = BAD[case]
    source = tmp_path / "measured.csv"
    change(measurements()).to_csv(source, index=False)
    with pytest.raises(SystemExit) as stopped:
        main([str(source)])
    assert stopped.value.code == f"scaling-predict: {source}{expected.removeprefix('measured.csv')}"


def test_the_published_validation_fits_on_its_split_and_predicts_the_rest(monkeypatch):
    """benchmarks/published_scaling.py: each table fitted on its fixed split, the rest predicted; a stated
    efficiency E at N GPUs is E x N x one GPU's throughput; the printed ratio and 'holds' follow the interval."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("published_scaling", REPO / "benchmarks" / "published_scaling.py")
    assert spec is not None and spec.loader is not None
    published = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "published_scaling", published)  # its dataclasses look themselves up there
    spec.loader.exec_module(published)
    vgg = next(table for table in published.TABLES if table.name.endswith("VGG-16"))
    assert vgg.throughput[512] == pytest.approx(0.68 * 512 * 130.9) and vgg.fitted_on == (1, 16, 128)
    for table in published.TABLES:
        held = published.validate(table, draws=500)
        assert sorted(held["workers"]) == sorted(n for n in table.throughput if n not in table.fitted_on)
        np.testing.assert_allclose(held["throughput"], [table.throughput[int(n)] for n in held["workers"]])
        np.testing.assert_allclose(held["ratio"], held["predicted_s"] / (table.per_worker_batch * held["workers"]
                                                                          / held["throughput"]))
        inside = (held["low_s"] <= held["time_per_step_s"]) & (held["time_per_step_s"] <= held["high_s"])
        assert (held["holds"] == inside).all()
