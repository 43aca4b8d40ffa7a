"""One shared view of the Slurm jobs in flight, whatever the number of waiting cells.

Every waiting cell registers its job id in a shared directory and reads job states from
a cache file. Whichever waiting process finds the cache stale first takes a lock and
refreshes it with ONE `sacct` call for all registered jobs, so the calls to the
scheduler per minute stay at 60 / refresh_s however many cells wait. A cell's own
result file on the shared filesystem remains the fast signal that it has finished.

When sacct does not answer (slurmdbd down, busy or restarting; a munge hiccup), the
view asks the controller with squeue instead, keeps the last states it knew and retries
at the next refresh: an accounting outage is waited out, not a reason to fail a cell.
"""

from __future__ import annotations

import fcntl
import json
import os
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


def parse_sacct(output: str) -> dict[str, JobState]:
    """Parse `sacct -X -n -P -o JobIDRaw,State,Elapsed,NodeList,Reason`."""
    states = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) < 5:
            continue
        job_id, state, elapsed, nodes, reason = fields[:5]
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
    result = run_query(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State,Elapsed,NodeList,Reason",
                        "-j", ",".join(job_ids)])
    if result.returncode != 0:
        raise failure(result)
    return parse_sacct(result.stdout)


def query_squeue(job_ids: list[str]) -> dict[str, JobState]:
    """The controller's own view of the given jobs: it knows a job before slurmdbd does, and
    while slurmdbd is away; it forgets a job MinJobAge (300 s by default) after it ended."""
    if not job_ids:
        return {}
    result = run_query(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%M|%N|%r"])
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return {}  # every one of them forgotten by the controller
        raise failure(result)
    return parse_sacct(result.stdout)


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


def current_state(job_id: str) -> JobState | None:
    """One job's state now, before a cell is submitted or reattached."""
    return job_states([job_id], attempts=3).get(job_id)


@dataclass(frozen=True)
class Health:
    """How the scheduler answered the view's last refreshes."""

    answered_at: float  # the last time sacct or squeue gave the jobs' states
    sacct_error: str | None = None  # why the last sacct failed; None once it answers again


class SharedSlurmView:
    """Job states for every cell waiting under `directory`, refreshed at most every refresh_s."""

    def __init__(self, directory: Path, refresh_s: float = 10.0) -> None:
        self.directory = directory
        self.refresh_s = refresh_s
        self.watch_dir = directory / "watch"
        self.cache_path = directory / "states.json"
        self.watch_dir.mkdir(parents=True, exist_ok=True)

    def watch(self, job_id: str) -> None:
        (self.watch_dir / job_id).touch()

    def unwatch(self, job_id: str) -> None:
        (self.watch_dir / job_id).unlink(missing_ok=True)

    def _read_cache(self) -> tuple[float, dict[str, JobState], Health]:
        try:
            cached = json.loads(self.cache_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return 0.0, {}, Health(answered_at=time.time())
        health = Health(**cached["health"]) if "health" in cached else Health(answered_at=cached["time"])
        return cached["time"], {k: JobState(**v) for k, v in cached["states"].items()}, health

    def _write_cache(self, states: dict[str, JobState], health: Health) -> None:
        tmp = self.cache_path.with_name(f".states.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"time": time.time(), "states": {k: vars(v) for k, v in states.items()},
                                   "health": vars(health)}))
        os.replace(tmp, self.cache_path)

    def state(self, job_id: str) -> JobState | None:
        """The job's last known state; None until the scheduler has told it."""
        fetched_at, states, _ = self._read_cache()
        if time.time() - fetched_at >= self.refresh_s:
            states = self._refresh() or states
        return states.get(job_id)

    def health(self) -> Health:
        return self._read_cache()[2]

    def _refresh(self) -> dict[str, JobState] | None:
        with open(self.directory / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another waiting cell is refreshing right now
            fetched_at, known, health = self._read_cache()
            if time.time() - fetched_at < self.refresh_s:
                return known  # another cell refreshed it just before we took the lock
            watched = sorted(p.name for p in self.watch_dir.iterdir())
            states, health = self._ask(watched, known, health)
            self._write_cache(states, health)
            return states

    @staticmethod
    def _ask(watched: list[str], known: dict[str, JobState], health: Health) -> tuple[dict[str, JobState], Health]:
        now = time.time()
        try:
            return query_sacct(watched), Health(answered_at=now)
        except SchedulerUnavailable as error:
            error_text = str(error)
        try:
            known = {job_id: known[job_id] for job_id in watched if job_id in known}
            return {**known, **query_squeue(watched)}, Health(now, error_text)
        except SchedulerUnavailable:
            return known, Health(health.answered_at, error_text)
