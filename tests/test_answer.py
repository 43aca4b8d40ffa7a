"""The study's answer (analysis/answer.py) on tables made in the test: which configurations it
predicts, how they would share cores, and that it names the best one over measured and predicted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.answer import (
    answer_json,
    answer_markdown,
    answer_study,
    candidates,
    measured_rows,
    step_rows,
    write_answer,
)

C0, C1, LATENCY, GRADIENT_BYTES = 1e-3, 5e-5, 4e-4, 1_000_000
STEPS_MIN, B_CRIT = 40.0, 100.0


def step_time(batch: float, workers: int, rho: float) -> float:
    """The reference model, written out: rho (c0 + c1 b + 2 (N-1) latency) (no bandwidth term)."""
    return rho * (C0 + C1 * batch + (2 * (workers - 1) * LATENCY if workers > 1 else 0.0))


def runs_table(device: str = "cuda:0", cpus: int = 64, missing: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = []
    for workers in (1, 2, 4):
        for batch in (16, 64):
            rho = 1.0 if device.startswith("cuda") else max(1.0, workers / cpus)
            steps = STEPS_MIN * (1 + B_CRIT / (batch * workers))
            time = step_time(batch, workers, rho)
            cell = f"bs{batch}-gpus{workers}"
            rows.append({"cell": cell, "status": "failed" if cell in missing else "complete",
                         "batch_size": batch, "gpus": workers, "world_size": workers, "global_batch": batch * workers,
                         "steps_to_target": steps, "step_time_s": time, "time_per_step_s": time,
                         "time_to_target_s": steps * time, "noise_scale": 90.0, "gradient_bytes": GRADIENT_BYTES,
                         "oversubscription": rho, "workers_per_node": workers, "nodes": 1, "threads_per_worker": 1,
                         "cpus": cpus, "device": device, "target_accuracy": 0.9, "patience": 2,
                         "grid_axes": "batch_size gpus"})
    return pd.DataFrame(rows)


def test_candidates_share_cores_as_the_cells_did():
    cpu = runs_table(device="cpu", cpus=2)
    predicted = candidates(cpu, step_rows(cpu)).set_index(["workers", "per_worker_batch"])
    # All on one node with 2 CPUs and 1 thread per worker: N workers are N/2 times over the cores.
    for workers in (1, 2, 4, 8, 16):
        assert predicted.loc[(workers, 16.0), "oversubscription"] == pytest.approx(max(1.0, workers / 2))
    gpu = runs_table()
    on_gpus = candidates(gpu, step_rows(gpu))
    assert (on_gpus["oversubscription"] == 1.0).all()
    # Powers of two up to 4x the largest run, and the batches between the smallest and largest run.
    assert sorted(on_gpus["workers"].unique()) == [1, 2, 4, 8, 16]
    assert sorted(on_gpus["per_worker_batch"].unique()) == [16.0, 32.0, 64.0]
    assert on_gpus.set_index(["workers", "per_worker_batch"]).loc[(8, 16.0), "extrapolated"]
    assert not on_gpus.set_index(["workers", "per_worker_batch"]).loc[(2, 32.0), "extrapolated"]


def test_the_answer_recovers_the_model_and_picks_the_fastest_and_cheapest(tmp_path: Path):
    runs = runs_table()
    answer = answer_study(runs, "s")
    group = answer.groups[0]
    assert group.critical_batch is not None
    assert group.critical_batch.critical_batch == pytest.approx(B_CRIT, rel=1e-4)
    assert group.step_model is not None
    # Every prediction, measured cell or not, is the reference model's time to target.
    predicted = group.predicted
    reference = [STEPS_MIN * (1 + B_CRIT / (b * n)) * step_time(b, n, 1.0)
                 for b, n in zip(predicted["per_worker_batch"], predicted["workers"])]
    np.testing.assert_allclose(predicted["time_to_target_s"], reference, rtol=1e-4)
    # The fastest over everything: computed here from the closed forms.
    options = {(n, b): STEPS_MIN * (1 + B_CRIT / (b * n)) * step_time(b, n, 1.0)
               for n in (1, 2, 4, 8, 16) for b in (16, 32, 64)}
    fastest = min(options, key=lambda key: (options[key], key[0]))
    cheapest = min(options, key=lambda key: (options[key] * key[0], key[0]))
    assert answer.fastest is not None and answer.cheapest is not None
    assert (answer.fastest.workers, answer.fastest.per_worker_batch) == fastest
    assert (answer.cheapest.workers, answer.cheapest.per_worker_batch) == cheapest
    measured_pairs = {(n, float(b)) for n, b in zip(runs["world_size"], runs["batch_size"])}
    assert answer.fastest.source == ("measured" if fastest in measured_pairs else "predicted")
    write_answer(runs, tmp_path, "s")
    saved = json.loads((tmp_path / "answer.json").read_text())
    assert saved["fastest"]["workers"] == fastest[0] and saved["unfinished"] == 0


def test_a_partial_study_says_so_and_answers_from_the_finished_cells():
    runs = runs_table(missing=("bs64-gpus4",))
    answer = answer_study(runs, "s")
    assert answer.unfinished == 1
    assert "Partial: 1 of 6 cells have not finished" in answer_markdown(answer)
    assert len(measured_rows(runs)) == 5


def test_the_tables_as_collect_returns_them_with_nullable_integers_answer_too():
    # collect's in-memory runs table (the partial results after a failure) holds pd.NA, not NaN,
    # where a finished cell never reached the target.
    runs = runs_table()
    runs["steps_to_target"] = pd.array([None if cell == "bs64-gpus4" else int(steps) for cell, steps
                                        in zip(runs["cell"], runs["steps_to_target"])], dtype="Int64")
    answer = answer_study(runs, "s")
    assert answer.groups[0].critical_batch is not None and answer.fastest is not None


def test_the_answer_names_the_cells_whose_gpus_sat_mostly_idle():
    runs = runs_table()
    runs["gpu_utilization"] = [0.9, 0.49, 0.5, None, 0.2, 0.95]
    runs["memory_used_fraction"] = [0.3, 0.5, 0.24, None, 0.5, 0.5]
    runs["time_limit_used_fraction"] = [0.5, 0.5, 0.5, 0.91, 0.9, None]
    answer = answer_study(runs, "s")
    # 0.49 busy; 24 % of its memory; 91 % of its time limit; 20 % busy.
    assert [line.split(":")[0] for line in answer.wasteful] == ["bs64-gpus1", "bs16-gpus2", "bs64-gpus2",
                                                                 "bs16-gpus4"]
    markdown = answer_markdown(answer)
    assert "Cells that left what they were given idle:\n- bs64-gpus1: its GPUs were busy 49% of the time" in markdown
    assert "bs16-gpus2: it used 24% of the memory it asked for" in markdown
    assert "bs64-gpus2: a job ran 91% of its time limit" in markdown
    assert not answer_study(runs_table(), "s").wasteful  # no GPU column (CPU runs): nothing named


# Two kinds of hardware: "fast" computes 3x faster at 4 per GPU-hour, 8 GPUs to a node; "slow" at 1, 4 to a node.
HARDWARE = {"fast": (3.0, 4.0, 8), "slow": (1.0, 1.0, 4)}


def hierarchical_step_time(batch: float, workers: int, speed: float, per_node: int) -> float:
    """(c0 + c1 b) / speed + ring latency inside each node of k workers and across the n nodes."""
    k = min(workers, per_node)
    nodes = -(-workers // k)
    return (C0 + C1 * batch) / speed + (2 * (k - 1) + 2 * (nodes - 1)) * LATENCY


def two_partitions() -> pd.DataFrame:
    rows = []
    for partition, (speed, price, per_node) in HARDWARE.items():
        for workers in (1, 2, 4):
            for batch in (16, 64):
                steps = STEPS_MIN * (1 + B_CRIT / (batch * workers))
                time = hierarchical_step_time(batch, workers, speed, per_node)
                rows.append({"cell": f"bs{batch}-gpus{workers}-partition_{partition}", "status": "complete",
                             "batch_size": batch, "gpus": workers, "partition": partition, "world_size": workers,
                             "global_batch": batch * workers, "steps_to_target": steps, "step_time_s": time,
                             "time_to_target_s": steps * time, "gradient_bytes": GRADIENT_BYTES,
                             "oversubscription": 1.0, "workers_per_node": workers, "nodes": 1,
                             "gpus_per_node": per_node, "price_per_gpu_hour": price, "device": "cuda:0",
                             "target_accuracy": 0.9, "grid_axes": "batch_size gpus partition"})
    return pd.DataFrame(rows)


def test_two_partitions_with_prices_answer_the_fastest_and_the_cheapest_in_hours_and_money():
    answer = answer_study(two_partitions(), "s")
    assert [group.group for group in answer.groups] == [{"partition": "fast"}, {"partition": "slow"}]
    options = {}  # (partition, workers, per-worker batch) -> (time to target, cost), from the closed forms
    for partition, (speed, price, per_node) in HARDWARE.items():
        for n in (1, 2, 4, 8, 16):
            for b in (16, 32, 64):
                time = STEPS_MIN * (1 + B_CRIT / (b * n)) * hierarchical_step_time(b, n, speed, per_node)
                options[(partition, n, b)] = (time, n * time / 3600 * price)
    fastest = min(options, key=lambda key: options[key][0])
    cheapest = min(options, key=lambda key: options[key][1])
    assert fastest[0] == "fast" and cheapest[0] == "slow"  # the test's premise: each kind wins one
    assert answer.fastest is not None and answer.cheapest is not None
    assert (answer.fastest_group["partition"], answer.fastest.workers, answer.fastest.per_worker_batch) == fastest
    assert (answer.cheapest_group["partition"], answer.cheapest.workers, answer.cheapest.per_worker_batch) == cheapest
    assert answer.fastest.time_to_target_s == pytest.approx(options[fastest][0], rel=1e-4)
    assert answer.cheapest.cost == pytest.approx(options[cheapest][1], rel=1e-4)
    text = answer_markdown(answer)
    cheapest_line = next(line for line in text.splitlines() if line.startswith("- **Cheapest:**"))
    assert "partition slow" in cheapest_line and f"cost {options[cheapest][1]:.3g} (at 1 per GPU-hour)" in cheapest_line
    unpriced = answer_study(two_partitions().assign(price_per_gpu_hour=np.nan), "s")
    assert unpriced.cheapest is not None and np.isnan(unpriced.cheapest.cost)  # GPU-hours decide, no money shown


def test_the_tables_with_missing_times_and_no_prices_as_collect_writes_them_still_answer():
    """collect's nullable columns: a cell without a time to target is <NA>, and so is its cost."""
    runs = two_partitions().drop(columns="price_per_gpu_hour")
    runs["time_to_target_s"] = pd.array([None, *runs["time_to_target_s"].iloc[1:]], dtype="Float64")
    answer = answer_study(runs, "s")
    assert answer.fastest is not None and answer.cheapest is not None and np.isnan(answer.cheapest.cost)


def test_a_target_axis_gets_its_own_fastest_and_cheapest_per_target():
    """Times to different targets do not compare: each target's choices come from its own groups."""
    low = two_partitions().assign(target_accuracy=0.5)
    high = two_partitions().assign(target_accuracy=0.9, time_to_target_s=lambda t: t["time_to_target_s"] * 10)
    runs = pd.concat([low, high], ignore_index=True).assign(grid_axes="batch_size gpus partition target_accuracy")
    runs["cell"] = runs["cell"] + "-target" + runs["target_accuracy"].astype(str)
    answer = answer_study(runs, "s")
    assert answer.fastest is None and answer.cheapest is None
    assert [chosen.target for chosen in answer.per_target] == [{"target_accuracy": 0.5}, {"target_accuracy": 0.9}]
    alone = {target: answer_study(part, "s") for target, part in ((0.5, low), (0.9, high))}
    for chosen in answer.per_target:
        reference = alone[chosen.target["target_accuracy"]]
        assert chosen.fastest is not None and reference.fastest is not None
        assert chosen.fastest.time_to_target_s == pytest.approx(reference.fastest.time_to_target_s)
        assert chosen.cheapest is not None and reference.cheapest is not None
        assert chosen.cheapest.cost == pytest.approx(reference.cheapest.cost)
        assert chosen.fastest_group["target_accuracy"] == chosen.target["target_accuracy"]
    text = answer_markdown(answer)
    assert "To target_accuracy 0.5:" in text and "To target_accuracy 0.9:" in text
    assert [entry["target"] for entry in answer_json(answer)["per_target"]] == [{"target_accuracy": 0.5},
                                                                               {"target_accuracy": 0.9}]


def test_the_pareto_labels_merge_one_configuration_both_fastest_and_cheapest():
    """On one worker the same measured cell is both; unpriced, its costs are NaN and must not split it in two."""
    from analysis.answer_figures import answer_labels

    runs = runs_table()
    answer = answer_study(runs[runs["gpus"] == 1], "s")
    assert answer.fastest is not None and answer.cheapest is not None and answer.fastest.cell == answer.cheapest.cell
    assert list(answer_labels(answer, answer.groups[0])) == ["fastest and cheapest"]


def test_the_pareto_figure_puts_money_on_its_cost_axis_where_the_hardware_is_priced():
    """Priced partitions: each measured point sits at its GPU-hours x the partition's price (computed
    here from the runs); unpriced: at its GPU-hours, and the axis says which."""
    from analysis.answer_figures import COST_LABEL, GPU_HOURS_LABEL, pareto_figure

    runs = two_partitions()
    for priced in (True, False):
        table = runs if priced else runs.assign(price_per_gpu_hour=np.nan)
        answer = answer_study(table, "s")
        figure = pareto_figure(answer.groups, answer)
        for ax, group in zip(figure.axes, answer.groups):
            cells = runs[runs["partition"] == group.group["partition"]]
            gpu_hours = cells["gpus"] * cells["time_to_target_s"] / 3600
            expected = gpu_hours * cells["price_per_gpu_hour"] if priced else gpu_hours
            shown = np.concatenate([collection.get_offsets()[:, 0] for collection in ax.collections])
            assert ax.get_xlabel() == (COST_LABEL if priced else GPU_HOURS_LABEL)
            assert all(np.isclose(shown, value, rtol=1e-9).any() for value in expected), (priced, shown, expected)
        figure.clear()
