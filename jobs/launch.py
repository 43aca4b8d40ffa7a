"""Where a grid cell is submitted: one submitit job per cell, one task per worker.

The same code serves every executor: `local` runs the tasks as processes on this
machine, `slurm` as one sbatch job with nodes = ceil(gpus / gpus_per_node). The
launcher waits for the job, printing each finished epoch, and succeeds only when the
training job has written the cell's summary.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import submitit

from jobs.params import LauncherSettings, TrainParams
from jobs.train import JOB_FILE, METRICS_FILE, SUMMARY_FILE, TrainingJob, write_json_atomically


class CellFailed(RuntimeError):
    """A cell's job ended without a summary; the message names the reason and the log."""


def make_executor(cell_dir: Path, study: str, cell: str, params: TrainParams,
                  launcher: LauncherSettings) -> submitit.Executor:
    executor = submitit.AutoExecutor(folder=cell_dir / "submitit", cluster=launcher.executor)
    executor.update_parameters(
        name=f"{study}.{cell}",
        timeout_min=launcher.timeout_min,
        nodes=launcher.nodes_for(params.gpus),
        tasks_per_node=launcher.tasks_per_node_for(params.gpus),
        cpus_per_task=launcher.cpus_per_task,
    )
    if launcher.executor == "slurm":
        executor.update_parameters(
            gpus_per_node=launcher.tasks_per_node_for(params.gpus),
            **{f"slurm_{key}": value for key, value in launcher.slurm.items()},
        )
    return executor


def submit_cell(cell_dir: Path, study: str, cell: str, grid_axes: tuple[str, ...], params: TrainParams,
                launcher: LauncherSettings, data_dir: Path) -> submitit.Job:
    cell_dir.mkdir(parents=True, exist_ok=True)
    job = make_executor(cell_dir, study, cell, params, launcher).submit(TrainingJob(
        cell_dir=str(cell_dir.resolve()),
        study=study,
        cell=cell,
        grid_axes=grid_axes,
        params=params.to_dict(),
        data_dir=str(data_dir.resolve()),
        threads_per_worker=launcher.cpus_per_task,
    ))
    write_json_atomically(cell_dir / JOB_FILE, {
        "job_id": job.job_id,
        "executor": launcher.executor,
        "submitted_at": time.time(),
        "stdout": str(job.paths.stdout),
        "stderr": str(job.paths.stderr),
    })
    return job


def epoch_records(path: Path, seen: int) -> tuple[list[dict[str, Any]], int]:
    """Epoch records appended to metrics.jsonl since `seen` lines were read."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return [], seen
    complete = lines if path.read_text().endswith("\n") else lines[:-1]
    records = []
    for line in complete[seen:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("type") == "epoch":
            records.append(record)
    return records, len(complete)


def describe_epoch(cell: str, epochs: int, record: dict[str, Any]) -> str:
    acc = record.get("val_accuracy")
    acc_text = "n/a" if acc is None else f"{acc:.3f}"
    return (f"{cell}: epoch {record['epoch']}/{epochs}, val acc {acc_text}, "
            f"{record['samples_per_s']:.0f} samples/s, {record['train_time_s']:.1f} s training")


def wait_for_cell(job: submitit.Job, cell_dir: Path, cell: str, params: TrainParams,
                  launcher: LauncherSettings, out: TextIO) -> dict[str, Any]:
    seen = 0
    while not job.done():
        records, seen = epoch_records(cell_dir / METRICS_FILE, seen)
        for record in records:
            print(describe_epoch(cell, params.epochs, record), file=out, flush=True)
        time.sleep(launcher.poll_interval_s)
    records, seen = epoch_records(cell_dir / METRICS_FILE, seen)
    for record in records:
        print(describe_epoch(cell, params.epochs, record), file=out, flush=True)
    failure = root_failure(job)
    if failure is not None:
        reason, log_path = failure
        raise CellFailed(f"cell {cell} failed: {reason} (log: {log_path})")
    summary_path = cell_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise CellFailed(f"cell {cell} finished without writing {summary_path} (log: {job.paths.stderr})")
    return json.loads(summary_path.read_text())


def root_failure(job: submitit.Job) -> tuple[str, Path] | None:
    """The error that made the job fail, and the log of the task that raised it.

    When one rank raises, Horovod shuts down and every other rank raises too; the
    interesting error is the one that is not Horovod's shutdown notice."""
    failures = []
    for task_id in range(job.num_tasks):
        task = job.task(task_id)
        try:
            error = task.exception()
        except Exception as unreadable:  # a task killed before writing its result
            error = unreadable
        if error is not None:
            failures.append((first_line(str(error)), task.paths.stderr))
    causes = [f for f in failures if "Horovod has been shut down" not in f[0]]
    return (causes or failures or [None])[0]


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # submitit puts the task's traceback in the message; its last line is the error itself.
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return errors[-1] if errors else (lines[0] if lines else "unknown error")


def run_cell(cell_dir: Path, study: str, cell: str, grid_axes: tuple[str, ...], params: TrainParams,
             launcher: LauncherSettings, data_dir: Path, out: TextIO = sys.stderr) -> dict[str, Any]:
    nodes = launcher.nodes_for(params.gpus)
    print(f"{cell}: submitting {params.gpus} worker(s) on {nodes} node(s) via submitit ({launcher.executor})",
          file=out, flush=True)
    job = submit_cell(cell_dir, study, cell, grid_axes, params, launcher, data_dir)
    print(f"{cell}: job {job.job_id}, logs in {job.paths.folder}", file=out, flush=True)
    summary = wait_for_cell(job, cell_dir, cell, params, launcher, out)
    print(f"{cell}: {summary['status']} after {summary['epochs_run']} epoch(s), "
          f"world size {summary['world_size']}", file=out, flush=True)
    return summary
