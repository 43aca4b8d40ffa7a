"""One shared view of the Slurm jobs in flight, whatever the number of waiting cells.

Every waiting cell registers its job id in a shared directory and reads job states from
a cache file. Whichever waiting process finds the cache stale first takes a lock and
refreshes it with ONE `sacct` call for all registered jobs, so the calls to the
scheduler per minute stay at 60 / refresh_s however many cells wait. A cell's own
result file on the shared filesystem remains the fast signal that it has finished.
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


def query_sacct(job_ids: list[str]) -> dict[str, JobState]:
    """One sacct call for all the given jobs."""
    if not job_ids:
        return {}
    result = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobIDRaw,State,Elapsed,NodeList,Reason", "-j", ",".join(job_ids)],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sacct failed: {result.stderr.strip()}")
    return parse_sacct(result.stdout)


def query_squeue(job_id: str) -> JobState | None:
    """The controller's own view of one job: it knows a job before slurmdbd does."""
    result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i|%T|%M|%N|%r"],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None  # "Invalid job id": the controller has forgotten it (finished long ago)
    return parse_sacct(result.stdout).get(job_id)


def current_state(job_id: str) -> JobState | None:
    """One job's state now: sacct, or squeue for a job too new for the accounting database."""
    return query_sacct([job_id]).get(job_id) or query_squeue(job_id)


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

    def _read_cache(self) -> tuple[float, dict[str, JobState]]:
        try:
            cached = json.loads(self.cache_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return 0.0, {}
        return cached["time"], {k: JobState(**v) for k, v in cached["states"].items()}

    def _write_cache(self, states: dict[str, JobState]) -> None:
        tmp = self.cache_path.with_name(f".states.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"time": time.time(), "states": {k: vars(v) for k, v in states.items()}}))
        os.replace(tmp, self.cache_path)

    def state(self, job_id: str) -> JobState | None:
        """The job's last known state; None until sacct has seen it."""
        fetched_at, states = self._read_cache()
        if time.time() - fetched_at >= self.refresh_s:
            states = self._refresh() or states
        return states.get(job_id)

    def _refresh(self) -> dict[str, JobState] | None:
        with open(self.directory / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # another waiting cell is refreshing right now
            fetched_at, states = self._read_cache()
            if time.time() - fetched_at < self.refresh_s:
                return states  # another cell refreshed it just before we took the lock
            watched = sorted(p.name for p in self.watch_dir.iterdir())
            states = query_sacct(watched)
            self._write_cache(states)
            return states
