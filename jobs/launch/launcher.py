"""Where a grid cell is submitted: one submitit job per cell, one task per worker.

The same code serves every executor: `local` runs the tasks as processes on this
machine, submitted by the cell's own launcher; `slurm` as one task of a job array with
nodes = ceil(gpus / gpus_per_node), the cells queued at the same time going into one
sbatch (jobs/launch/submission.py). The launcher waits for the job, printing each
finished epoch, and publishes the training job's result.json as the cell's summary.json
(the Snakemake output) once it has checked that it belongs to this job and these parameters.

A restarted launcher (after the login session dropped, say) first waits until no
submission cut short by the drop lists its cell (jobs/launch/submission.py settles it:
the cell's job.json then names its array task, or Slurm never had it), then reads the
job id recorded in the cell directory: a Slurm job still pending or running is
reattached to, a job that finished meanwhile is collected, and only otherwise is a new
job submitted.

A launcher whose Snakemake died (killed alone, by a process reaper or the OOM killer)
notices within a poll: waiting for a Slurm job it lets go of the cell at once, the job
running on, for the next Snakemake to reattach; a local job is its own child, so it
waits for it and publishes its result, which the next Snakemake's launcher, waiting
for the cell meanwhile, takes over. No cell fails and none is submitted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import psutil
import submitit
from submitit.core.utils import JobPaths

from jobs.cell import CellDir, EpochRecord, JobRecord
from jobs.launch.scheduler import Health, SharedSlurmView
from jobs.launch.slurm import JobState, SchedulerUnavailable
from jobs.launch.submission import SubmissionAnswer, SubmissionRequest, kill_point
from jobs.plan.config import short
from jobs.plan.params import LauncherSettings, TrainParams, normalized_params, same_params
from jobs.plan.user_code import is_import_path
from jobs.private import (
    NotPrivate,
    check_private,
    never_group_writable,
    not_writable_by_others,
    private_dir,
    restrict_file,
)
from jobs.train.job import TrainingJob

# What the answer to a request names: a task of the job array it went into.
ARRAY_TASK_ID = re.compile(r"^[0-9]+_[0-9]+$")


SIGNAL_DELAY_S = 120  # seconds before a Slurm job's time limit its warning (USR2) comes

def say(out: TextIO, line: str) -> None:
    """Write one progress line in a single call. Every cell's launcher shares the
    terminal, and under PYTHONUNBUFFERED print() writes the text and the newline
    separately, so concurrent cells would glue their lines together."""
    out.write(line + "\n")
    out.flush()


class CellFailed(RuntimeError):
    """A cell's job ended without a result; the message names the reason and the log."""


class SnakemakeGone(CellFailed):
    """The Snakemake that started this launcher has died; the cell's Slurm job runs on."""


class SchedulerSilent(CellFailed):
    """Neither sacct nor squeue has answered for launcher.scheduler_outage_s; the job may run on."""


def job_paths(cell: CellDir, record: JobRecord, task: int = 0) -> JobPaths:
    """submitit's files of one task of the cell's job: its logs and its outcome pickle."""
    folder = Path(record.folder) if record.folder else cell.default_submitit_folder
    return JobPaths(folder, job_id=record.job_id, task_id=task)


@dataclass(frozen=True)
class CellLaunch:
    """One grid cell as its launcher submits it: which cell, its training parameters, and
    the launcher settings and data it runs with. Everything submitted for it derives from here."""

    cell_dir: Path
    study: str
    cell: str
    grid_axes: tuple[str, ...]
    params: TrainParams
    launcher: LauncherSettings
    data_dir: Path
    python_path: tuple[str, ...] = ()  # the config's, for the user's model and data packages
    # The "package.module:function" models and data sets of the plan: the only user code that a
    # queued request may name (vet_request), wherever the request came from.
    user_code: frozenset[str] = frozenset()
    # The profile's settings, before the cell's partition is applied to ``launcher``: what other cells'
    # requests are checked against.
    profile_launcher: LauncherSettings | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        # The cell's partition, with its GPUs per node, is the one place its launcher settings differ.
        profile = self.profile_launcher or self.launcher
        object.__setattr__(self, "profile_launcher", profile)
        object.__setattr__(self, "launcher", profile.for_partition(self.params.partition))

    @property
    def folder(self) -> Path:
        """submitit's folder: the job's scripts, pickles and per-task logs."""
        return self.launcher.submitit_folder(self.cell_dir, self.study, self.cell).resolve()

    @property
    def measured_with(self) -> dict[str, Any]:
        return self.launcher.measured_with(self.params.gpus)

    def executor_parameters(self) -> dict[str, Any]:
        """submitit's parameters of the cell's job. On Slurm every cell of one shape shares one
        job array, so the job's name is the study's (the submitter adds the submission id); the
        cell is in job.json and the array's pickles."""
        launcher, gpus = self.launcher, self.params.gpus
        parameters: dict[str, Any] = {
            "name": self.study if launcher.executor == "slurm" else f"{self.study}.{self.cell}",
            "timeout_min": launcher.timeout_min,
            "nodes": launcher.nodes_for(gpus),
            "tasks_per_node": launcher.tasks_per_node_for(gpus),
            "cpus_per_task": launcher.cpus_per_task,
        }
        if launcher.executor == "slurm":
            parameters["gpus_per_node"] = launcher.tasks_per_node_for(gpus)
            # Slurm's warning before the time limit, on which the job checkpoints mid-epoch and requeues
            # (jobs/train/interrupt.py): 2 minutes, or half of a shorter limit.
            parameters["slurm_signal_delay_s"] = min(SIGNAL_DELAY_S, launcher.timeout_min * 30)
            parameters.update({f"slurm_{key}": value for key, value in launcher.slurm.items()})
            if launcher.controller == "mpi":
                parameters["slurm_srun_args"] = ["--mpi=pmix"]
        return parameters

    def executor(self, folder: Path) -> submitit.Executor:
        executor = submitit.AutoExecutor(folder=folder, cluster=self.launcher.executor,
                                         slurm_max_num_timeout=self.launcher.max_requeues)
        executor.update_parameters(**self.executor_parameters())
        return executor

    def training_job(self) -> TrainingJob:
        return TrainingJob(
            cell_dir=str(self.cell_dir.resolve()),
            study=self.study,
            cell=self.cell,
            grid_axes=self.grid_axes,
            params=self.params.to_dict(),
            data_dir=str(self.data_dir.resolve()),
            python_path=self.python_path,
            threads_per_worker=self.launcher.cpus_per_task,
            controller=self.launcher.controller,
            share_with_group=self.launcher.share_results_with_group,
            checkpoint_every_s=self.launcher.checkpoint_every_s,
            time_limit_s=self.launcher.timeout_min * 60.0,
            memory_per_task_gb=self.launcher.memory_per_task_gb(self.params.gpus),
        )

    def request(self) -> SubmissionRequest:
        """What the cell's launcher queues for the next job array."""
        return SubmissionRequest(
            cell_dir=str(self.cell_dir.resolve()),
            folder=str(self.folder),
            parameters=self.executor_parameters(), max_requeues=self.launcher.max_requeues,
            training={**dataclasses.asdict(self.training_job()), "grid_axes": list(self.grid_axes)},
            measured_with=self.measured_with)


def submit_local_cell(task: CellLaunch) -> tuple[JobRecord, submitit.Job]:
    """The local executor runs the job as this launcher's children: submitted at once, alone."""
    task.cell_dir.mkdir(parents=True, exist_ok=True)
    shared = task.launcher.share_results_with_group
    folder = private_dir(task.folder, shared)
    job = task.executor(folder).submit(task.training_job())
    restrict_file(job.paths.submitted_pickle, shared)  # submitit made it under the umask
    record = JobRecord(job_id=str(job.job_id), executor=task.launcher.executor, submitted_at=time.time(),
                       folder=str(folder), measured_with=task.measured_with)
    CellDir(task.cell_dir).write_job(record)
    return record, job


# The fields of a request that say who made it and when, not what is submitted.
REQUEST_BOOKKEEPING = ("nonce", "requested_at", "host", "pid")


def vet_request(request: SubmissionRequest, launcher: LauncherSettings, data_dir: Path,
                results_dir: Path, python_path: tuple[str, ...] = (),
                user_code: frozenset[str] = frozenset()) -> str | None:
    """Why a queued request is not what this workflow would queue for its cell; None if it is.

    The study, cell, grid axes and training parameters in it name the cell (the parameters
    choose among the built-in models and data sets and the plan's own import paths only);
    everything else, the executor
    parameters with any `setup` lines, the submitit folder, the cell directory and the
    training job's other fields, must be what this profile and plan give that cell."""
    training = request.training
    try:
        study, cell = str(training["study"]), str(training["cell"])
        grid_axes = tuple(str(axis) for axis in training["grid_axes"])
        params = TrainParams.from_dict(training["params"])
    except (KeyError, TypeError, ValueError) as error:
        return f"its training fields do not parse ({error})"
    unplanned = [path for path in (params.model, params.dataset, params.loss)
                 if is_import_path(path) and path not in user_code]
    if unplanned:
        return f"it names code the plan does not ({short(unplanned[0])})"
    expected = CellLaunch(results_dir / study / "cells" / cell, study, cell, grid_axes, params, launcher,
                          data_dir, python_path).request()
    as_json = json.loads(json.dumps(dataclasses.asdict(expected)))  # what the request went through
    differing = [name for name, value in as_json.items()
                 if name not in REQUEST_BOOKKEEPING and getattr(request, name) != value]
    if differing:
        return (f"its {', '.join(differing)} differ from what the profile and plan give cell {cell} "
                f"(e.g. {differing[0]} = {short(getattr(request, differing[0]))})")
    return None


def checked_answer(answer: SubmissionAnswer, request: SubmissionRequest, cell: str) -> str:
    """The answer's job id, once it is an array task's id and names the request's folder."""
    if answer.job_id is None:
        raise CellFailed(f"cell {cell}: sbatch refused the job: {answer.error}")
    if not ARRAY_TASK_ID.match(answer.job_id) or answer.folder != request.folder:
        raise CellFailed(f"cell {cell}: ignoring the answer to its request: job id {short(answer.job_id)} or "
                         f"folder {short(answer.folder)} is not an array task of {request.folder}")
    return answer.job_id


def submit_slurm_cell(task: CellLaunch, view: SharedSlurmView, snakemake_pid: int) -> JobRecord:
    """Queue the cell for the next job array and wait until it is submitted (at most a
    scheduler refresh or two); the sbatch is made by whichever waiting launcher is due."""
    cell, launcher = task.cell, task.launcher
    task.cell_dir.mkdir(parents=True, exist_ok=True)
    request = task.request()  # its submitit folder is made private by the submitter
    view.queue.request(request)
    kill_point("request_written")
    while (answer := view.queue.answer(request)) is None:
        if os.getppid() != snakemake_pid and view.queue.withdraw(request):
            raise SnakemakeGone(f"{cell}: the Snakemake that started this launcher has stopped before the cell "
                                "was submitted; the next snakemake submits it")
        view.tick()
        time.sleep(launcher.poll_interval_s)
    job_id = checked_answer(answer, request, cell)
    record = CellDir(task.cell_dir).read_job()
    if record is None or record.job_id != job_id:
        raise CellFailed(f"cell {cell}: job {job_id} was submitted but its job.json in {task.cell_dir} "
                         "is missing or another job's")
    return record


def collect_result(cell_dir: Path, record: JobRecord, params: TrainParams) -> dict[str, Any] | None:
    """Publish the job's result.json as summary.json if it is this job's, for these parameters."""
    cell = CellDir(cell_dir)
    result = cell.read_result()
    if result is None or str(result.get("job_id")) != record.job_id \
            or not same_params(result.get("params"), params):
        return None
    result = {**result, "measured_with": record.measured_with}
    cell.publish_summary(result)
    cell.write_job(dataclasses.replace(record, collected=True))
    return result


# How long a finished Slurm cell waits for accounting to record its job's end, in the view's refreshes.
USAGE_WAIT_REFRESHES = 3


def record_usage(cell_dir: Path, cell: str, job_id: str, view: SharedSlurmView, launcher: LauncherSettings,
                 out: TextIO) -> None:
    """What Slurm's accounting says the cell's job used, into its accounting.json (analysis/collect.py
    puts it in runs.csv): asked in the view's next refresh, with every other cell ending meanwhile."""
    wait_s = USAGE_WAIT_REFRESHES * launcher.scheduler_refresh_s + launcher.result_grace_s
    usage = view.usage(job_id, wait_s, launcher.poll_interval_s)
    if usage is None:
        say(out, f"{cell}: Slurm's accounting has not recorded the end of job {job_id} within {wait_s:g} s; "
                 "runs.csv shows the job's own readings of what it used")
        return
    CellDir(cell_dir).write_accounting(usage.record())


def with_usage(summary: dict[str, Any], cell_dir: Path, cell: str, view: SharedSlurmView | None,
               launcher: LauncherSettings, out: TextIO) -> dict[str, Any]:
    """A Slurm result collected without waiting for its job here (it ended meanwhile, or a stopped
    Snakemake's launcher published it) gets Slurm's account too, unless it has one already."""
    if view is not None and CellDir(cell_dir).read_accounting(summary.get("job_id")) is None:
        record_usage(cell_dir, cell, str(summary["job_id"]), view, launcher, out)
    return summary


def describe_epoch(cell: str, epochs: int, record: EpochRecord) -> str:
    acc = "n/a" if record.val_accuracy is None else f"{record.val_accuracy:.3f}"
    return (f"{cell}: epoch {record.epoch}/{epochs}, val acc {acc}, "
            f"{record.samples_per_s or 0:.0f} samples/s, {record.train_time_s or 0:.1f} s of training steps")


# What a rank raises when another rank has failed: not a cause of its own.
LOST_A_PEER = (
    "Horovod has been shut down",  # Horovod
    "Connection closed by peer",  # Gloo (DDP): the other rank's process exited
    "Connection reset by peer",
    "NCCL communicator was aborted",  # NCCL (DDP on GPUs)
)


def root_failure(cell_dir: Path, record: JobRecord, num_tasks: int) -> tuple[str, Path] | None:
    """The error that made the job fail, and the log of the task that raised it.

    When one rank raises, every other rank fails too, in its next collective (Horovod
    shuts down; DDP's Gloo loses its connection to the dead rank); the interesting error
    is the one that is not such a consequence."""
    failures = []
    for task in range(num_tasks):
        paths = job_paths(CellDir(cell_dir), record, task)
        try:
            check_private(paths.result_pickle)
            outcome, payload = submitit.core.utils.pickle_load(paths.result_pickle)
        except NotPrivate as refused:
            return str(refused), paths.result_pickle  # nothing of it loaded: say why
        except (FileNotFoundError, EOFError, ValueError):
            continue  # the task was killed before it could write its outcome
        if outcome == "error":
            failures.append((last_error_line(str(payload)), paths.stderr))
    causes = [f for f in failures if not any(consequence in f[0] for consequence in LOST_A_PEER)]
    return (causes or failures)[0] if failures else None


def last_error_line(traceback_text: str) -> str:
    lines = [line.strip() for line in traceback_text.splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


class JobWatch:
    """Tells whether a cell's job has ended: submitit's own check for local jobs, the
    shared Slurm view (one sacct call for all cells) for Slurm jobs."""

    def __init__(self, record: JobRecord, job: submitit.Job | None, view: SharedSlurmView | None,
                 cell: str, launcher: LauncherSettings, out: TextIO) -> None:
        self.record, self.job, self.view = record, job, view
        self.cell, self.launcher, self.out = cell, launcher, out
        self.last_state: JobState | None = None
        self.told_outage = False
        if view is not None:
            view.watch(record.job_id)

    def ended(self) -> bool:
        if self.view is None:
            assert self.job is not None
            return self.job.done()
        self.last_state = self.view.state(self.record.job_id) or self.last_state
        self.tell_outage(self.view.health())
        return self.last_state is not None and not self.last_state.active

    def tell_outage(self, health: Health) -> None:
        """Say once when sacct stops and starts answering; fail only when Slurm has been
        silent (neither sacct nor squeue) past launcher.scheduler_outage_s."""
        if health.sacct_error is not None and not self.told_outage:
            say(self.out, f"{self.cell}: sacct does not answer ({health.sacct_error}); the job's state comes "
                          f"from squeue meanwhile and sacct is asked again every {self.launcher.scheduler_refresh_s:g} s")
            self.told_outage = True
        elif health.sacct_error is None and self.told_outage:
            say(self.out, f"{self.cell}: sacct answers again")
            self.told_outage = False
        silent_s = time.time() - health.answered_at
        if silent_s > self.launcher.scheduler_outage_s:
            raise SchedulerSilent(
                f"cell {self.cell}: Slurm has not told the state of job {self.record.job_id} for {silent_s:.0f} s "
                f"(launcher.scheduler_outage_s = {self.launcher.scheduler_outage_s:g}; last error: "
                f"{health.sacct_error}); the job may still run, and the next snakemake reattaches to it")

    def describe_end(self) -> str:
        if self.last_state is None:
            return "the job ended"
        reason = f" ({self.last_state.reason})" if self.last_state.reason not in ("", "None") else ""
        return f"Slurm job {self.record.job_id} ended {self.last_state.state}{reason}"

    def close(self) -> None:
        if self.view is not None:
            self.view.unwatch(self.record.job_id)


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
               if old.get(key) != new.get(key)]
    return ", ".join(changed)


def rerun_reason(cell: CellDir, previous: JobRecord | None, params: TrainParams,
                 measured_with: dict[str, Any], running: bool = False) -> str | None:
    """Why the run on disk cannot be continued or reused, so it moves aside; None to resume it (or start).
    ``running``: the recorded job still runs, so files it is writing are not judged unreadable."""
    if not cell.has_run_files():
        return None
    old_params = cell.last_params()
    if old_params is not None and not same_params(old_params, params):
        return f"parameters changed ({differences(normalized_params(old_params), params.to_dict())})"
    if previous is not None and previous.measured_with not in (None, measured_with):
        return f"measurement settings changed ({differences(previous.measured_with, measured_with)})"
    if cell.damaged_summaries():
        return "its results were damaged"
    if previous is not None and previous.collected:
        return "Snakemake runs it again (its summary.json was removed, or its settings changed)"
    if not running and old_params is None and (cell.metrics.exists() or cell.checkpoint.exists()):
        return "its earlier files are unreadable"
    return None


def folder_inside(folder: str, results_dir: Path, launcher: LauncherSettings) -> bool:
    """Whether a recorded submitit folder lies where this tool puts them ("": the cell's own)."""
    roots = [results_dir] + ([Path(launcher.submitit_root)] if launcher.submitit_root else [])
    return not folder or any(Path(folder).resolve().is_relative_to(root.resolve()) for root in roots)


def settle_earlier_submission(cell_dir: Path, cell: str, launcher: LauncherSettings, view: SharedSlurmView,
                              out: TextIO) -> None:
    """Wait until a submission a killed session left unfinished is settled for this cell: its
    job.json then names the array task that holds it, or Slurm never had that array."""
    intent = view.queue.unsettled(cell_dir)
    if intent is None:
        return
    say(out, f"{cell}: a submission cut short (job array {intent.job_name}) lists this cell; asking Slurm "
             "whether it was made before anything is submitted")
    try:
        view.settle_cell(cell_dir, launcher.scheduler_outage_s, launcher.poll_interval_s)
    except SchedulerUnavailable as error:
        raise SchedulerSilent(f"cell {cell}: cannot tell whether it was submitted, so it is not submitted again: "
                              f"{error}; the next snakemake asks again") from None


def still_running_job(cell_dir: Path, cell: str, launcher: LauncherSettings,
                      view: SharedSlurmView | None) -> JobRecord | None:
    """The cell's recorded Slurm job, if it is still pending or running."""
    record = CellDir(cell_dir).read_job()
    if record is None or record.executor != "slurm" or view is None:
        return None  # a local job dies with the launcher that started it
    try:
        state = view.fresh_state(record.job_id, launcher.scheduler_outage_s, launcher.poll_interval_s)
    except SchedulerUnavailable as error:
        raise SchedulerSilent(f"cell {cell}: cannot tell whether Slurm job {record.job_id} still runs, so it is "
                              f"not submitted again: {error}; the next snakemake asks again") from None
    return record if state is not None and state.active else None


def wait_for_cell(cell_dir: Path, cell: str, params: TrainParams, launcher: LauncherSettings,
                  watch: JobWatch, out: TextIO, snakemake_pid: int) -> dict[str, Any]:
    seen, ended_at = 0, None
    while True:
        if launcher.executor == "slurm" and os.getppid() != snakemake_pid:
            raise SnakemakeGone(f"{cell}: the Snakemake that started this launcher has stopped; Slurm job "
                                f"{watch.record.job_id} runs on, and the next snakemake reattaches to it")
        records, seen = CellDir(cell_dir).new_epoch_records(seen)
        for record in records:
            say(out, describe_epoch(cell, params.epochs, record))
        summary = collect_result(cell_dir, watch.record, params)
        if summary is not None:
            if watch.view is not None:
                record_usage(cell_dir, cell, watch.record.job_id, watch.view, launcher, out)
            return summary
        if not watch.ended():
            ended_at = None  # still running, or requeued after a state that looked final
        elif ended_at is None:
            ended_at = time.monotonic()
        # The result file may reach a shared filesystem a moment after the job ends.
        if ended_at is not None and time.monotonic() - ended_at > launcher.result_grace_s:
            failure = root_failure(cell_dir, watch.record, params.gpus)
            if failure is not None:
                reason, log_path = failure
                if watch.last_state is not None:
                    reason += f"; {watch.describe_end()}"
                raise CellFailed(f"cell {cell} failed: {reason} (log: {log_path})")
            raise CellFailed(f"cell {cell} failed: {watch.describe_end()} without a result "
                             f"(log: {job_paths(CellDir(cell_dir), watch.record).stderr})")
        time.sleep(launcher.poll_interval_s)


@contextlib.contextmanager
def cell_slot(scheduler_dir: Path, limit: int, cell: str, out: TextIO, snakemake_pid: int,
              shared: bool = False) -> Iterator[None]:
    """Hold one of `limit` slots shared by every launcher of the workflow.

    A slot is an flock on a file, so a launcher that dies (kill -9, lost login
    session) frees its slot at once."""
    slots = private_dir(scheduler_dir / "slots", shared)
    announced = False
    while True:
        for index in range(limit):
            handle = open(slots / f"{index}.lock", "w")  # noqa: SIM115  (held open while the slot is ours)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield
            finally:
                handle.close()
            return
        if not announced:
            say(out, f"{cell}: waiting for a free slot ({limit} cell(s) in flight at most)")
            announced = True
        if os.getppid() != snakemake_pid:
            raise SnakemakeGone(f"{cell}: the Snakemake that started this launcher has stopped before the cell "
                                "had a slot; the next snakemake runs it")
        time.sleep(1.0)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a cell's launcher lock, written into the lock file by its holder."""

    host: str
    pid: int
    snakemake_pid: int  # the launcher's parent when it started

    @classmethod
    def me(cls) -> LockHolder:
        return cls(socket.gethostname(), os.getpid(), os.getppid())

    @classmethod
    def read(cls, text: str) -> LockHolder | None:
        try:
            return cls(**json.loads(text))
        except (json.JSONDecodeError, TypeError):
            return None

    def is_orphan(self) -> bool:
        """Whether its Snakemake has died (the launcher lives on, a child of init). Only a
        holder on this host can be told; one elsewhere counts as alive."""
        if self.host != socket.gethostname():
            return False
        try:
            return psutil.Process(self.pid).ppid() != self.snakemake_pid
        except psutil.NoSuchProcess:
            return True  # gone already: the lock is free, or about to be


ORPHAN_WAIT_NOTICE_S = 60.0


@contextlib.contextmanager
def cell_lock(cell_dir: Path, cell: str, out: TextIO) -> Iterator[None]:
    """One launcher per cell at a time. Snakemake's own directory lock is off (profiles
    set `nolock`) because it outlives a killed login session; this flock does not. A
    lock held by a launcher whose Snakemake died is waited for, not an error."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    with open(CellDir(cell_dir).launcher_lock, "a+") as handle:  # not "w": the holder's name stays readable
        waited_since, noticed = time.monotonic(), 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = LockHolder.read(handle.read())
                if holder is None or not holder.is_orphan():
                    raise CellFailed(f"cell {cell} is being run by another Snakemake on this directory; "
                                     "let it finish or stop it first") from None
                waited = time.monotonic() - waited_since
                if waited >= noticed:
                    say(out, f"{cell}: waiting for the launcher (pid {holder.pid}) that a stopped Snakemake left "
                             f"running to let go of the cell ({waited:.0f} s so far)")
                    noticed = waited + ORPHAN_WAIT_NOTICE_S
                time.sleep(1.0)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(dataclasses.asdict(LockHolder.me())))
        handle.flush()
        yield


def adopted_summary(cell_dir: Path, previous: JobRecord | None, params: TrainParams) -> dict[str, Any] | None:
    """The summary a launcher left by a stopped Snakemake published while this one waited for
    the cell (Snakemake removes a job's output before it starts it, so one found now is that)."""
    if previous is None or not previous.collected:
        return None
    summary, problem = CellDir(cell_dir).read_summary()
    if summary is None or problem is not None or str(summary.get("job_id")) != previous.job_id \
            or not same_params(summary.get("params"), params):
        return None
    return summary


def run_cell(task: CellLaunch, scheduler_dir: Path, out: TextIO = sys.stderr) -> dict[str, Any]:
    snakemake_pid = os.getppid()
    never_group_writable()  # nothing this launcher, its submissions and its jobs write is
    task.cell_dir.mkdir(parents=True, exist_ok=True)  # writable by others; nor is the cell's directory
    not_writable_by_others(task.cell_dir)
    shared = task.launcher.share_results_with_group
    private_dir(scheduler_dir, shared)
    with cell_lock(task.cell_dir, task.cell, out), \
            cell_slot(scheduler_dir, task.launcher.max_cells_in_flight, task.cell, out, snakemake_pid, shared):
        return run_cell_in_slot(task, scheduler_dir, out, snakemake_pid)


def run_cell_in_slot(task: CellLaunch, scheduler_dir: Path, out: TextIO, snakemake_pid: int) -> dict[str, Any]:
    cell_dir, cell, params, launcher = task.cell_dir, task.cell, task.params, task.launcher
    measured_with = launcher.measured_with(params.gpus)
    view = None
    if launcher.executor == "slurm":
        view = SharedSlurmView(scheduler_dir, launcher.scheduler_refresh_s, launcher.share_results_with_group,
                               vet=functools.partial(vet_request, launcher=task.profile_launcher or launcher,
                                                     data_dir=task.data_dir, results_dir=scheduler_dir.parent.resolve(),
                                                     python_path=task.python_path, user_code=task.user_code))
    if view is not None:
        settle_earlier_submission(cell_dir, cell, launcher, view, out)
    previous = CellDir(cell_dir).read_job()
    if previous is not None and not folder_inside(previous.folder, scheduler_dir.parent, launcher):
        raise CellFailed(f"cell {cell}: ignoring {CellDir(cell_dir).job}: its folder {short(previous.folder)} is "
                         "outside the results tree and launcher.submitit_root")
    stale = previous is not None and previous.measured_with not in (None, measured_with)
    if not stale and (summary := adopted_summary(cell_dir, previous, params)) is not None:
        say(out, f"{cell}: finished meanwhile (job {summary['job_id']}) by the launcher a stopped Snakemake left running")
        return with_usage(summary, cell_dir, cell, view, launcher, out)
    if previous is not None and not previous.collected and not stale \
            and (summary := collect_result(cell_dir, previous, params)) is not None:
        say(out, f"{cell}: collected the result of job {previous.job_id}, which finished meanwhile")
        return with_usage(summary, cell_dir, cell, view, launcher, out)
    job = None
    record = still_running_job(cell_dir, cell, launcher, view)
    if record is None and previous is not None and not previous.collected and not stale \
            and (summary := collect_result(cell_dir, previous, params)) is not None:
        say(out, f"{cell}: collected the result of job {previous.job_id}, which finished while Slurm was asked")
        return with_usage(summary, cell_dir, cell, view, launcher, out)
    # Judged once the job's state is known: the files of a job still starting or ending are in flux (an
    # emptied metrics.jsonl before its first line), and one that ended meanwhile may have left its result.
    reason = rerun_reason(CellDir(cell_dir), previous, params, measured_with, running=record is not None)
    if record is not None and reason is not None:
        raise CellFailed(f"cell {cell}: Slurm job {record.job_id} still runs the earlier version ({reason}); "
                         f"let it finish or `scancel {record.job_id}`, then run again")
    if record is not None:
        say(out, f"{cell}: reattached to Slurm job {record.job_id}, still in the queue or running")
    else:
        if reason is not None:
            moved_to = CellDir(cell_dir).move_run_aside(time.time())
            say(out, f"{cell}: {reason}; the earlier run is kept in {moved_to}")
        nodes = launcher.nodes_for(params.gpus)
        say(out, f"{cell}: submitting {params.gpus} worker(s) on {nodes} node(s) via submitit ({launcher.executor})")
        if view is None:
            record, job = submit_local_cell(task)
        else:
            record = submit_slurm_cell(task, view, snakemake_pid)
        say(out, f"{cell}: job {record.job_id}, logs in {job_paths(CellDir(cell_dir), record).folder}")
    watch = JobWatch(record, job, view, cell, launcher, out)
    try:
        summary = wait_for_cell(cell_dir, cell, params, launcher, watch, out, snakemake_pid)
    finally:
        watch.close()
    say(out, f"{cell}: {summary['status']} after {summary['epochs_run']} epoch(s), "
             f"world size {summary['world_size']}")
    return summary
