import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import FIGURE_NAMES
from analysis.assessment import main as assessment_main
from analysis.collect import StudyAnalysis, collect_study
from analysis.collect import main as collect_main
from analysis.figures import main as figures_main
from analysis.figures import make_all_figures
from analysis.steps import MANIFEST, STEPS, STUDY_FILES, AnalysisStep
from analysis.steps import main as steps_main
from jobs.cell import CellDir

TARGET = 0.9


def params(batch_size: int, gpus: int, **overrides: Any) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "gpus": gpus,
        "lr": 0.05,
        "lr_scaling": "linear",
        "warmup_epochs": 0,
        "optimizer": "sgd",
        "epochs": 4,
        "target_accuracy": TARGET,
        "patience": 2,
        "model": "cnn",
        "dataset": "digits",
        "seed": 0,
        **overrides,
    }


def meta(cell_params: dict[str, Any], world_size: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "meta",
        "world_size": world_size,
        "hosts": ["node1"] * world_size,
        "versions": {"torch": "2.13.0"},
        "job_id": "4242",
        "params": cell_params,
        "startup_s": 3.0,
        **extra,
    }


SAMPLES = 1437
VALIDATION_S, IO_S = 0.5, 0.1


def epoch(number: int, time_s: float, rate: float, accuracy: float | None, world_size: int, loss: float | None = 0.5) -> dict[str, Any]:
    """An epoch record whose steps ran at ``rate`` samples/s; ``time_s`` is the cumulative step time."""
    steps_s = SAMPLES / rate
    epoch_time_s = steps_s + VALIDATION_S + IO_S
    return {
        "type": "epoch",
        "version": 2,
        "epoch": number,
        "steps_s": steps_s,
        "validation_s": VALIDATION_S,
        "io_s": IO_S,
        "wait_s": 0.0,
        "other_s": 0.0,
        "epoch_time_s": epoch_time_s,
        "train_time_s": time_s,
        "wall_time_s": time_s + number * (VALIDATION_S + IO_S),
        "samples": SAMPLES,
        "samples_per_s": rate,
        "train_loss": loss,
        "val_loss": loss,
        "val_accuracy": accuracy,
        "lr": 0.05 * world_size,
        "world_size": world_size,
    }


def write_cell(
    study_dir: Path,
    name: str,
    records: list[dict[str, Any]] | None,
    summary: dict[str, Any] | None,
    tail: str = "",
) -> None:
    cell_dir = study_dir / "cells" / name
    cell_dir.mkdir(parents=True)
    if records is not None:
        text = "".join(json.dumps(record) + "\n" for record in records) + tail
        (cell_dir / "metrics.jsonl").write_text(text)
    if summary is not None:
        (cell_dir / "summary.json").write_text(json.dumps(summary))


def summary(name: str, cell_params: dict[str, Any], status: str, epochs_run: int, train_time_s: float, best: float) -> dict[str, Any]:
    return {
        "cell": name,
        "study": "default",
        "status": status,
        "stop_reason": "diverged" if status == "diverged" else "epochs",
        "params": cell_params,
        "grid_axes": ["batch_size", "gpus"],
        "world_size": cell_params["gpus"],
        "epochs_run": epochs_run,
        "train_time_s": train_time_s,
        "startup_s": 3.0,
        "queue_time_s": 0.5,
        "restarts": 0,
        "job_id": "4242",
        "best_val_accuracy": best,
    }


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    study = tmp_path / "results" / "default"

    one = params(64, 1)
    write_cell(
        study,
        "bs64-gpus1",
        [meta(one, 1), epoch(1, 10.0, 50.0, 0.70, 1), epoch(2, 18.0, 100.0, 0.91, 1),
         epoch(3, 26.0, 100.0, 0.93, 1), epoch(4, 34.0, 100.0, 0.94, 1)],
        summary("bs64-gpus1", one, "complete", 4, 34.0, 0.94),
    )

    two = params(64, 2)
    # Epoch 2 is logged twice (requeue): the last record wins. Epoch 3 follows a resume.
    write_cell(
        study,
        "bs64-gpus2",
        [meta(two, 2), epoch(1, 6.0, 90.0, 0.60, 2), epoch(2, 10.0, 999.0, 0.10, 2),
         epoch(2, 10.0, 190.0, 0.92, 2), meta(two, 2, resumed_from_epoch=2),
         epoch(3, 15.0, 120.0, 0.88, 2), epoch(4, 19.0, 170.0, 0.95, 2)],
        summary("bs64-gpus2", two, "complete", 4, 19.0, 0.95),
    )

    diverged = params(32, 2, lr=0.6)
    write_cell(
        study,
        "bs32-gpus2",
        [meta(diverged, 2), epoch(1, 5.0, 80.0, 0.30, 2), epoch(2, 9.0, 160.0, 0.10, 2, loss=None)],
        summary("bs32-gpus2", diverged, "diverged", 2, 9.0, 0.30),
    )

    truncated = params(32, 1)
    write_cell(
        study,
        "bs32-gpus1",
        [meta(truncated, 1), epoch(1, 10.0, 40.0, 0.5, 1), epoch(2, 20.0, 45.0, 0.6, 1)],
        summary("bs32-gpus1", truncated, "complete", 3, 30.0, 0.7),
        tail='{"type": "epoch", "epoch": 3, "train_ti',
    )

    unfinished = params(128, 1)
    write_cell(study, "bs128-gpus1", [meta(unfinished, 1), epoch(1, 12.0, 60.0, 0.4, 1)], None)
    return study


@pytest.fixture
def runs(study_dir: Path) -> pd.DataFrame:
    return collect_study(study_dir)[0].set_index("cell")


def test_one_row_per_cell_with_its_status(runs: pd.DataFrame) -> None:
    assert runs["status"].to_dict() == {
        "bs32-gpus1": "broken",
        "bs32-gpus2": "diverged",
        "bs64-gpus1": "complete",
        "bs64-gpus2": "complete",
        "bs128-gpus1": "failed",
    }
    assert "line 4" in runs.loc["bs32-gpus1", "problem"]
    assert pd.isna(runs.loc["bs64-gpus1", "problem"])


def test_rows_are_ordered_by_grid(runs: pd.DataFrame) -> None:
    assert list(runs.index) == ["bs32-gpus1", "bs32-gpus2", "bs64-gpus1", "bs64-gpus2", "bs128-gpus1"]


def test_throughput_leaves_out_startup_epochs(runs: pd.DataFrame) -> None:
    assert runs.loc["bs64-gpus1", "throughput"] == pytest.approx(100.0)
    assert runs.loc["bs64-gpus1", "throughput_ci95"] == pytest.approx(0.0)
    # Epoch 1 (start) and epoch 3 (first after the resume) are left out: 190 and 170 remain.
    assert runs.loc["bs64-gpus2", "throughput"] == pytest.approx(180.0)
    assert runs.loc["bs64-gpus2", "throughput_ci95"] == pytest.approx(1.96 * math.sqrt(200) / math.sqrt(2))


def test_scaling_against_the_one_worker_run(runs: pd.DataFrame) -> None:
    assert runs.loc["bs64-gpus2", "speedup"] == pytest.approx(1.8)
    assert runs.loc["bs64-gpus2", "efficiency"] == pytest.approx(0.9)
    assert runs.loc["bs64-gpus1", "efficiency"] == pytest.approx(1.0)
    # The 32-sample baseline is broken, so nothing is compared with it.
    assert pd.isna(runs.loc["bs32-gpus2", "efficiency"])


def test_time_to_target_with_patience_two(runs: pd.DataFrame) -> None:
    assert runs.loc["bs64-gpus1", "time_to_target_s"] == pytest.approx(26.0)
    # 0.92 at epoch 2, lost at epoch 3, only epoch 4 above target: not confirmed.
    assert pd.isna(runs.loc["bs64-gpus2", "time_to_target_s"])
    assert pd.isna(runs.loc["bs32-gpus2", "time_to_target_s"])


def test_sizes_and_accuracies(runs: pd.DataFrame) -> None:
    row = runs.loc["bs64-gpus2"]
    assert (row["world_size"], row["global_batch"], row["nodes"], row["epochs_run"]) == (2, 128, 1, 4)
    assert row["best_val_accuracy"] == pytest.approx(0.95)
    assert row["final_val_accuracy"] == pytest.approx(0.95)
    assert row["train_time_s"] == pytest.approx(19.0)
    assert row["restarts"] == 0
    assert runs.loc["bs32-gpus2", "final_val_accuracy"] == pytest.approx(0.10)


def test_failed_cell_is_read_from_its_meta_line(runs: pd.DataFrame) -> None:
    row = runs.loc["bs128-gpus1"]
    assert (row["batch_size"], row["gpus"], row["epochs_run"], row["world_size"]) == (128, 1, 1, 1)
    assert row["train_time_s"] == pytest.approx(12.0)
    assert row["throughput"] == pytest.approx(60.0)
    assert pd.isna(row["throughput_ci95"])
    assert row["job_id"] == "4242"


def test_parameters_are_columns(runs: pd.DataFrame) -> None:
    assert runs.loc["bs32-gpus2", "lr"] == pytest.approx(0.6)
    assert runs.loc["bs64-gpus1", "optimizer"] == "sgd"
    assert runs.loc["bs64-gpus1", "grid_axes"] == "batch_size gpus"


def test_epochs_table_is_tidy(study_dir: Path) -> None:
    epochs = collect_study(study_dir)[1]
    two = epochs[epochs["cell"] == "bs64-gpus2"]
    assert list(two["epoch"]) == [1, 2, 3, 4]
    assert two.loc[two["epoch"] == 2, "samples_per_s"].item() == 190.0
    assert list(two["startup_epoch"]) == [True, False, True, False]
    assert set(two["batch_size"]) == {64} and set(two["gpus"]) == {2}
    assert "type" not in epochs.columns
    # The truncated last line is dropped; the two good epochs stay.
    assert len(epochs[epochs["cell"] == "bs32-gpus1"]) == 2


def test_other_grid_axes_become_columns_and_keep_baselines_apart(tmp_path: Path) -> None:
    study = tmp_path / "warmup"
    for warmup, rates in ((0, (100.0, 150.0)), (2, (100.0, 190.0))):
        for gpus, rate in zip((1, 2), rates):
            name = f"bs32-gpus{gpus}-warmup{warmup}"
            cell_params = params(32, gpus, warmup_epochs=warmup)
            cell_summary = summary(name, cell_params, "complete", 2, 2.0, 0.5) | {"grid_axes": ["batch_size", "gpus", "warmup_epochs"]}
            baseline = 100.0 if gpus == 1 else rate
            write_cell(study, name, [meta(cell_params, gpus), epoch(1, 1.0, 1.0, 0.5, gpus), epoch(2, 2.0, baseline, 0.5, gpus)], cell_summary)
    runs, _ = collect_study(study)
    assert list(runs.columns[4:7]) == ["batch_size", "gpus", "warmup_epochs"]
    efficiency = runs.set_index("cell")["efficiency"]
    assert efficiency["bs32-gpus2-warmup0"] == pytest.approx(0.75)
    assert efficiency["bs32-gpus2-warmup2"] == pytest.approx(0.95)


def test_unreadable_files_mark_the_cell_broken(tmp_path: Path) -> None:
    study = tmp_path / "study"
    good = params(16, 1)
    write_cell(study, "garbage-summary", [meta(good, 1), epoch(1, 1.0, 10.0, 0.5, 1)], None)
    (study / "cells" / "garbage-summary" / "summary.json").write_text("{not json")
    write_cell(study, "no-metrics", None, summary("no-metrics", good, "complete", 1, 1.0, 0.5))
    write_cell(study, "binary-metrics", None, None)
    (study / "cells" / "binary-metrics" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    write_cell(study, "never-started", None, None)
    runs = collect_study(study)[0].set_index("cell")
    assert runs["status"].to_dict() == {
        "binary-metrics": "broken",
        "garbage-summary": "broken",
        "never-started": "failed",
        "no-metrics": "broken",
    }
    assert "missing" in runs.loc["no-metrics", "problem"]
    # The never-started cell has no batch size; the others' stay integers in the CSV.
    runs.to_csv(tmp_path / "runs.csv")
    assert "garbage-summary,study,broken,,16,1,1,1,16," in (tmp_path / "runs.csv").read_text()


def test_throughput_from_samples_and_epoch_time_when_rate_is_missing(tmp_path: Path) -> None:
    study = tmp_path / "study"
    cell_params = params(16, 1)
    records = [meta(cell_params, 1), epoch(1, 1.0, 10.0, 0.5, 1), epoch(2, 2.0, 10.0, 0.5, 1)]
    records[2] = {**records[2], "samples": 300, "epoch_time_s": 2.0, "samples_per_s": None}
    write_cell(study, "bs16-gpus1", records, summary("bs16-gpus1", cell_params, "complete", 2, 2.0, 0.5))
    runs = collect_study(study)[0]
    assert runs.loc[0, "throughput"] == pytest.approx(150.0)


def test_read_metrics_notes_the_first_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "meta", "params": {}}\n[1, 2]\n{"type": "epoch", "epoch": 1}\ngarbage\n')
    log = CellDir(tmp_path).read_metrics()
    assert [record["epoch"] for record in log.epochs] == [1]
    assert log.problem is not None and "line 2" in log.problem


def test_empty_study(tmp_path: Path) -> None:
    runs, epochs = collect_study(tmp_path / "nothing-here")
    assert runs.empty and epochs.empty
    assert {"cell", "status", "batch_size", "gpus", "throughput", "efficiency"} <= set(runs.columns)


def test_clis_write_tables_and_figures(study_dir: Path) -> None:
    runs_csv, epochs_csv, figures_dir = study_dir / "runs.csv", study_dir / "epochs.csv", study_dir / "figures"
    collect_main([str(study_dir), "--runs", str(runs_csv), "--epochs", str(epochs_csv)])
    runs = pd.read_csv(runs_csv)
    assert len(runs) == 5
    assert list(runs.columns[:6]) == ["cell", "study", "status", "stop_reason", "batch_size", "gpus"]
    row = runs.set_index("cell").loc["bs64-gpus2"]
    assert (row["throughput"], row["efficiency"]) == (pytest.approx(180.0), pytest.approx(0.9))
    assert pd.isna(row["time_to_target_s"])

    figures_main([str(runs_csv), str(epochs_csv), "--out", str(figures_dir), "--target", str(TARGET)])
    assert_all_figures(figures_dir)


def assert_all_figures(figures_dir: Path, names: tuple[str, ...] = FIGURE_NAMES) -> None:
    expected = {f"{name}.{extension}" for name in names for extension in ("png", "svg")}
    assert {path.name for path in figures_dir.iterdir()} == expected
    for path in figures_dir.iterdir():
        assert path.stat().st_size > 1000, path
    for name in names:
        assert (figures_dir / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        assert b"<svg" in (figures_dir / f"{name}.svg").read_bytes()


def test_make_all_figures_draws_each_figure_the_data_fill_as_png_and_svg(study_dir: Path, tmp_path: Path) -> None:
    runs, epochs = collect_study(study_dir)
    outcomes = make_all_figures(runs, epochs, tmp_path / "figures", TARGET)
    assert [outcome.name for outcome in outcomes] == list(FIGURE_NAMES)
    assert all(outcome.drawn for outcome in outcomes), outcomes
    assert_all_figures(tmp_path / "figures")


def test_figures_of_a_study_where_every_cell_failed(tmp_path: Path) -> None:
    study = tmp_path / "failed"
    write_cell(study, "bs64-gpus1", [meta(params(64, 1), 1)], None)
    write_cell(study, "bs64-gpus2", None, None)
    runs, epochs = collect_study(study)
    assert set(runs["status"]) == {"failed"}
    outcomes = make_all_figures(runs, epochs, tmp_path / "figures", TARGET)
    # Nothing to draw: no figure of empty panels, and each says why.
    assert {(outcome.drawn, outcome.why) for outcome in outcomes} == {(False, "no finished cells to plot")}
    assert_all_figures(tmp_path / "figures", ())


def test_figures_of_an_empty_study_from_csv(tmp_path: Path) -> None:
    study = tmp_path / "empty"
    collect_main([str(study), "--runs", str(tmp_path / "runs.csv"), "--epochs", str(tmp_path / "epochs.csv")])
    figures_main([str(tmp_path / "runs.csv"), str(tmp_path / "epochs.csv"), "--out", str(tmp_path / "figures")])
    assert_all_figures(tmp_path / "figures", ())


def test_figures_with_an_extra_grid_axis_from_csv(tmp_path: Path) -> None:
    study = tmp_path / "warmup"
    for warmup in (0, 2):
        for batch in (32, 64, 128):
            for gpus in (1, 2, 4):
                name = f"bs{batch}-gpus{gpus}-warmup{warmup}"
                cell_params = params(batch, gpus, warmup_epochs=warmup)
                status = "diverged" if (warmup, gpus) == (0, 4) else "complete"
                cell_summary = summary(name, cell_params, status, 3, 3.0, 0.9) | {"grid_axes": ["batch_size", "gpus", "warmup_epochs"]}
                rate = 100.0 * gpus * (0.9 if gpus > 1 else 1.0)
                records = [meta(cell_params, gpus)] + [epoch(e, e * 100 / gpus, rate + e, 0.3 * e, gpus) for e in (1, 2, 3)]
                write_cell(study, name, records, cell_summary)
    runs, epochs = collect_study(study)
    runs.to_csv(tmp_path / "runs.csv", index=False)
    epochs.to_csv(tmp_path / "epochs.csv", index=False)
    figures_main([str(tmp_path / "runs.csv"), str(tmp_path / "epochs.csv"), "--out", str(tmp_path / "figures")])
    # No cell has a time to target: that figure would be empty panels, so it is not drawn.
    assert runs["time_to_target_s"].isna().all()
    assert_all_figures(tmp_path / "figures", tuple(name for name in FIGURE_NAMES if name != "time_to_accuracy"))


REPEATED_RATES = {(1, 0): 100.0, (1, 1): 104.0, (1, 2): 96.0, (2, 0): 150.0, (2, 1): 170.0, (2, 2): 160.0}
"""(workers, repeat) -> steady-state samples/s of a study with a repeat axis."""


def write_repeated_study(study: Path) -> None:
    for (gpus, repeat), rate in REPEATED_RATES.items():
        name = f"bs32-gpus{gpus}-rep{repeat}"
        cell_params = params(32, gpus, repeat=repeat)
        cell_summary = summary(name, cell_params, "complete", 2, 2.0, 0.5) | {"grid_axes": ["batch_size", "gpus", "repeat"]}
        write_cell(study, name, [meta(cell_params, gpus), epoch(1, 1.0, 1.0, 0.5, gpus), epoch(2, 2.0, rate, 0.5, gpus)],
                   cell_summary)


def test_repeats_are_averaged_with_a_t_interval_and_share_one_baseline(tmp_path: Path) -> None:
    write_repeated_study(tmp_path / "repeats")
    runs = collect_study(tmp_path / "repeats")[0].set_index("cell")
    assert list(runs.columns)[-1] == "grid_axes"
    two = runs.loc["bs32-gpus2-rep1"]
    assert two["repeats"] == 3
    assert two["throughput_over_repeats"] == pytest.approx(160.0)
    assert two["throughput_over_repeats_ci95"] == pytest.approx(4.302653 * 10.0 / math.sqrt(3), rel=1e-6)
    # Each 2-worker repeat is compared with the mean of the 1-worker repeats (100), not its own index.
    assert runs.loc["bs32-gpus2-rep1", "efficiency"] == pytest.approx(170.0 / 200.0)
    assert two["efficiency_over_repeats"] == pytest.approx(0.8)
    assert runs.loc["bs32-gpus1-rep2", "throughput_over_repeats"] == pytest.approx(100.0)


def write_timed_cell(study: Path, name: str, cell_params: dict[str, Any], steps_s: list[float],
                     accuracies: list[float], status: str = "complete") -> None:
    """A cell whose epochs' steps took ``steps_s`` each (the same SAMPLES per epoch)."""
    world_size = cell_params["gpus"]
    records: list[dict[str, Any]] = [meta(cell_params, world_size)]
    elapsed = 0.0
    for number, (seconds, accuracy) in enumerate(zip(steps_s, accuracies), start=1):
        elapsed += seconds
        records.append(epoch(number, elapsed, SAMPLES / seconds, accuracy, world_size))
    write_cell(study, name, records, summary(name, cell_params, status, len(steps_s), elapsed, max(accuracies)))


def test_strong_scaling_efficiency_is_t1_over_n_tn_at_the_same_global_batch(tmp_path: Path) -> None:
    study = tmp_path / "strong"
    epoch_times = {(64, 1): [9.0, 8.0, 8.0], (32, 2): [6.0, 5.0, 5.0], (16, 4): [4.0, 2.5, 2.5]}
    for (batch, gpus), times in epoch_times.items():
        write_timed_cell(study, f"gbs64-gpus{gpus}", params(batch, gpus, lr_scaling="none"), times, [0.5] * 3)
    runs, _ = collect_study(study, analysis=StudyAnalysis(scaling="strong"))
    runs = runs.set_index("cell")
    assert set(runs["global_batch"]) == {64}
    steady = {gpus: np.mean(times[1:]) for (_, gpus), times in epoch_times.items()}  # first epoch left out
    for gpus in (1, 2, 4):
        assert runs.loc[f"gbs64-gpus{gpus}", "efficiency"] == pytest.approx(steady[1] / (gpus * steady[gpus]))
    # Weak scaling would look for 1-worker cells with batch 32 and 16 per worker: there are none.
    weak, _ = collect_study(study)
    assert weak.set_index("cell")["efficiency"].drop("gbs64-gpus1").isna().all()


def test_the_assessment_passes_a_cell_that_held_its_target_within_the_budget(tmp_path: Path) -> None:
    study = tmp_path / "assessed"
    accuracies = {"fast": [0.5, 0.91, 0.93, 0.95], "slow": [0.5, 0.6, 0.92, 0.94], "dip": [0.92, 0.5, 0.91, 0.7]}
    steps_s = [10.0, 10.0, 10.0, 10.0]
    for name, values in accuracies.items():
        write_timed_cell(study, name, params(32, 1, patience=2), steps_s, values)
    write_cell(study, "unfinished", [meta(params(32, 1), 1)], None)
    budget = 32.0
    runs, _ = collect_study(study, analysis=StudyAnalysis(time_budget_s=budget))
    verdicts = runs.set_index("cell")["assessment"].to_dict()
    # Independently: the wall clock at the second of two epochs in a row at or above the target.
    for name, values in accuracies.items():
        wall = np.cumsum(steps_s) + np.arange(1, 5) * (VALIDATION_S + IO_S)
        held = [i for i in range(1, 4) if values[i - 1] >= TARGET and values[i] >= TARGET]
        expected = "pass" if held and wall[held[0]] <= budget else "fail"
        assert verdicts[name] == expected, name
    assert verdicts == {"fast": "pass", "slow": "fail", "dip": "fail", "unfinished": None}
    assert (runs["time_budget_s"] == budget).all()
    without, _ = collect_study(study)
    assert without["assessment"].isna().all()


def test_assessment_and_strong_scaling_reach_the_tables_from_the_command_line(tmp_path: Path) -> None:
    study = tmp_path / "both"
    write_timed_cell(study, "gbs32-gpus1", params(32, 1), [4.0, 4.0, 4.0], [0.95, 0.95, 0.95])
    write_timed_cell(study, "gbs32-gpus2", params(16, 2), [4.0, 2.5, 2.5], [0.5, 0.6, 0.7])
    collect_main([str(study), "--scaling", "strong", "--time-budget-s", "100"])
    runs = pd.read_csv(study / "runs.csv").set_index("cell")
    assert runs["assessment"].to_dict() == {"gbs32-gpus1": "pass", "gbs32-gpus2": "fail"}
    assert runs.loc["gbs32-gpus2", "efficiency"] == pytest.approx(4.0 / (2 * 2.5))
    assessment_main([str(study / "runs.csv"), str(study / "epochs.csv"), "--out", str(tmp_path / "figures")])
    assert (tmp_path / "figures" / "assessment.png").stat().st_size > 1000
    figures_main([str(study / "runs.csv"), str(study / "epochs.csv"), "--out", str(tmp_path / "figures")])
    svg = (tmp_path / "figures" / "scaling_efficiency.svg").read_text()
    assert "Strong-scaling efficiency" in svg and "Global batch size" in svg


def test_an_lr_axis_keeps_each_epochs_scheduled_lr_beside_it(tmp_path: Path) -> None:
    study = tmp_path / "lr_axis"
    for lr in (0.1, 0.2):
        name = f"bs32-gpus2-lr{lr}"
        cell_params = params(32, 2, lr=lr)
        records = [meta(cell_params, 2)] + [epoch(n, float(n), 100.0, 0.5, 2) | {"lr": lr * n} for n in (1, 2)]
        write_cell(study, name, records, summary(name, cell_params, "complete", 2, 2.0, 0.5)
                   | {"grid_axes": ["batch_size", "gpus", "lr"]})
    runs, epochs = collect_study(study)
    assert list(epochs.columns).count("lr") == 1
    assert epochs.set_index(["cell", "epoch"])[["lr", "epoch_lr"]].loc["bs32-gpus2-lr0.2"].to_dict("list") == {
        "lr": [0.2, 0.2], "epoch_lr": [0.2, 0.4]}
    assert sorted(runs["lr"]) == [0.1, 0.2]


def test_time_to_target_is_steps_to_target_times_time_per_step(tmp_path: Path) -> None:
    study = tmp_path / "results" / "default"
    two = params(64, 2)
    steps = 12
    accuracies = [0.5, 0.91, 0.93, 0.95]  # patience 2: the target is held from epoch 2, known at epoch 3
    rates = [50.0, 100.0, 120.0, 110.0]
    norms, traces = [5.0, 4.0, 3.0, 0.01], [100.0, 120.0, 150.0, 900.0]
    records: list[dict[str, Any]] = [meta(two, 2, local_size=2, threads_per_worker=1, machine={"cpus": 1},
                                          device="cpu", gradient_bytes=4000)]
    train_time = 0.0
    for number, (accuracy, rate, norm, trace) in enumerate(zip(accuracies, rates, norms, traces), start=1):
        train_time += SAMPLES / rate
        records.append({**epoch(number, train_time, rate, accuracy, 2), "steps": steps,
                        "grad_sq_norm": norm, "grad_trace": trace, "noise_scale": trace / norm})
    write_cell(study, "bs64-gpus2", records, summary("bs64-gpus2", two, "complete", 4, train_time, 0.95))
    row = collect_study(study)[0].set_index("cell").loc["bs64-gpus2"]

    assert row["steps_to_target"] == 3 * steps
    assert row["samples_to_target"] == 3 * SAMPLES
    time_to_target = sum(SAMPLES / rate for rate in rates[:3])
    assert row["time_to_target_s"] == pytest.approx(time_to_target)
    assert row["time_per_step_s"] == pytest.approx(time_to_target / (3 * steps))
    assert row["steps_to_target"] * row["time_per_step_s"] == pytest.approx(row["time_to_target_s"])
    # Steady state: the median over epochs 2-4 (epoch 1 carries the start-up) of each epoch's time per step.
    assert row["step_time_s"] == pytest.approx(float(np.median([SAMPLES / rate / steps for rate in rates[1:]])))
    # B_simple pooled over the epochs up to the one the target is known at: epoch 4's is left out.
    assert row["noise_scale"] == pytest.approx(np.mean(traces[:3]) / np.mean(norms[:3]))
    assert (row["gradient_bytes"], row["workers_per_node"], row["oversubscription"]) == (4000, 2, 2.0)


@pytest.mark.parametrize("step", STEPS, ids=lambda step: step.name)
def test_each_analysis_step_writes_the_figures_it_drew_its_manifest_and_the_answer(study_dir: Path,
                                                                                   step: AnalysisStep) -> None:
    """The workflow's rule and its onerror both run analysis/steps.py: it writes the figures the
    data filled, of those the step proposes, the manifest naming them, and the answer's files."""
    tables = [study_dir / name for name in ("runs.csv", "epochs.csv", "updates.csv")]
    collect_main([str(study_dir), "--runs", str(tables[0]), "--epochs", str(tables[1]), "--updates", str(tables[2])])
    before = {path for path in study_dir.rglob("*") if path.is_file()}

    steps_main([str(study_dir), "--steps", step.name])

    written = {path.relative_to(study_dir).as_posix() for path in study_dir.rglob("*") if path.is_file()} \
        - {path.relative_to(study_dir).as_posix() for path in before}
    manifest = json.loads((study_dir / "figures" / MANIFEST).read_text())
    assert [figure["name"] for figure in manifest["figures"]] == list(step.figures)
    drawn = [figure["name"] for figure in manifest["figures"] if figure["drawn"]]
    assert written == {f"figures/{name}.{ext}" for name in drawn for ext in ("png", "svg")} | \
        {f"figures/{MANIFEST}"} | set(STUDY_FILES)
    answer = (study_dir / "answer.md").read_text()
    for figure in manifest["figures"]:
        assert figure["drawn"] or f"- {figure['name']}: {figure['why']}" in answer


def test_a_study_whose_axis_is_the_optimizer_compares_the_optimizers_in_one_panel(tmp_path: Path) -> None:
    """Each optimizer ran one configuration (batch 32, 2 workers): a panel per optimizer would hold
    one bar or one curve. The figures put the optimizers side by side in one panel instead."""
    from analysis.figures import figure_style, finish_figure, study_figures

    study = tmp_path / "optimizers"
    accuracies = {"sgd": [0.5, 0.9, 0.92], "lars": [0.4, 0.6, 0.7], "lamb": [0.6, 0.91, 0.93]}
    for optimizer, curve in accuracies.items():
        name = f"bs32-gpus2-opt_{optimizer}"
        cell_params = params(32, 2, optimizer=optimizer, patience=1)
        records = [meta(cell_params, 2)] + [epoch(e, float(e), 200.0, accuracy, 2) for e, accuracy in enumerate(curve, 1)]
        write_cell(study, name, records, summary(name, cell_params, "complete", 3, 3.0, max(curve))
                   | {"grid_axes": ["batch_size", "gpus", "optimizer"]})
    runs, epochs = collect_study(study)
    with figure_style():
        figures = study_figures(runs, epochs)
        drawn = {name: figure for name, figure in figures.items() if finish_figure(figure)[0] is None}
    # The reference, from the accuracies: the target held for 1 epoch is reached by sgd and lamb at epoch 2.
    assert sorted(runs.dropna(subset=["time_to_target_s"])["optimizer"]) == ["lamb", "sgd"]
    for name in ("time_to_accuracy", "throughput_vs_batch", "accuracy_vs_time"):
        assert len(drawn[name].axes) == 1, name
    (tta,) = drawn["time_to_accuracy"].axes
    assert [label.get_text() for label in tta.get_xticklabels()] == list(runs["optimizer"])
    assert tta.get_xlabel() == "optimizer"
    assert len(drawn["accuracy_vs_time"].axes[0].get_lines()) >= 3  # a curve per optimizer, and the target
    (legend,) = drawn["accuracy_vs_time"].legends
    assert legend.get_title().get_text() == "optimizer"
    assert sorted(text.get_text() for text in legend.get_texts()) == sorted(accuracies)
    assert "throughput" not in drawn and "scaling_efficiency" not in drawn  # one worker count


def test_what_a_cell_used_is_weighted_by_epoch_time_or_its_largest(tmp_path: Path) -> None:
    """runs.csv's usage columns from epochs.csv's: CPU efficiency and GPU utilisation weighted by
    each epoch's wall time, memory as the largest of any epoch."""
    study = tmp_path / "results" / "default"
    cell_params = params(64, 1)
    usage = [(0.5, 1.0, 0.2, 3.0), (1.0, 2.0, 0.8, 5.0), (0.75, 1.5, None, None)]
    records = [meta(cell_params, 1, time_limit_s=600.0, memory_per_task_gb=8.0)]
    for number, (cpu, rss, gpu, gpu_memory) in enumerate(usage, start=1):
        records.append({**epoch(number, 10.0 * number, 100.0 * number, 0.5, 1), "cpu_efficiency": cpu,
                        "max_rss_gb": rss, "gpu_utilization": gpu, "gpu_memory_gb": gpu_memory})
    write_cell(study, "bs64-gpus1", records,
               {**summary("bs64-gpus1", cell_params, "complete", 3, 30.0, 0.5), "longest_attempt_s": 450.0})

    row = collect_study(study)[0].set_index("cell").loc["bs64-gpus1"]

    seconds = [SAMPLES / (100.0 * n) + VALIDATION_S + IO_S for n in (1, 2, 3)]
    assert row["cpu_efficiency"] == pytest.approx(sum(u[0] * t for u, t in zip(usage, seconds)) / sum(seconds))
    assert row["gpu_utilization"] == pytest.approx((0.2 * seconds[0] + 0.8 * seconds[1]) / (seconds[0] + seconds[1]))
    assert row["max_rss_gb"] == 2.0 and row["gpu_memory_gb"] == 5.0
    assert row["memory_used_fraction"] == 2.0 / 8.0 and row["time_limit_used_fraction"] == 450.0 / 600.0


def test_each_cell_gets_its_partitions_hardware_as_the_profile_resolves_it():
    """collect only looks a cell's partition up in what LauncherSettings.hardware resolved (sent
    as JSON, as the workflow does): a named partition its own GPUs per node and price, no name
    the profile's partition, a name the profile does not list (no launcher.partitions) the
    profile's GPUs per node unpriced, and outside Slurm no GPUs per node at all."""

    from jobs.plan.params import LauncherSettings

    priced = LauncherSettings(executor="slurm", gpus_per_node=8, slurm={"partition": "a100"},
                              partitions={"a100": {"price_per_gpu_hour": 4}, "v100": {"gpus_per_node": 4,
                                                                                   "price_per_gpu_hour": 1.5}})
    analysis = StudyAnalysis(hardware=json.loads(json.dumps(priced.hardware())))
    columns = analysis.partition_columns([None, "v100", "a100", ""])
    assert columns.to_dict("records") == [
        {"partition": "a100", "gpus_per_node": 8, "price_per_gpu_hour": 4.0},
        {"partition": "v100", "gpus_per_node": 4, "price_per_gpu_hour": 1.5},
        {"partition": "a100", "gpus_per_node": 8, "price_per_gpu_hour": 4.0},
        {"partition": "a100", "gpus_per_node": 8, "price_per_gpu_hour": 4.0}]
    unlisted = LauncherSettings(executor="slurm", gpus_per_node=2)
    columns = StudyAnalysis(hardware=unlisted.hardware()).partition_columns(["gpu", None])
    assert columns["partition"].iloc[0] == "gpu" and pd.isna(columns["partition"].iloc[1])
    assert columns["gpus_per_node"].tolist() == [2, 2] and columns["price_per_gpu_hour"].isna().all()
    local = LauncherSettings(executor="local", gpus_per_node=2)
    assert StudyAnalysis(hardware=local.hardware()).partition_columns([None])["gpus_per_node"].isna().all()
