"""The whole workflow on this machine: real Snakemake, submitit's local executor and
Horovod across real worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import torch
from conftest import (
    REPO,
    assert_figures_full,
    assert_private,
    default_config,
    run_snakemake,
    snakemake_command,
    tiny_study,
    write_config,
)

from analysis import ANSWER_FIGURE_NAMES
from analysis import FIGURE_NAMES as FIGURES
from jobs.train.job import CHECKPOINT_DELAY_ENV

pytestmark = pytest.mark.workflow
REPO_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "default"


def study_config() -> dict:
    config = default_config()
    config["studies"] = {
        "tiny": tiny_study(),
        # Learns within 3 epochs: 6 cells at 5 global batches reach the target, for the answer; 3 worker
        # counts, so that the fit without the 4 workers still has 2 to learn communication from.
        "answer": {"grid": {"batch_size": [16, 64], "gpus": [1, 2, 4]},
                   "fixed": {**tiny_study()["fixed"], "lr": 0.1, "target_accuracy": 0.4}},
        # Lab 1's linear regression with far too large a learning rate: the loss overflows.
        "diverge": {"grid": {"batch_size": [16], "gpus": [1]},
                    "fixed": {"dataset": "linear", "model": "linear", "lr": 0.5, "epochs": 4}},
        "broken": {"grid": {"batch_size": [32], "gpus": [2], "backend": ["horovod", "ddp"]},
                   "fixed": {"epochs": 3, "fail_at_epoch": 2, "train_subset": 200}},
    }
    return config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study")
    write_config(workdir, study_config())
    result = run_snakemake(workdir, umask=0o002)  # as on group project space
    return workdir, result


def test_what_the_tool_loads_as_code_is_private_under_umask_002(first_run):
    workdir, _ = first_run
    assert_private(workdir / "results")
    runs = workdir / "results" / "tiny" / "runs.csv"
    assert runs.stat().st_mode & 0o044 == 0o044  # tables stay as readable as the umask makes them


def test_tiny_grid_produces_table_and_figures(first_run):
    workdir, result = first_run
    runs = pd.read_csv(workdir / "results/tiny/runs.csv")
    assert sorted(runs["cell"]) == ["bs32-gpus1", "bs32-gpus2", "bs64-gpus1", "bs64-gpus2"], result.stderr[-3000:]
    assert (runs["status"] == "complete").all()
    assert (runs["world_size"] == runs["gpus"]).all()
    assert (runs["global_batch"] == runs["batch_size"] * runs["gpus"]).all()
    assert (runs["throughput"] > 0).all()
    assert runs["best_val_accuracy"].between(0, 1).all()
    assert (runs["epochs_run"] == 3).all()
    two_workers = runs[runs["gpus"] == 2]
    assert two_workers["efficiency"].notna().all() and (two_workers["efficiency"] > 0).all()
    # What each cell used: busy single-threaded workers on this CPU, a torch process's memory, no GPU.
    assert runs["cpu_efficiency"].between(0.2, 1.5).all(), runs["cpu_efficiency"]
    assert runs["max_rss_gb"].between(0.1, 24).all() and runs["gpu_utilization"].isna().all()
    # Two worker counts: every figure of the study is full and drawn, but time to target where no cell reached it.
    expected = tiny_figures(runs)
    assert expected <= set(assert_figures_full(workdir / "results/tiny"))
    for name in expected:
        for ext in ("png", "svg"):
            figure = workdir / f"results/tiny/figures/{name}.{ext}"
            assert figure.stat().st_size > 1000, figure


def tiny_figures(runs: pd.DataFrame) -> set[str]:
    return set(FIGURES) - ({"time_to_accuracy"} if runs["time_to_target_s"].isna().all() else set())


def test_html_report_holds_every_figure(first_run):
    workdir, _ = first_run
    result = run_snakemake(workdir, "--report", "report.html")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    # The report holds the figures drawn, and only those, each with the study's own caption.
    manifest = json.loads((workdir / "results/tiny/figures/figures.json").read_text())
    drawn = {figure["name"] for figure in manifest["figures"] if figure["drawn"]}
    assert tiny_figures(pd.read_csv(workdir / "results/tiny/runs.csv")) <= drawn
    assert "holdout" not in drawn  # tiny runs 2 worker counts: no held-out check
    for name in drawn:
        assert f'"results/tiny/figures/{name}.png"' in html, name
    assert "answer.html" in html
    assert '"results/tiny/figures/holdout.png"' not in html
    assert '"results/answer/figures/holdout.png"' in html  # 3 worker counts: the check is drawn there
    assert "This study varies batch_size (32, 64); gpus (1, 2).</p>" in html
    assert "Where to look, per study" in html  # the landing page, workflow/report/workflow.rst


def test_the_run_ends_with_the_answer_fastest_and_cheapest_over_measured_and_predicted(first_run):
    workdir, result = first_run
    study = workdir / "results/answer"
    answer = (study / "answer.md").read_text()
    assert "## answer: what to run to reach validation accuracy 0.4" in answer
    assert answer in result.stdout + result.stderr  # printed at the end of the run
    for name in ANSWER_FIGURE_NAMES:
        assert (study / f"figures/{name}.png").stat().st_size > 1000, name
    assert set(ANSWER_FIGURE_NAMES) <= set(assert_figures_full(study))  # like the default study: every figure full
    # The reference, from the tables: every measured cell that reached the target, and every
    # predicted configuration the study did not run.
    runs = pd.read_csv(study / "runs.csv")
    reached = runs.dropna(subset=["time_to_target_s"])
    measured = pd.DataFrame({"workers": reached["world_size"], "batch": reached["batch_size"],
                             "time": reached["time_to_target_s"],
                             "gpu_hours": reached["world_size"] * reached["time_to_target_s"] / 3600,
                             "source": "measured"})
    predicted = pd.read_csv(study / "predictions.csv")
    run_pairs = set(zip(runs["world_size"], runs["batch_size"].astype(float)))
    unmeasured = predicted[[(n, b) not in run_pairs for n, b in zip(predicted["workers"],
                                                                      predicted["per_worker_batch"])]]
    assert len(unmeasured) > 0 and unmeasured["time_to_target_s"].notna().all()
    options = pd.concat([measured, pd.DataFrame({
        "workers": unmeasured["workers"], "batch": unmeasured["per_worker_batch"],
        "time": unmeasured["time_to_target_s"], "gpu_hours": unmeasured["gpu_hours"], "source": "predicted"})])
    chosen = json.loads((study / "answer.json").read_text())
    for key, column in (("fastest", "time"), ("cheapest", "gpu_hours")):
        best = options.sort_values([column, "workers"]).iloc[0]
        assert (chosen[key]["workers"], chosen[key]["per_worker_batch"]) == (best["workers"], best["batch"]), key
        assert chosen[key]["time_to_target_s"] == pytest.approx(best["time"])
        assert chosen[key]["source"] == best["source"]
    # A prediction is predicted steps to target x predicted time per step.
    np.testing.assert_allclose(predicted["time_to_target_s"],
                               predicted["steps_to_target"] * predicted["time_per_step_s"], rtol=1e-9)


def test_the_held_out_error_is_the_prediction_against_the_measured_step_time(first_run):
    workdir, _ = first_run
    study = workdir / "results/answer"
    held = pd.read_csv(study / "holdout.csv")
    runs = pd.read_csv(study / "runs.csv").set_index("cell")
    assert sorted(held["workers"].unique()) == [4]  # the largest worker count, fitted without it
    assert len(held) == 2
    for row in held.itertuples():
        measured = runs.loc[row.cell, "step_time_s"]
        assert row.time_per_step_s == pytest.approx(measured)
        assert row.relative_error == pytest.approx(row.predicted_s / measured - 1)
    assert "Held out 4 workers" in (study / "answer.md").read_text()


def test_scaling_predict_on_a_studys_runs_table_gives_the_answers_own_predictions(first_run, tmp_path):
    """The console script and the answer share their code: on the answer study's runs.csv as it is,
    its prediction for a configuration with no oversubscription is the answer's."""
    workdir, _ = first_run
    study = workdir / "results/answer"
    predicted = pd.read_csv(study / "predictions.csv")
    row = predicted[predicted["oversubscription"] == 1.0].iloc[-1]
    out = tmp_path / "predicted.csv"
    subprocess.run([str(REPO / ".venv" / "bin" / "scaling-predict"), str(study / "runs.csv"), "--workers",
                    str(int(row["workers"])), "--per-worker-batch", str(row["per_worker_batch"]), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    mine = pd.read_csv(out).iloc[0]
    assert mine["time_per_step_s"] == pytest.approx(row["time_per_step_s"], rel=1e-9)
    assert mine["steps_to_target"] == pytest.approx(row["steps_to_target"], rel=1e-9)


def test_each_rank_ran_as_its_own_horovod_process(first_run):
    workdir, _ = first_run
    cell_dir = workdir / "results/tiny/cells/bs64-gpus2"
    meta = json.loads((cell_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["type"] == "meta" and meta["world_size"] == 2 and len(meta["hosts"]) == 2
    job_id = json.loads((cell_dir / "job.json").read_text())["job_id"]
    task_logs = sorted(p.name for p in (cell_dir / "submitit").glob(f"{job_id}_*_log.out"))
    assert task_logs == [f"{job_id}_0_log.out", f"{job_id}_1_log.out"]
    epochs = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()[1:]]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(e["world_size"] == 2 and e["samples_per_s"] > 0 for e in epochs)
    # What it was measured on: this machine's CPUs and load, no GPU.
    assert meta["machine"]["cpus"] == len(os.sched_getaffinity(0)) and meta["machine"]["gpu"] is None
    assert len(meta["machine"]["load_average"]) == 3
    assert all(e["load_average_1m"] >= 0 for e in epochs)


def test_diverged_run_is_a_recorded_result(first_run):
    workdir, _ = first_run
    runs = pd.read_csv(workdir / "results/diverge/runs.csv")
    assert list(runs["status"]) == ["diverged"]
    summary = json.loads((workdir / "results/diverge/cells/bs16-gpus1/summary.json").read_text())
    assert summary["stop_reason"] == "diverged" and summary["epochs_run"] < 4
    # Plotted where the data fill a figure: its throughput, hatched as diverged; a regression has no accuracy.
    manifest = json.loads((workdir / "results/diverge/figures/figures.json").read_text())
    why = {figure["name"]: figure["why"] for figure in manifest["figures"]}
    assert why["throughput_vs_batch"] == "" and why["accuracy_vs_time"] == "no validation accuracy (a regression study)"
    assert (workdir / "results/diverge/figures/throughput_vs_batch.png").exists()


@pytest.mark.parametrize("backend", ["horovod", "ddp"])
def test_failed_cell_names_its_reason_and_log_and_leaves_no_summary(first_run, backend):
    workdir, result = first_run
    assert result.returncode != 0
    cell = f"bs32-gpus2-backend_{backend}"
    cell_dir = workdir / "results/broken/cells" / cell
    assert not (cell_dir / "summary.json").exists()
    # The rank that raised is named, not the other rank that lost it in the next collective.
    match = re.search(rf"cell {cell} failed: RuntimeError: fail_at_epoch = 2: rank 1 fails on purpose "
                      r"\(testing switch\) \(log: (\S+)\)", result.stderr)
    assert match, result.stderr[-3000:]
    assert Path(match.group(1)).exists() and "fails on purpose" in Path(match.group(1)).read_text()
    # What did finish is still tabled and plotted, the failed cell marked as such.
    runs = pd.read_csv(workdir / "results/broken/runs.csv")
    assert list(runs["status"]) == ["failed", "failed"]
    # Nothing finished: no figure of empty panels; the answer says so, figure by figure.
    manifest = json.loads((workdir / "results/broken/figures/figures.json").read_text())
    assert {figure["why"] for figure in manifest["figures"] if figure["name"] in FIGURES} == {"no finished cells to plot"}
    assert not list((workdir / "results/broken/figures").glob("*.png"))
    assert "- throughput: no finished cells to plot" in (workdir / "results/broken/answer.md").read_text()


def test_rerun_executes_exactly_the_cell_without_summary(first_run):
    workdir, _ = first_run
    config = study_config()
    del config["studies"]["broken"]
    write_config(workdir, config)
    cells = workdir / "results/tiny/cells"
    job_ids = {c.name: json.loads((c / "job.json").read_text())["job_id"] for c in cells.iterdir()}
    (cells / "bs32-gpus2" / "summary.json").unlink()

    result = run_snakemake(workdir)

    assert result.returncode == 0, result.stderr[-3000:]
    ran = re.findall(r"rule train_cell:\n(?:\s+\w+: .*\n)*?\s+wildcards: study=(\w+), cell=(\S+)", result.stderr)
    assert ran == [("tiny", "bs32-gpus2")]
    new_ids = {c.name: json.loads((c / "job.json").read_text())["job_id"] for c in cells.iterdir()}
    assert {c for c in job_ids if new_ids[c] != job_ids[c]} == {"bs32-gpus2"}
    assert (cells / "bs32-gpus2" / "summary.json").exists()
    assert len(pd.read_csv(workdir / "results/tiny/runs.csv")) == 4


class Planted:
    """A checkpoint's payload whose unpickling creates the marker file: code run by loading."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_resume_from_a_crafted_checkpoint_runs_none_of_it_and_starts_afresh(first_run):
    workdir, _ = first_run
    config = study_config()
    del config["studies"]["broken"]  # its cells fail on purpose; this test wants a run that ends well
    write_config(workdir, config)
    cell_dir = workdir / "results/tiny/cells/bs64-gpus1"
    for name in ("summary.json", "result.json", "job.json"):  # as a cell killed before it finished
        (cell_dir / name).unlink()
    marker = workdir / "ran"
    torch.save({"version": 2, "model": Planted(marker)}, cell_dir / "checkpoint.pt")
    (cell_dir / "checkpoint.pt").chmod(0o600)

    result = run_snakemake(workdir)

    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    assert (cell_dir / "checkpoint.pt.damaged").exists()
    assert json.loads((cell_dir / "summary.json").read_text())["status"] == "complete"
    job_id = json.loads((cell_dir / "job.json").read_text())["job_id"]
    log = (cell_dir / "submitit" / f"{job_id}_0_log.err").read_text()
    assert f"{cell_dir / 'checkpoint.pt'} cannot be read as weights only" in log, log[-2000:]


def test_bad_config_stops_before_anything_runs(tmp_path):
    config = default_config()
    config["studies"]["default"]["grid"]["batch_size"] = [-5, 64]
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("config error")]
    assert errors == ["config error: studies.default.grid.batch_size[0] = -5 is too small; it must be >= 1"]
    assert not (tmp_path / "results").exists()


def test_fashion_mnist_cell_reads_idx_files_from_the_data_directory(tmp_path):
    """The compute job reads the IDX files; nothing downloads when they are present."""
    from test_data import fake_fashion_mnist

    fake_fashion_mnist(tmp_path / "data" / "fashion_mnist", num_train=256, num_val=64)
    config = default_config()
    config["studies"] = {"fashion": {"grid": {"batch_size": [32], "gpus": [2]},
                                     "fixed": {"dataset": "fashion_mnist", "model": "cnn", "epochs": 2}}}
    write_config(tmp_path, config)

    result = run_snakemake(tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "download_fashion_mnist" not in result.stderr
    meta = json.loads((tmp_path / "results/fashion/cells/bs32-gpus2/metrics.jsonl").read_text().splitlines()[0])
    epochs = [json.loads(line) for line in (tmp_path / "results/fashion/cells/bs32-gpus2/metrics.jsonl")
              .read_text().splitlines()[1:]]
    assert meta["params"]["dataset"] == "fashion_mnist"
    assert [e["samples"] for e in epochs] == [256, 256]


def tree_state(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under root with its modification time and content."""
    return {str(path.relative_to(root)): (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(root.rglob("*")) if path.is_file()}


def test_no_finished_result_is_lost_to_damage_or_changed_settings(tmp_path):
    config = default_config()
    config["studies"] = {"keep": {"grid": {"batch_size": [32], "gpus": [1]},
                                  "fixed": {"epochs": 2, "train_subset": 200}}}
    cells = tmp_path / "results" / "keep" / "cells"
    superseded = tmp_path / "results" / "keep" / "superseded"

    def run(expected_line: str | None) -> str:
        write_config(tmp_path, config)
        result = run_snakemake(tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        if expected_line is not None:
            assert expected_line in result.stderr, result.stderr[-3000:]
        return json.loads((cells / "bs32-gpus1" / "summary.json").read_text())["job_id"]

    first_job = run(None)
    # A damaged log: reported, the cell trained again, the damaged run kept.
    with (cells / "bs32-gpus1" / "metrics.jsonl").open("a") as log:
        log.write('{"type": "epoch", "epo\n')
    # A preview and a summary first: they say the cell runs again, and change nothing on disk.
    before = tree_state(tmp_path / "results")
    preview = run_snakemake(tmp_path, "-n")
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert "keep/bs32-gpus1: damaged (metrics.jsonl line 4" in preview.stderr
    assert re.search(r"rule train_cell:\n(?:\s+\w+: .*\n)*?\s+wildcards: study=keep, cell=bs32-gpus1",
                     preview.stdout + preview.stderr), (preview.stdout + preview.stderr)[-3000:]
    summary = run_snakemake(tmp_path, "--summary")
    assert summary.returncode == 0, summary.stderr[-3000:]
    assert re.search(r"keep/cells/bs32-gpus1/summary\.json\t.*update pending", summary.stdout), summary.stdout
    assert tree_state(tmp_path / "results") == before
    second_job = run("keep/bs32-gpus1: damaged (metrics.jsonl line 4: not valid JSON")
    assert second_job != first_job
    (kept,) = superseded.iterdir()
    assert (kept / "summary.json.damaged").exists() and (kept / "checkpoint.pt").exists()

    # A changed fixed parameter: the earlier, finished run moves aside whole, with a line.
    config["studies"]["keep"]["fixed"]["epochs"] = 3
    run("bs32-gpus1: parameters changed (epochs 2 -> 3); the earlier run is kept in")
    by_job = {json.loads((d / "summary.json").read_text())["job_id"]: d for d in superseded.iterdir()
              if (d / "summary.json").exists()}
    assert set(by_job) == {second_job}
    assert json.loads((by_job[second_job] / "summary.json").read_text())["epochs_run"] == 2
    assert json.loads((cells / "bs32-gpus1" / "summary.json").read_text())["epochs_run"] == 3

    # Threads per worker change what is measured: the cell runs again too.
    config["launcher"] = {"cpus_per_task": 2}
    run("bs32-gpus1: measurement settings changed (threads_per_worker 1 -> 2)")
    assert len(list(superseded.iterdir())) == 3
    meta = json.loads((cells / "bs32-gpus1" / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["threads_per_worker"] == 2
    # The study's tables hold only the current cells.
    assert list(pd.read_csv(tmp_path / "results" / "keep" / "runs.csv")["epochs_run"]) == [3]


def test_precision_memory_format_and_compile_are_grid_axes_that_train(tmp_path):
    config = default_config()
    fixed = {"dataset": "digits", "model": "cnn", "epochs": 3, "train_subset": 320, "channels_last": True}
    config["studies"] = {"numerics": {"grid": {"batch_size": [32], "gpus": [1], "precision": ["fp32", "bf16"],
                                               "compile": [False, True]},
                                      "fixed": fixed}}
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    cells = tmp_path / "results/numerics/cells"

    def losses(cell: str) -> list[float]:
        lines = (cells / cell / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["train_loss"] for line in lines[1:]]

    fp32, bf16 = losses("bs32-gpus1-compiled_no-prec_fp32"), losses("bs32-gpus1-compiled_no-prec_bf16")
    assert fp32[-1] < fp32[0] and bf16[-1] < bf16[0]  # both train
    assert bf16 != fp32  # bf16 really ran in bf16
    # torch.compile changes how the step runs, not what it computes; its warm-up is undone.
    assert losses("bs32-gpus1-compiled_yes-prec_fp32") == pytest.approx(fp32, rel=1e-5)
    assert losses("bs32-gpus1-compiled_yes-prec_bf16") == pytest.approx(bf16, rel=1e-3)
    meta = json.loads((cells / "bs32-gpus1-compiled_yes-prec_fp32" / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["compile_s"] > 0 and meta["params"]["channels_last"] is True
    assert json.loads((cells / "bs32-gpus1-compiled_no-prec_fp32" / "metrics.jsonl").read_text()
                      .splitlines()[0])["compile_s"] is None


def test_snakemake_lint_finds_nothing_but_the_shared_environment(tmp_path):
    """Snakemake's own linter: params instead of globals in shell commands, no absolute paths, and
    so on. Its one remaining advice, an environment per rule, is declined on purpose: setup.sh makes
    one environment, the only one that can hold Horovod's patched build (docs/slurm.md)."""
    write_config(tmp_path, default_config())
    result = run_snakemake(tmp_path, "--lint", timeout=300)
    output = result.stdout + result.stderr
    lints = re.findall(r"^\s+\* (.+?):$", output, re.MULTILINE)
    assert set(lints) <= {"Specify a conda environment or container for each rule."}, output[-4000:]
    assert "Traceback" not in output, output[-4000:]


def test_a_local_cell_whose_snakemake_was_killed_alone_is_finished_and_taken_over(tmp_path):
    """Only the Snakemake process dies; its launcher lives on with the local job it started.
    The next run waits for that launcher instead of failing the cell, takes over its result,
    and runs the cells that had not started: no cell fails, none is submitted twice."""
    config = default_config()
    config["studies"] = {"orphan": {"grid": {"batch_size": [16, 32], "gpus": [1]},
                                    "fixed": {**tiny_study()["fixed"], "epochs": 40}}}
    write_config(tmp_path, config)
    cells = tmp_path / "results" / "orphan" / "cells"
    env = os.environ | {CHECKPOINT_DELAY_ENV: "0.1"}  # 40 epochs of at least 0.1 s: still running at the kill
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(snakemake_command(tmp_path, REPO_PROFILE), cwd=tmp_path, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    started: list[Path] = []
    for _ in range(600):
        started = [c for c in cells.iterdir() if (c / "metrics.jsonl").exists()] if cells.exists() else []
        if started and '"type": "epoch"' in (started[0] / "metrics.jsonl").read_text():
            break
        time.sleep(0.1)
    assert len(started) == 1, "one cell in flight (max_cells_in_flight 1), the other not started"
    job_id = json.loads((started[0] / "job.json").read_text())["job_id"]
    launchers = [p for p in psutil.Process(first.pid).children() if "train_cell" in " ".join(p.cmdline())]
    assert len(launchers) == 1
    os.kill(first.pid, signal.SIGKILL)  # Snakemake alone
    first.wait()

    rerun = run_snakemake(tmp_path, env=env)

    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "being run by another Snakemake" not in rerun.stderr
    assert f"{started[0].name}: waiting for the launcher (pid {launchers[0].pid})" in rerun.stderr
    assert f"{started[0].name}: finished meanwhile (job {job_id})" in rerun.stderr
    assert json.loads((started[0] / "job.json").read_text())["job_id"] == job_id  # not submitted again
    assert len([line for line in (started[0] / "metrics.jsonl").read_text().splitlines() if '"meta"' in line]) == 1
    runs = pd.read_csv(tmp_path / "results" / "orphan" / "runs.csv")
    assert (runs["status"] == "complete").all() and len(runs) == 2 and (runs["epochs_run"] == 40).all()


def test_the_processes_waiting_on_this_machine_are_bounded_by_the_cells_in_flight(tmp_path):
    """Snakemake starts a cell's launcher only when a cell may be in flight, however many
    cores the profile gives it: 6 cells, 2 in flight, never more than 2 launchers alive."""
    config = default_config()
    config["launcher"] = {"max_cells_in_flight": 2}
    config["studies"] = {"many": {"grid": {"batch_size": [8, 16, 24, 32, 48, 64], "gpus": [1]},
                                  "fixed": {**tiny_study()["fixed"], "epochs": 2}}}
    write_config(tmp_path, config)
    with open(tmp_path / "run.log", "w") as log:
        run = subprocess.Popen(snakemake_command(tmp_path, REPO_PROFILE), cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
    most = 0
    while run.poll() is None:
        with contextlib.suppress(psutil.Error):
            launchers = [p for p in psutil.Process(run.pid).children() if "train_cell" in " ".join(p.cmdline())]
            most = max(most, len(launchers))
        time.sleep(0.05)
    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert 0 < most <= 2  # it saw 6 at once when Snakemake was bounded by cores alone
    assert len(pd.read_csv(tmp_path / "results" / "many" / "runs.csv")) == 6


def test_a_second_run_on_the_same_results_leaves_the_first_runs_studies_alone(tmp_path):
    """Two snakemake runs at once on one results directory: the second says at its start that
    another run is active there, leaves its studies alone and exits 0; the first trains every
    cell once and exits 0. Neither reports a failure that did not happen."""
    from jobs.launch.active_runs import RUNS_DIR

    config = default_config()
    config["studies"] = {"shared": {"grid": {"batch_size": [16, 32], "gpus": [1]},
                                    "fixed": {**tiny_study()["fixed"], "epochs": 20}}}
    write_config(tmp_path, config)
    env = os.environ | {CHECKPOINT_DELAY_ENV: "0.1"}  # 20 epochs of at least 0.1 s: the first is still running
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(snakemake_command(tmp_path, REPO_PROFILE), cwd=tmp_path, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    markers = tmp_path / "results" / RUNS_DIR
    for _ in range(600):
        if markers.is_dir() and any(markers.glob("*.json")):
            break
        time.sleep(0.1)
    (marker,) = markers.glob("*.json")
    assert json.loads(marker.read_text())["studies"] == ["shared"]

    second = run_snakemake(tmp_path, env=env)

    assert first.poll() is None, "the first run was to be still running"
    assert second.returncode == 0, second.stderr[-4000:]
    said = second.stdout + second.stderr
    assert f"another snakemake run is active on results (host {marker.stem.rsplit('.', 1)[0]}, " \
           f"pid {first.pid}" in said, said[-3000:]
    assert "this run leaves shared alone" in said and f"rm {Path('results') / RUNS_DIR / marker.name}" in said
    assert "failed" not in said
    assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-4000:]
    assert not list(markers.glob("*.json")), "the first run removed its marker"
    for cell in ("bs16-gpus1", "bs32-gpus1"):
        metas = [line for line in (tmp_path / "results" / "shared" / "cells" / cell / "metrics.jsonl")
                 .read_text().splitlines() if '"type": "meta"' in line]
        assert len(metas) == 1, cell  # trained once, by the first run
