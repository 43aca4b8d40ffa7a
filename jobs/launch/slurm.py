"""Slurm's own answers: job states from sacct and squeue, job arrays found by name.

The calls the shared view (jobs/launch/scheduler.py) makes for every waiting cell, and
the one a training task makes at its start to know whether another live task owns its
cell. Nothing here keeps state: each function is one or two calls to Slurm.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Slurm job states (sacct) in which the job may still produce its result.
ACTIVE_STATES = frozenset({
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
    "RESIZING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD",
})


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # first word of sacct's State ("CANCELLED by 0" -> "CANCELLED")
    elapsed: str
    nodes: str
    reason: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


# A job array's tasks that have not started yet share one record: "12_[4-9,11%256]".
ARRAY_TASKS = re.compile(r"^(\d+)_\[([^\]]+)\]$")


def job_ids_of(field: str) -> list[str]:
    """The job ids one line of sacct or squeue stands for: itself, or each task of a range."""
    match = ARRAY_TASKS.match(field)
    if match is None:
        return [field]
    array_id, spec = match.group(1), match.group(2).split("%")[0]
    ids: list[str] = []
    for part in spec.split(","):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        ids.extend(f"{array_id}_{task}" for task in range(int(first), int(last or first) + 1, int(step or 1)))
    return ids


def array_ids(job_ids: list[str]) -> list[str]:
    """What to ask Slurm for: a pending array task is known to sacct only through its array."""
    return sorted({job_id.split("_")[0] for job_id in job_ids})


def parse_sacct(output: str) -> dict[str, JobState]:
    """Parse `sacct -X -n -P -o JobID,State,Elapsed,NodeList,Reason` (squeue's the same way)."""
    states = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) < 5:
            continue
        field, state, elapsed, nodes, reason = fields[:5]
        for job_id in job_ids_of(field):
            states[job_id] = JobState(job_id, state.split()[0] if state else "UNKNOWN", elapsed, nodes, reason)
    return states


class SchedulerUnavailable(RuntimeError):
    """sacct or squeue did not answer; the message says which and why."""


def run_query(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SchedulerUnavailable(f"{command[0]} did not run: {error}") from error


def failure(result: subprocess.CompletedProcess[str]) -> SchedulerUnavailable:
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return SchedulerUnavailable(f"{result.args[0]} exited {result.returncode}: "
                                f"{lines[-1] if lines else 'no message'}")


def query_sacct(job_ids: list[str]) -> dict[str, JobState]:
    """One sacct call for all the given jobs."""
    if not job_ids:
        return {}
    result = run_query(["sacct", "-X", "-n", "-P", "-o", "JobID,State,Elapsed,NodeList,Reason",
                        "-j", ",".join(array_ids(job_ids))])
    if result.returncode != 0:
        raise failure(result)
    return parse_sacct(result.stdout)


def query_squeue(job_ids: list[str]) -> dict[str, JobState]:
    """The controller's own view of the given jobs: it knows a job before slurmdbd does, and
    while slurmdbd is away; it forgets a job MinJobAge (300 s by default) after it ended."""
    if not job_ids:
        return {}
    result = run_query(["squeue", "-h", "-t", "all", "-j", ",".join(array_ids(job_ids)), "-o", "%i|%T|%M|%N|%r"])
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return {}  # every one of them forgotten by the controller
        raise failure(result)
    return parse_sacct(result.stdout)


def find_arrays(names: list[str], since: float) -> tuple[dict[str, str], bool]:
    """The job arrays Slurm has under the given names, {name: array id}, from one squeue (the
    controller knows a job from its sbatch on) and one sacct for the names squeue does not
    know (ended longer than MinJobAge ago); and whether both answered, so that a name not
    found is known to be absent. `since`: no array of these names was submitted before it."""
    if not names:
        return {}, True
    found: dict[str, str] = {}
    answered = True
    result = None
    with contextlib.suppress(SchedulerUnavailable):
        result = run_query(["squeue", "-h", "-t", "all", "--name", ",".join(names), "-o", "%F|%j"])
    if result is None or result.returncode != 0:
        answered = False
    else:
        found.update(arrays_by_name(result.stdout, names))
    if missing := [name for name in names if name not in found]:
        start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 3600))
        result = None
        with contextlib.suppress(SchedulerUnavailable):
            result = run_query(["sacct", "-X", "-n", "-P", "--name", ",".join(missing), "-S", start,
                                "-o", "JobID,JobName"])
        if result is None or result.returncode != 0:
            answered = False
        else:
            found.update(arrays_by_name(result.stdout, missing))
    if not found and not answered:
        raise SchedulerUnavailable("neither squeue nor sacct answered a lookup of job names")
    return found, answered


def arrays_by_name(output: str, names: list[str]) -> dict[str, str]:
    """{name: array id} from lines "<job or array id>|<name>"; "123_4" and "123_[5-9]" are array 123."""
    wanted, found = set(names), {}
    for line in output.splitlines():
        job_id, _, name = line.strip().partition("|")
        if name in wanted and job_id:
            found[name] = job_id.split("_")[0]
    return found


def job_states(job_ids: list[str], attempts: int = 1) -> dict[str, JobState]:
    """The jobs' states now: sacct (asked up to `attempts` times), then squeue for the jobs
    sacct does not know yet, or for all of them if sacct does not answer."""
    for attempt in range(attempts):
        try:
            states = query_sacct(job_ids)
            break
        except SchedulerUnavailable:
            if attempt + 1 == attempts:
                return query_squeue(job_ids)
            time.sleep(2.0 ** attempt)
    missing = [job_id for job_id in job_ids if job_id not in states]
    try:
        return {**states, **query_squeue(missing)}
    except SchedulerUnavailable:
        return states  # what sacct told is still true


def other_live_owner(cell_dir: Path, job_id: str) -> str | None:
    """The Slurm task that owns the cell directory, when it is live and not `job_id`.

    A cell's job.json names the task that owns it (a requeued task keeps its id). A task
    that finds another live one named there is a duplicate and must not touch the
    directory. One whose record names an ended job, or none, goes on: it is the cell's new
    task, started before its submitter wrote job.json, or the one a rerun is about to name."""
    from jobs.cell import CellDir

    record = CellDir(cell_dir).read_job()
    if record is None or record.executor != "slurm" or record.job_id == job_id:
        return None
    try:
        state = job_states([record.job_id]).get(record.job_id)
    except SchedulerUnavailable:
        return None  # cannot tell: train, as before this check existed
    return record.job_id if state is not None and state.active else None
