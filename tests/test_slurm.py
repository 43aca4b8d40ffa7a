"""The workflow against the real Slurm cluster of tests/cluster/up (two slurmd on this
host, 2 fake GPUs each, slurmdbd so sacct answers): `snakemake --profile slurm`."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import os
import re
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import submitit
import torch
from conftest import (
    REPO,
    assert_private,
    default_config,
    run_snakemake,
    slurm,
    slurm_profile,
    snakemake_command,
    tiny_study,
    write_config,
)

from jobs.cell import CellDir, JobRecord
from jobs.launch.launcher import CellLaunch, vet_request
from jobs.launch.scheduler import SharedSlurmView
from jobs.launch.slurm import job_ids_of
from jobs.launch.submission import KILL_AT_ENV
from jobs.plan.params import LauncherSettings, TrainParams
from jobs.train.job import TrainingJob

pytestmark = pytest.mark.slurm


def unique(prefix: str) -> str:
    """Study names unique to this test run, so sacct's history of earlier runs stays apart."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def jobs_by_cell(study: str, results: Path, submitit_root: Path | None = None) -> dict[str, list[str]]:
    """Every Slurm job submitted for a cell of `study`, by cell. The tasks of a job array all
    bear the study's name, so each job's cell comes from submitit's pickle of what it runs;
    and every job Slurm has under that name must have such a pickle, or it was not counted."""
    out = slurm("sacct", "-X", "-n", "-P", "-a", "-S", "now-1days", "-o", "JobID,JobName%100")
    in_slurm = {job_id for line in out.splitlines() if line.partition("|")[2].split(".")[0] == study
                for job_id in job_ids_of(line.partition("|")[0])}
    jobs: dict[str, list[str]] = {}
    folder = submitit_root / study if submitit_root else results / study / "submitit"
    for pickle in folder.glob("*_submitted.pkl"):
        delayed = submitit.core.utils.pickle_load(pickle)
        jobs.setdefault(delayed.function.cell, []).append(pickle.name.removesuffix("_submitted.pkl"))
    assert in_slurm == {job_id for ids in jobs.values() for job_id in ids}, (in_slurm, jobs)
    return jobs


def task_logs(cell_dir: Path, pattern: str) -> list[Path]:
    """The cell's job's files in its submitit folder (the study's, shared by its job arrays)."""
    record = job_record(cell_dir)
    return sorted(Path(record["folder"]).glob(pattern.format(job_id=record["job_id"])))


def job_record(cell_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((cell_dir / "job.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def epochs_done(cell_dir: Path) -> int:
    try:
        lines = (cell_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if '"type": "epoch"' in line)


def wait_until(condition, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_snakemake(workdir: Path, profile: Path, env: dict[str, str], umask: int = -1) -> subprocess.Popen[str]:
    log = open(workdir / "snakemake.out", "w")  # noqa: SIM115  (the child writes to it)
    return subprocess.Popen(snakemake_command(workdir, profile), cwd=workdir, env=env, stdout=log,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, umask=umask)


PRICES = {"debug": {"gpus_per_node": 2, "price_per_gpu_hour": 3.0},
          "second": {"gpus_per_node": 1, "price_per_gpu_hour": 1.0}}


def test_default_study_on_slurm_gives_the_local_outputs(slurm_cluster, tmp_path):
    default, wide, priced = unique("default"), unique("wide"), unique("priced")
    config = default_config()
    # The default study's settings on the 2 x 2 corner of its grid: the test cluster has 4 task slots.
    config["studies"]["default"]["grid"] = {"batch_size": [16, 64], "gpus": [1, 2]}
    config["studies"] = {default: config["studies"]["default"],
                         wide: {"grid": {"batch_size": [32], "gpus": [4]},
                                "fixed": {"epochs": 2, "train_subset": 400}},
                         priced: {"grid": {"batch_size": [64], "gpus": [1, 2], "partition": ["debug", "second"]},
                                  "fixed": config["studies"]["default"]["fixed"]}}
    write_config(tmp_path / "slurm", config)
    write_config(tmp_path / "local", {**config, "studies": {default: config["studies"][default]}})

    profile = slurm_profile(tmp_path / "profile", partitions=PRICES)
    on_slurm = run_snakemake(tmp_path / "slurm", profile=profile, env=slurm_cluster)
    local = run_snakemake(tmp_path / "local")

    assert on_slurm.returncode == 0, on_slurm.stderr[-4000:]
    assert local.returncode == 0, local.stderr[-4000:]
    outputs = {}
    for where in ("slurm", "local"):
        study_dir = tmp_path / where / "results" / default
        outputs[where] = sorted(str(p.relative_to(study_dir)) for p in study_dir.rglob("*")
                                if p.is_file() and "submitit" not in p.parts and "logs" not in p.parts)
    accounted = {path for path in outputs["slurm"] if path.endswith("/accounting.json")}  # Slurm's account: Slurm only
    assert accounted == {f"cells/{cell}/accounting.json" for cell in ("bs16-gpus1", "bs16-gpus2", "bs64-gpus1",
                                                                       "bs64-gpus2")}
    assert sorted(set(outputs["slurm"]) - accounted) == outputs["local"]
    runs = pd.read_csv(tmp_path / "slurm" / "results" / default / "runs.csv")
    assert (runs["status"] == "complete").all() and len(runs) == 4
    assert (runs["world_size"] == runs["gpus"]).all()
    assert list(runs.columns) == list(pd.read_csv(tmp_path / "local" / "results" / default / "runs.csv").columns)

    results = tmp_path / "slurm" / "results"
    jobs = {(default, cell): ids for cell, ids in jobs_by_cell(default, results).items()} | \
        {(wide, cell): ids for cell, ids in jobs_by_cell(wide, results).items()}
    expected = {(default, cell) for cell in ("bs16-gpus1", "bs16-gpus2", "bs64-gpus1", "bs64-gpus2")}
    assert set(jobs) == expected | {(wide, "bs32-gpus4")}
    assert all(len(ids) == 1 for ids in jobs.values()), jobs

    status = subprocess.run([str(REPO / ".venv" / "bin" / "scaling-status")], cwd=tmp_path / "slurm",
                            env=slurm_cluster, capture_output=True, text=True, check=True).stdout.splitlines()
    header = status[0].split()
    assert header == ["study", "cell", "job", "state", "elapsed", "epoch", "val_acc", "cpu_eff", "max_rss_gb",
                      "gpu_util", "gpu_mem_gb"]
    rows = {(line.split()[0], line.split()[1]): dict(zip(header, line.split(), strict=True)) for line in status[1:]}
    wide_row = rows[(wide, "bs32-gpus4")]
    assert wide_row["job"] == jobs[(wide, "bs32-gpus4")][0]
    assert wide_row["state"] == "complete" and wide_row["epoch"] == "2/2"
    assert float(wide_row["cpu_eff"]) > 0 and float(wide_row["max_rss_gb"]) > 0 and wide_row["gpu_util"] == "-"

    wide_cell = tmp_path / "slurm" / "results" / wide / "cells" / "bs32-gpus4"
    meta = json.loads((wide_cell / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["world_size"] == 4 and meta["nodes"] == 2
    assert meta["hosts"] == ["node1", "node1", "node2", "node2"] and meta["controller"] == "gloo"
    job_id = job_record(wide_cell)["job_id"]
    assert slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "NNodes,NTasks,NodeList").split()[0].startswith("2|")
    assert [p.name for p in task_logs(wide_cell, "{job_id}_*_log.out")] == [
        f"{job_id}_{task}_log.out" for task in range(4)]
    assert_each_cell_ran_in_its_partition_and_the_answer_says_which_to_buy(results / priced)


def assert_each_cell_ran_in_its_partition_and_the_answer_says_which_to_buy(study_dir: Path) -> None:
    """Each cell in its partition, placed by that partition's GPUs per node; the cheapest in money is the
    cell whose GPU-hours x price, computed here from runs.csv, is least."""
    runs = pd.read_csv(study_dir / "runs.csv")
    assert (runs["status"] == "complete").all() and len(runs) == 4
    for row in runs.itertuples():
        job_id = job_record(study_dir / "cells" / row.cell)["job_id"]
        partition, nodes = slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "Partition,NNodes").split()[0].split("|")
        expected_nodes = -(-row.gpus // PRICES[row.partition]["gpus_per_node"])
        assert (partition, int(nodes), row.nodes) == (row.partition, expected_nodes, expected_nodes), row.cell
        assert row.price_per_gpu_hour == PRICES[row.partition]["price_per_gpu_hour"]
        assert row.gpus_per_node == PRICES[row.partition]["gpus_per_node"]
    cost = runs["world_size"] * runs["time_to_target_s"] / 3600 * runs["price_per_gpu_hour"]
    fastest, cheapest = runs.loc[runs["time_to_target_s"].idxmin()], runs.loc[cost.idxmin()]
    answer = json.loads((study_dir / "answer.json").read_text())
    assert (answer["fastest"]["cell"], answer["fastest"]["group"]) == (fastest["cell"], {"partition": fastest["partition"]})
    assert (answer["cheapest"]["cell"], answer["cheapest"]["cost"]) == (cheapest["cell"], pytest.approx(cost.min()))
    line = next(line for line in (study_dir / "answer.md").read_text().splitlines() if "**Cheapest:**" in line)
    assert f"partition {cheapest['partition']}" in line and "cost " in line and "measured" in line


def test_failed_and_cancelled_cells_are_reported_and_rerun_alone(slurm_cluster, tmp_path):
    ok, crash, cancel = unique("ok"), unique("crash"), unique("cancel")
    config = default_config()
    config["studies"] = {
        ok: tiny_study(epochs=2),
        crash: {"grid": {"batch_size": [32], "gpus": [2]}, "fixed": {"epochs": 3, "fail_at_epoch": 2,
                                                                       "train_subset": 200}},
        # Epochs of 200 samples take milliseconds: only an epoch count no machine gets through
        # keeps this cell running until it is cancelled.
        cancel: {"grid": {"batch_size": [32], "gpus": [1]}, "fixed": {"epochs": 1_000_000, "train_subset": 200}},
    }
    write_config(tmp_path, config)
    # Logs kept apart from the results, as on a site whose results go to a slower filesystem.
    logs = tmp_path / "slurm-logs"
    profile = slurm_profile(tmp_path / "profile", submitit_root=str(logs))
    run = start_snakemake(tmp_path, profile, slurm_cluster)
    cancel_dir = tmp_path / "results" / cancel / "cells" / "bs32-gpus1"
    wait_until(lambda: epochs_done(cancel_dir) >= 2, 240, "the long cell to be training")
    cancelled_id = job_record(cancel_dir)["job_id"]
    slurm("scancel", cancelled_id)
    assert run.wait(timeout=600) != 0
    output = (tmp_path / "snakemake.out").read_text()

    crash_dir = tmp_path / "results" / crash / "cells" / "bs32-gpus2"
    match = re.search(r"cell bs32-gpus2 failed: RuntimeError: fail_at_epoch = 2: rank 1 fails on purpose "
                      r"\(testing switch\); Slurm job [\d_]+ ended FAILED \(log: (\S+)\)", output)
    assert match, output[-4000:]
    assert Path(match.group(1)).parent == logs / crash  # the study's job arrays share it
    assert "fails on purpose" in Path(match.group(1)).read_text()
    match = re.search(rf"cell bs32-gpus1 failed: Slurm job {cancelled_id} ended CANCELLED.* \(log: (\S+)\)", output)
    assert match, output[-4000:]
    assert Path(match.group(1)).parent == logs / cancel
    assert not (crash_dir / "summary.json").exists() and not (cancel_dir / "summary.json").exists()
    assert (pd.read_csv(tmp_path / "results" / ok / "runs.csv")["status"] == "complete").all()

    # The user mends the config; the next invocation resubmits the two failed cells only.
    config["studies"][crash]["fixed"]["fail_at_epoch"] = None
    config["studies"][cancel]["fixed"]["epochs"] = 3
    write_config(tmp_path, config)
    rerun = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    submitted = sorted(re.findall(r"^(\S+): submitting", rerun.stderr, flags=re.M))
    assert submitted == ["bs32-gpus1", "bs32-gpus2"], rerun.stderr[-6000:]
    jobs = {(study, cell): len(ids) for study in (ok, crash, cancel)
            for cell, ids in jobs_by_cell(study, tmp_path / "results", logs).items()}
    assert jobs == {(ok, "bs32-gpus1"): 1, (ok, "bs32-gpus2"): 1, (ok, "bs64-gpus1"): 1, (ok, "bs64-gpus2"): 1,
                    (crash, "bs32-gpus2"): 2, (cancel, "bs32-gpus1"): 2}


def test_lost_login_session_reattaches_instead_of_resubmitting(slurm_cluster, tmp_path):
    study = unique("detach")
    config = default_config()
    # Six 1-worker cells on the cluster's 4 CPUs: two wait in the queue. The short ones
    # finish while the login session is gone; the long ones (1200 epochs, 60-90 s here,
    # against some 25 s from the kill to the rerun's reattach) still run when it comes back.
    config["studies"] = {study: {"grid": {"batch_size": [16, 32, 64], "gpus": [1], "epochs": [2, 1200]},
                                 "fixed": {"train_subset": 600}}}
    write_config(tmp_path, config)
    refresh_s = 10
    profile = slurm_profile(tmp_path / "profile", scheduler_refresh_s=refresh_s)
    cells = tmp_path / "results" / study / "cells"
    run = start_snakemake(tmp_path, profile, slurm_cluster)
    wait_until(lambda: cells.exists() and sum(job_record(c) is not None for c in cells.iterdir()) == 6,
               120, "all six cells to be submitted")
    job_ids = ",".join(job_record(c)["job_id"] for c in cells.iterdir())
    wait_until(lambda: {"PENDING", "RUNNING"} <= set(slurm("squeue", "-h", "-o", "%T", "-j", job_ids).split()),
               60, "cells both queued and running")
    os.killpg(run.pid, signal.SIGKILL)  # the login node drops Snakemake and every launcher at once
    run.wait()
    short_cells = sorted(c.name for c in cells.iterdir() if c.name.endswith("-ep2"))
    long_cells = sorted(c.name for c in cells.iterdir() if c.name.endswith("-ep1200"))
    wait_until(lambda: all((cells / c / "result.json").exists() for c in short_cells), 240,
               "the short cells to finish while nobody watches")

    env, calls_log = counting_scheduler_calls(tmp_path, slurm_cluster)
    rerun = run_snakemake(tmp_path, profile=profile, env=env)

    assert rerun.returncode == 0, rerun.stderr[-4000:]
    # The reattached cells learn their jobs' states from the shared view's sacct, not one call each:
    # the rerun's sacct calls keep the view's cadence.
    sacct = call_times(calls_log, "sacct")
    assert sacct and all(later - earlier >= refresh_s - 0.5 for earlier, later in itertools.pairwise(sacct)), sacct
    progress = "\n".join(re.findall(r"^bs\S+: (?:submitting|reattached|collected).*$", rerun.stderr, flags=re.M))
    assert "submitting" not in rerun.stderr, progress
    assert sorted(re.findall(r"^(\S+): reattached to Slurm job", rerun.stderr, flags=re.M)) == long_cells, progress
    assert sorted(re.findall(r"^(\S+): collected the result of job", rerun.stderr, flags=re.M)) == short_cells, progress
    jobs = jobs_by_cell(study, tmp_path / "results")
    assert len(jobs) == 6 and all(len(ids) == 1 for ids in jobs.values()), jobs
    runs = pd.read_csv(tmp_path / "results" / study / "runs.csv")
    assert (runs["status"] == "complete").all() and len(runs) == 6
    # Slurm's account of what each used, the cells collected on return included.
    assert (runs["usage_source"] == "sacct").all(), runs[["cell", "usage_source"]]


# Where the testing switch kills the Snakemake group, in the order submission passes them
# (jobs/launch/submission.py); "@2": in the second job array of the burst.
KILL_POINTS = ("request_written", "intent_recorded", "pickles_dumped", "sbatch_returned", "array_recorded",
               "pickles_moved", "job_json_written:1", "job_json_written:2", "answers_written")
BURST_KILL_POINT = "pickles_moved@2"


def test_a_kill_at_any_point_of_submission_then_a_rerun_gives_one_task_per_cell(slurm_cluster, tmp_path):
    """Every kill point in its own workflow, all at once: each first run kills its own group
    at its point, then each is run again. The short cells share the cluster's 4 slots."""
    fixed = {**tiny_study()["fixed"], "epochs": 1, "train_subset": 200}
    scenarios = {point: {"grid": {"batch_size": [16, 32, 64], "gpus": [1]}, "fixed": fixed}
                 for point in KILL_POINTS}
    # Two shapes, two arrays: the kill comes in the second, the first one complete.
    scenarios[BURST_KILL_POINT] = {"grid": {"batch_size": [16, 32], "gpus": [1, 2]}, "fixed": fixed}
    workdirs, studies = {}, {}
    for number, (point, study) in enumerate(scenarios.items()):
        workdirs[point], studies[point] = tmp_path / f"kill{number}", unique("kill")
        write_config(workdirs[point], {**default_config(), "studies": {studies[point]: study}})

    def profile(point: str) -> Path:
        return slurm_profile(workdirs[point] / "profile", scheduler_refresh_s=3)

    first_runs = {point: start_snakemake(workdirs[point], profile(point), {**slurm_cluster, KILL_AT_ENV: point})
                  for point in scenarios}
    for point, run in first_runs.items():
        assert run.wait(timeout=300) == -signal.SIGKILL, (point, (workdirs[point] / "snakemake.out").read_text()[-3000:])
    # The reruns as on group project space: what they leave to be unpickled is private all the same.
    reruns = {point: start_snakemake(workdirs[point], profile(point), slurm_cluster, umask=0o002)
              for point in scenarios}
    for point, run in reruns.items():
        output = (workdirs[point] / "snakemake.out")
        assert run.wait(timeout=600) == 0, (point, output.read_text()[-4000:])

    for point, study in studies.items():
        results = workdirs[point] / "results"
        cells = sorted(path.name for path in (results / study / "cells").iterdir())
        jobs = jobs_by_cell(study, results)
        assert sorted(jobs) == cells and all(len(ids) == 1 for ids in jobs.values()), (point, jobs)
        for cell in cells:
            cell_dir = results / study / "cells" / cell
            metas, _ = epoch_log(cell_dir)
            assert {meta["job_id"] for meta in metas} == set(jobs[cell]), (point, cell, metas)
            assert json.loads((cell_dir / "summary.json").read_text())["job_id"] == jobs[cell][0]
        assert (pd.read_csv(results / study / "runs.csv")["status"] == "complete").all(), point
        assert_private(results)


def counting_scheduler_calls(directory: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """An environment whose sbatch, sacct and squeue log "<unix time> <command>" to the returned file."""
    calls_log, wrappers = directory / "scheduler_calls.log", directory / "bin"
    wrappers.mkdir()
    for command in ("sbatch", "sacct", "squeue"):
        real = subprocess.run(["which", command], capture_output=True, text=True, check=True, env=env).stdout.strip()
        wrapper = wrappers / command
        wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) {command}" >> {calls_log}\nexec {real} "$@"\n')
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return {**env, "PATH": f"{wrappers}:{env['PATH']}"}, calls_log


def call_times(calls_log: Path, command: str) -> list[float]:
    lines = calls_log.read_text().splitlines() if calls_log.exists() else []
    return [float(line.split()[0]) for line in lines if line.split()[1] == command]


def test_scheduler_calls_per_minute_do_not_grow_with_cells(slurm_cluster, tmp_path):
    study = unique("load")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [8, 16, 32, 64], "gpus": [1, 2], "seed": [0, 1]},
                                 "fixed": {"epochs": 2, "train_subset": 200}}}
    write_config(tmp_path, config)
    refresh_s = 5
    profile = slurm_profile(tmp_path / "profile", scheduler_refresh_s=refresh_s)
    env, calls_log = counting_scheduler_calls(tmp_path, slurm_cluster)

    started = time.time()
    result = run_snakemake(tmp_path, profile=profile, env=env)
    minutes = (time.time() - started) / 60

    assert result.returncode == 0, result.stderr[-4000:]
    assert len(pd.read_csv(tmp_path / "results" / study / "runs.csv")) == 16
    calls = calls_log.read_text().splitlines() if calls_log.exists() else []
    sbatch = [call for call in calls if call.endswith(" sbatch")]
    per_minute = len(calls) / minutes
    print(f"\n16 cells, {minutes:.1f} min, {len(calls)} sbatch/sacct/squeue calls ({len(sbatch)} sbatch) = "
          f"{per_minute:.1f} per minute (a shared sbatch and sacct every {refresh_s} s at most; an sbatch per cell and a poll per "
          f"cell every {refresh_s} s would be up to {16 * 60 / refresh_s:.0f} per minute)")
    # The cells go in job arrays, several to an sbatch; at most one sbatch and one sacct per
    # period, plus one for a call racing the period's end.
    assert 0 < len(sbatch) < 16, calls  # some sbatch, and fewer than one per cell
    assert per_minute <= 2 * 60 / refresh_s + 2, calls


def epoch_log(cell_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records = [json.loads(line) for line in (cell_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "meta"], [r for r in records if r["type"] == "epoch"]


def assert_resumed_without_repeating(cell_dir: Path, epochs: int) -> dict[str, Any]:
    summary = json.loads((cell_dir / "summary.json").read_text())
    metas, records = epoch_log(cell_dir)
    assert summary["status"] == "complete" and summary["epochs_run"] == epochs
    assert summary["restarts"] >= 1
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))  # no finished epoch ran twice
    assert len(metas) >= 2 and (metas[-1]["resumed_from_epoch"], metas[-1]["resumed_from_step"]) > (0, 0)
    # Training time counts the steps of the epochs only: queue time and restarts are recorded apart.
    assert summary["train_time_s"] == pytest.approx(sum(r["steps_s"] for r in records), rel=1e-6)
    assert summary["wall_time_training_s"] == pytest.approx(sum(r["epoch_time_s"] for r in records), rel=1e-6)
    assert summary["wall_time_s"] > summary["wall_time_training_s"] + summary["queue_time_s"]
    return summary


def test_requeued_cells_resume_exactly_from_their_last_checkpoint(slurm_cluster, tmp_path):
    study, reference = unique("requeue"), unique("requeue_ref")
    config = default_config()
    # SGD with momentum and Adam: their momentum and moments must survive the requeue.
    cell_study = {"grid": {"batch_size": [32], "gpus": [2], "optimizer": ["sgd", "adam"]},
                  "fixed": {"epochs": 400, "train_subset": 600, "lr": 0.01}}
    config["studies"] = {study: cell_study, reference: cell_study}
    write_config(tmp_path, config)
    run = start_snakemake(tmp_path, slurm_profile(tmp_path / "profile"), slurm_cluster)
    cells = ["bs32-gpus2-opt_sgd", "bs32-gpus2-opt_adam"]
    requeued: set[str] = set()

    def requeue_each_after_a_few_epochs() -> bool:
        # What preemption does: SIGTERM, and Slurm's SIGKILL KillWait (5 s) later. The job stops
        # at the next step boundary the ranks agree on, inside the epoch or at its end.
        for cell in cells:
            cell_dir = tmp_path / "results" / study / "cells" / cell
            if cell not in requeued and epochs_done(cell_dir) >= 5:
                slurm("scontrol", "requeue", job_record(cell_dir)["job_id"])
                requeued.add(cell)
        return len(requeued) == len(cells)

    # The four cells share 4 GPUs two by two: the requeued ones may start second.
    wait_until(requeue_each_after_a_few_epochs, 480, "a few epochs of each cell before its requeue")

    assert run.wait(timeout=900) == 0, (tmp_path / "snakemake.out").read_text()[-4000:]
    for cell in cells:
        cell_dir = tmp_path / "results" / study / "cells" / cell
        reference_dir = tmp_path / "results" / reference / "cells" / cell
        assert_resumed_without_repeating(cell_dir, epochs=400)
        assert len(jobs_by_cell(study, tmp_path / "results")[cell]) == 1  # requeued, not resubmitted
        # The requeue's SIGTERM stopped it at a step boundary, after a checkpoint there.
        errors = "".join(p.read_text() for p in task_logs(cell_dir, "{job_id}_0_log.err"))
        assert "stopped on SIGTERM at a step boundary" in errors, errors[-2000:]
        # The same cell, never interrupted, ends with the same weights and optimizer state.
        assert epoch_log(reference_dir)[0][-1]["resumed_from_epoch"] == 0
        resumed = torch.load(cell_dir / "checkpoint.pt", weights_only=True)
        uninterrupted = torch.load(reference_dir / "checkpoint.pt", weights_only=True)
        for name, tensor in uninterrupted["model"].items():  # bit for bit
            assert torch.equal(resumed["model"][name], tensor), f"{cell} {name}"
        assert uninterrupted["optimizer"]["state"]
        for index, state in uninterrupted["optimizer"]["state"].items():
            for key, value in state.items():  # momentum_buffer; exp_avg, exp_avg_sq and step
                assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][index][key]),
                                   torch.as_tensor(value)), f"{cell} {key}"


# The CNN's width for one epoch of digits (180 steps of 8) of about 35 s on one core of this machine.
LONG_EPOCH_WIDTH = 48


def test_an_epoch_longer_than_the_time_limit_finishes_through_mid_epoch_requeues(slurm_cluster, tmp_path):
    """One epoch of about 50 s of steps under a one-minute limit, whose warning (USR2) comes 30 s
    before it: the cell can only finish by stopping inside the epoch, requeueing and resuming
    there. It ends with the weights and optimizer state of the same cell run on this machine
    without interruption, bit for bit."""
    study = unique("timelimit")
    cell_study = {"grid": {"batch_size": [8], "gpus": [1]},
                  "fixed": {"epochs": 1, "width": LONG_EPOCH_WIDTH, "optimizer": "adam", "lr": 0.001}}
    config = default_config()
    config["studies"] = {study: cell_study}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile", time_limit="1", max_requeues=10,
                            slurm={"partition": "debug", "signal_delay_s": 30})

    result = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)

    assert result.returncode == 0, result.stderr[-4000:]
    cell_dir = tmp_path / "results" / study / "cells" / "bs8-gpus1"
    summary = assert_resumed_without_repeating(cell_dir, epochs=1)
    assert summary["wall_time_s"] > 60  # longer than one attempt may run
    metas, (epoch,) = epoch_log(cell_dir)
    assert [m["resumed_from_epoch"] for m in metas] == [0] * len(metas)
    assert all(later["resumed_from_step"] > earlier["resumed_from_step"] for earlier, later in itertools.pairwise(metas))
    errors = "".join(p.read_text() for p in task_logs(cell_dir, "{job_id}_0_log.err"))
    assert "stopped on SIGUSR2 at a step boundary" in errors
    runs = pd.read_csv(tmp_path / "results" / study / "runs.csv")
    assert metas[0]["time_limit_s"] == 60
    assert 0.3 < runs["time_limit_used_fraction"].iloc[0] <= 1.0  # an attempt ran until the warning: 30 s of 60

    # The uninterrupted reference: the same cell on this machine.
    reference = tmp_path / "reference"
    config["studies"] = {"reference": cell_study}
    write_config(reference, config)
    assert run_snakemake(reference).returncode == 0
    uninterrupted = torch.load(reference / "results" / "reference" / "cells" / "bs8-gpus1" / "checkpoint.pt",
                               weights_only=True)
    resumed = torch.load(cell_dir / "checkpoint.pt", weights_only=True)
    _, (straight,) = epoch_log(reference / "results" / "reference" / "cells" / "bs8-gpus1")
    assert epoch["samples"] == straight["samples"]
    assert epoch["train_loss"] == pytest.approx(straight["train_loss"], rel=1e-6)
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    for index, state in uninterrupted["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][index][key]), torch.as_tensor(value)), key


def test_node_failure_is_never_recorded_as_complete(slurm_cluster, tmp_path):
    study = unique("nodefail")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [32], "gpus": [4]},
                                 "fixed": {"epochs": 300, "train_subset": 600}}}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile")
    run = start_snakemake(tmp_path, profile, slurm_cluster)
    cell_dir = tmp_path / "results" / study / "cells" / "bs32-gpus4"
    wait_until(lambda: epochs_done(cell_dir) >= 3, 240, "the 2-node cell to be training")
    try:
        crash = subprocess.run([str(REPO / "tests" / "cluster" / "kill-node"), "node2"], env=slurm_cluster,
                               capture_output=True, text=True, timeout=60)
        assert "node2 crashed: killed" in crash.stdout + crash.stderr, crash
        # The cell must not complete while a node it ran on is dead.
        wait_until(lambda: run.poll() is not None or "DOWN" in slurm("sinfo", "-h", "-n", "node2", "-o", "%T").upper()
                   or "NOT_RESPONDING" in slurm("sinfo", "-h", "-n", "node2", "-o", "%T").upper(),
                   180, "Slurm to notice node2 is gone")
        assert not (cell_dir / "summary.json").exists()
    finally:
        subprocess.run([str(REPO / "tests" / "cluster" / "up")], check=True, capture_output=True, timeout=300)
    finished = run.wait(timeout=900)
    output = (tmp_path / "snakemake.out").read_text()
    if finished != 0:  # failed: reported with a reason, and a rerun completes it
        assert re.search(r"cell bs32-gpus4 failed: .+ \(log: \S+\)", output), output[-4000:]
        assert not (cell_dir / "summary.json").exists()
        rerun = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)
        assert rerun.returncode == 0, rerun.stderr[-4000:]
    summary = json.loads((cell_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["world_size"] == 4
    if finished == 0:  # requeued by Slurm: it resumed, it did not pretend nothing happened
        assert summary["restarts"] >= 1



def test_an_accounting_outage_is_waited_out_and_a_job_ending_meanwhile_is_seen(slurm_cluster, tmp_path):
    """slurmdbd goes away while two cells train (its crash or restart, an overloaded database):
    sacct fails. The launchers say so and follow their jobs through squeue: the one
    cancelled during the outage is reported failed at once, the other completes."""
    study = unique("dbdown")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [32, 64], "gpus": [1]},
                                 "fixed": {"epochs": 1200, "train_subset": 600}}}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile")
    cells = tmp_path / "results" / study / "cells"
    kept, cancelled = cells / "bs32-gpus1", cells / "bs64-gpus1"
    output = tmp_path / "snakemake.out"
    run = start_snakemake(tmp_path, profile, slurm_cluster)
    try:
        wait_until(lambda: epochs_done(kept) >= 2 and epochs_done(cancelled) >= 2, 180, "both cells to train")
        stopped = subprocess.run([str(REPO / "tests" / "cluster" / "stop-accounting")], capture_output=True,
                                 text=True, timeout=60)
        assert "slurmdbd stopped" in stopped.stdout, stopped
        assert subprocess.run(["sacct", "-n", "-X"], env=slurm_cluster, capture_output=True).returncode != 0
        wait_until(lambda: output.read_text().count(": sacct does not answer (sacct exited") == 2, 60,
                   "both launchers to say sacct does not answer")
        slurm("scancel", job_record(cancelled)["job_id"])
        wait_until(lambda: "cell bs64-gpus1 failed:" in output.read_text(), 60,
                   "the cancelled cell to be reported while sacct is still down")
        assert run.poll() is None and not (kept / "summary.json").exists()
    finally:
        subprocess.run([str(REPO / "tests" / "cluster" / "up")], check=True, capture_output=True, timeout=300)
    finished = run.wait(timeout=600)
    text = output.read_text()
    assert finished != 0, text[-3000:]
    assert re.search(r"cell bs64-gpus1 failed: .*CANCELLED", text), text[-3000:]
    assert "bs32-gpus1: sacct answers again" in text, text[-3000:]
    summary = json.loads((kept / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_run"] == 1200
    assert not (cancelled / "summary.json").exists()


def test_sbatch_rejection_shows_slurms_own_message(slurm_cluster, tmp_path):
    study = unique("rejected")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [32], "gpus": [1]}, "fixed": {"epochs": 1}}}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile", slurm={"partition": "no_such_partition"})

    result = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)

    assert result.returncode != 0
    message = "cell bs32-gpus1: sbatch refused the job: sbatch: error: invalid partition specified: no_such_partition"
    assert message in result.stderr and "Batch job submission failed" in result.stderr
    assert message in result.stderr, result.stderr[-3000:]
    assert message in (tmp_path / "results" / study / "logs" / "train" / "bs32-gpus1.log").read_text()
    assert jobs_by_cell(study, tmp_path / "results") == {}


def test_mpi_controller_runs_a_two_node_cell_under_srun_pmix(slurm_cluster, tmp_path):
    """Horovod's MPI controller, ranks started by `srun --mpi=pmix` across both nodes.
    setup.sh builds Horovod with MPI wherever Open MPI is (it installs it on Debian);
    without MPI the cell must fail saying why."""
    from horovod.common.util import mpi_built

    study = unique("mpi")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [32], "gpus": [4]},
                                 "fixed": {"epochs": 2, "train_subset": 400}}}
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, profile=slurm_profile(tmp_path / "profile", controller="mpi"), env=slurm_cluster)

    cell_dir = tmp_path / "results" / study / "cells" / "bs32-gpus4"
    submission = next((tmp_path / "results" / study / "submitit").glob("*_submission.sh")).read_text()
    assert "--mpi=pmix" in submission
    if not mpi_built():
        assert result.returncode != 0
        assert "launcher.controller = 'mpi', but this Horovod was built without MPI" in result.stderr
        return
    assert result.returncode == 0, result.stderr[-3000:]
    meta = json.loads((cell_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["controller"] == "mpi"
    assert meta["world_size"] == 4 and meta["nodes"] == 2 and meta["local_size"] == 2
    assert meta["hosts"] == ["node1", "node1", "node2", "node2"]
    summary = json.loads((cell_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_run"] == 2
    assert not (cell_dir / "rendezvous.json").exists()  # MPI needs no Gloo rendezvous


def test_ddp_runs_a_four_rank_cell_across_both_nodes_as_horovod_does(slurm_cluster, tmp_path):
    """PyTorch DDP from the same submitit placement as Horovod: 4 ranks on 2 nodes, Gloo,
    rank 0's TCPStore address published in the cell directory; the same losses as Horovod's cell."""
    study = unique("ddp")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [32], "gpus": [4], "backend": ["horovod", "ddp"]},
                                 "fixed": {"epochs": 2, "train_subset": 400, "momentum": 0.0}}}
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, profile=slurm_profile(tmp_path / "profile"), env=slurm_cluster)
    assert result.returncode == 0, result.stderr[-3000:]

    cells = tmp_path / "results" / study / "cells"
    losses = {}
    for backend in ("horovod", "ddp"):
        cell_dir = cells / f"bs32-gpus4-backend_{backend}"
        log = CellDir(cell_dir).read_metrics()
        meta = log.metas[-1]
        assert meta["world_size"] == 4 and meta["nodes"] == 2 and meta["local_size"] == 2
        assert meta["hosts"] == ["node1", "node1", "node2", "node2"]
        assert meta["communication"]["backend"] == backend and meta["controller"] == "gloo"
        assert json.loads((cell_dir / "summary.json").read_text())["status"] == "complete"
        losses[backend] = [epoch["train_loss"] for epoch in log.epochs]
    assert len(losses["ddp"]) == 2
    np.testing.assert_allclose(losses["ddp"], losses["horovod"], rtol=1e-4)
    job_id = job_record(cells / "bs32-gpus4-backend_ddp")["job_id"]
    assert slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "NNodes").split()[0] == "2"
    assert len(task_logs(cells / "bs32-gpus4-backend_ddp", "{job_id}_*_log.out")) == 4


def test_the_users_own_model_and_data_train_as_a_two_rank_cell_across_both_nodes(slurm_cluster, tmp_path):
    """The user's package, found on the nodes through the config's python_path, in a cell of 2
    ranks on 2 nodes; its 1-rank cell at the same global batch is the reference."""
    from test_user_code import study as user_study
    from test_user_code import write_user_package

    package, name = write_user_package(tmp_path / "code"), unique("mine")
    config = default_config()
    config["python_path"] = ["code"]
    mine = user_study(package, lr_scaling="none")
    mine["scaling"], mine["grid"]["batch_size"] = "strong", [32]
    config["studies"] = {name: mine}
    write_config(tmp_path, config)
    result = run_snakemake(tmp_path, profile=slurm_profile(tmp_path / "profile", gpus_per_node=1), env=slurm_cluster)
    assert result.returncode == 0, result.stderr[-3000:]

    cells = tmp_path / "results" / name / "cells"
    logs = {cell: CellDir(cells / cell).read_metrics() for cell in ("gbs32-gpus1", "gbs32-gpus2")}
    meta = logs["gbs32-gpus2"].metas[-1]
    assert meta["world_size"] == 2 and meta["nodes"] == 2 and meta["hosts"] == ["node1", "node2"]
    assert meta["params"]["model"] == f"{package}.models:mlp"
    losses = {cell: [epoch["train_loss"] for epoch in log.epochs] for cell, log in logs.items()}
    assert len(losses["gbs32-gpus1"]) == 2
    np.testing.assert_allclose(losses["gbs32-gpus2"], losses["gbs32-gpus1"], rtol=1e-4)


def test_killing_snakemake_alone_leaves_no_launcher_in_the_way_of_the_next_run(slurm_cluster, tmp_path):
    """Only the Snakemake process dies (a process reaper, the OOM killer); its launchers live
    on. They let go of their cells, so the next run reattaches to every running job: no cell
    fails as 'being run by another Snakemake', none is submitted twice."""
    study = unique("orphans")
    config = default_config()
    config["studies"] = {study: {"grid": {"batch_size": [16, 32], "gpus": [1]},
                                 "fixed": {"train_subset": 600, "epochs": 1200}}}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile")
    cells = tmp_path / "results" / study / "cells"
    run = start_snakemake(tmp_path, profile, slurm_cluster)
    wait_until(lambda: cells.exists() and len(list(cells.iterdir())) == 2
               and all(epochs_done(c) >= 1 for c in cells.iterdir()), 120, "both cells to run")
    launchers = [p for p in psutil.Process(run.pid).children() if "train_cell" in " ".join(p.cmdline())]
    assert len(launchers) == 2
    os.kill(run.pid, signal.SIGKILL)  # Snakemake alone: its launchers survive it
    run.wait()
    psutil.wait_procs(launchers, timeout=30)  # each lets go of its cell within a poll
    assert not any(p.is_running() for p in launchers)

    rerun = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)

    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "being run by another Snakemake" not in rerun.stderr
    assert sorted(re.findall(r"^(\S+): reattached to Slurm job", rerun.stderr, flags=re.M)) == \
        ["bs16-gpus1", "bs32-gpus1"], rerun.stderr[-3000:]
    jobs = jobs_by_cell(study, tmp_path / "results")
    assert len(jobs) == 2 and all(len(ids) == 1 for ids in jobs.values()), jobs
    runs = pd.read_csv(tmp_path / "results" / study / "runs.csv")
    assert (runs["status"] == "complete").all() and len(runs) == 2


def test_a_fresh_state_comes_from_a_refresh_after_the_question(slurm_cluster, tmp_path, monkeypatch):
    """What a reattaching cell asks the shared view: even from a new scheduler folder, with the
    cached answer missing, a running job is told as running, and once cancelled as ended."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    job_id = slurm("sbatch", "--parsable", "--job-name", unique("fresh"), "--output", str(tmp_path / "sleep.out"),
                   "--wrap", "sleep 300").strip()
    try:
        view = SharedSlurmView(tmp_path / "scheduler", refresh_s=2)
        running = view.fresh_state(job_id, outage_s=60, poll_s=0.2)
        assert running is not None and running.active, running
    finally:
        slurm("scancel", job_id)
    wait_until(lambda: "CANCELLED" in slurm("sacct", "-n", "-X", "-o", "State", "-j", job_id), 60, "the cancel")
    ended = SharedSlurmView(tmp_path / "scheduler", refresh_s=2).fresh_state(job_id, outage_s=60, poll_s=0.2)
    assert ended is not None and not ended.active and ended.state.startswith("CANCELLED"), ended


def test_a_task_started_while_another_live_task_owns_the_cell_exits_untouched(slurm_cluster, tmp_path, monkeypatch):
    """Defence in depth: a duplicate training task (one job.json does not name) finds the
    live owner named there, says so in one line and leaves the directory as it was."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    owner = slurm("sbatch", "--parsable", "--job-name", unique("owner"), "--output", str(tmp_path / "owner.out"),
                  "--wrap", "sleep 300").strip()
    cell_dir = tmp_path / "results" / "study" / "cells" / "bs32-gpus1"
    try:
        CellDir(cell_dir).path.mkdir(parents=True)
        CellDir(cell_dir).write_job(JobRecord(job_id=owner, executor="slurm", submitted_at=time.time()))
        before = {path.name: path.read_bytes() for path in cell_dir.iterdir()}
        executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
        executor.update_parameters(name=unique("duplicate"), timeout_min=5, nodes=1, tasks_per_node=1,
                                   cpus_per_task=1, slurm_partition="debug")
        duplicate = executor.submit(TrainingJob(cell_dir=str(cell_dir), study="study", cell="bs32-gpus1",
                                                grid_axes=("batch_size",), params=TrainParams().to_dict(),
                                                data_dir=str(tmp_path / "data")))
        assert duplicate.result() is None
        assert {path.name: path.read_bytes() for path in cell_dir.iterdir()} == before
        said = [line for line in duplicate.stderr().splitlines() if "owns" in line]
        assert said == [f"bs32-gpus1: Slurm task {owner} owns {cell_dir} and is live; task {duplicate.job_id} "
                        "exits without touching it"], duplicate.stderr()
    finally:
        slurm("scancel", owner)


def test_a_forged_request_adding_a_setup_line_is_refused_and_never_runs(slurm_cluster, tmp_path, monkeypatch):
    """A request planted in the scheduler directory whose executor parameters add a `setup`
    line (it would go verbatim into the sbatch script): refused in one line, never submitted."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    launcher = LauncherSettings(executor="slurm", slurm={"partition": "debug"})
    results, data = tmp_path / "results", tmp_path / "data"
    vet = functools.partial(vet_request, launcher=launcher, data_dir=data, results_dir=results)
    view = SharedSlurmView(results / ".scheduler", refresh_s=1, vet=vet)
    marker, name = tmp_path / "ran", unique("forged")
    honest = CellLaunch(results / "study" / "cells" / "bs32-gpus1", "study", "bs32-gpus1", ("batch_size",),
                        TrainParams(), launcher, data).request()
    forged = dataclasses.replace(honest, parameters={**honest.parameters, "name": name,
                                                     "slurm_setup": [f"touch {marker}"]})
    view.queue.request(forged)  # its pid is this test's: alive, so not dropped as abandoned

    assert view.queue.submit_oldest_shape() == 0

    answer = view.queue.answer(forged)
    assert answer is not None and answer.job_id is None
    assert answer.error.startswith("request ") and "not submitted: its parameters differ" in answer.error
    assert view.queue.pending() == [] and view.queue.intents() == []
    time.sleep(3)  # what a submitted job would need to start and run its setup line
    assert not marker.exists()
    assert name not in slurm("squeue", "-h", "-t", "all", "-o", "%j") + \
        slurm("sacct", "-X", "-n", "-P", "-S", "now-1hours", "-o", "JobName%100")


HUNGRY_MODEL = '''
import os
import time

from torch import nn

HELD = []


def hungry(memory_mb=400, burn_s=40.0):
    """Inside a Slurm job: holds memory_mb MiB (every page written) and burns burn_s of CPU, then a small MLP."""
    if "SLURM_JOB_ID" in os.environ:
        HELD.append(bytearray(b"\\x01") * (memory_mb * 2**20))
        start = time.process_time()
        while time.process_time() - start < burn_s:
            pass
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
'''


def test_slurms_account_of_a_cell_that_holds_known_memory_and_burns_known_cpu(slurm_cluster, tmp_path):
    """accounting.json and runs.csv from one sacct with the step records, after the cell: CPU time at least
    the burn, MaxRSS at least the block (the cell outlives the cluster's 30 s JobAcctGatherFrequency)."""
    from test_user_code import write_user_package

    memory_mb, burn_s, mem_gb = 400, 40.0, 2
    package, name = write_user_package(tmp_path / "code"), unique("usage")
    (tmp_path / "code" / package / "hungry.py").write_text(HUNGRY_MODEL)
    config = default_config()
    config["python_path"] = ["code"]
    config["studies"] = {name: {"grid": {"batch_size": [16], "gpus": [1]}, "fixed": {
        "model": f"{package}.hungry:hungry", "model_args": {"memory_mb": memory_mb, "burn_s": burn_s},
        "dataset": f"{package}.data:blobs", "epochs": 1, "target_accuracy": 0.5}}}
    write_config(tmp_path, config)
    profile = slurm_profile(tmp_path / "profile", slurm={"partition": "debug", "mem_gb": mem_gb})
    started = time.monotonic()
    result = run_snakemake(tmp_path, profile=profile, env=slurm_cluster)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]

    cell_dir = tmp_path / "results" / name / "cells" / "bs16-gpus1"
    usage = json.loads((cell_dir / "accounting.json").read_text())
    assert usage["job_id"] == job_record(cell_dir)["job_id"] and usage["state"] == "COMPLETED"
    assert burn_s * 0.95 <= usage["total_cpu_s"] <= usage["elapsed_s"] * usage["alloc_cpus"] * 1.05
    assert burn_s <= usage["elapsed_s"] <= took
    assert usage["max_rss_bytes"] >= memory_mb * 2**20
    runs = pd.read_csv(tmp_path / "results" / name / "runs.csv").iloc[0]
    assert runs["usage_source"] == "sacct"
    assert runs["cpu_efficiency"] >= burn_s * 0.95 / (usage["elapsed_s"] * usage["alloc_cpus"])
    assert runs["memory_used_fraction"] >= memory_mb / 1024 / mem_gb
    assert runs["time_limit_used_fraction"] == pytest.approx(usage["elapsed_s"] / 3600)
