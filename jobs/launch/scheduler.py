"""One shared view of the Slurm jobs in flight, whatever the number of waiting cells.

Every waiting cell registers its job id in a shared directory and reads job states from
a cache file; a cell still to be submitted leaves a request there instead
(jobs/launch/submission.py). Whichever waiting process finds a call due first takes a
lock and makes it for everybody: at most one sbatch of the queued cells as a job array,
and one sacct for all registered jobs, per refresh_s. So the calls to the scheduler per
minute stay at 2 x 60 / refresh_s at most, however many cells wait or start. A cell's
own result file on the shared filesystem remains the fast signal that it has finished.
A cell whose job has ended asks what it used: that refresh's one sacct then includes the
step records (jobs/launch/accounting.py).

When sacct does not answer (slurmdbd down, busy or restarting; a munge hiccup), the
view asks the controller with squeue instead, keeps the last states it knew and retries
at the next refresh: an accounting outage is waited out, not a reason to fail a cell.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.cell import replaced_atomically
from jobs.launch.accounting import JobUsage, query_accounting
from jobs.launch.slurm import JobState, SchedulerUnavailable, find_arrays, query_sacct, query_squeue
from jobs.launch.submission import RequestVetting, SubmissionIntent, SubmissionQueue
from jobs.private import file_mode, private_dir


@dataclass(frozen=True)
class Health:
    """How the scheduler answered the view's last refreshes."""

    answered_at: float  # the last time sacct or squeue gave the jobs' states
    sacct_error: str | None = None  # why the last sacct failed; None once it answers again


@dataclass(frozen=True)
class ViewCache:
    sbatch_at: float  # the last sbatch of queued cells
    sacct_at: float  # the last sacct (or squeue) for the watched jobs
    states: dict[str, JobState]
    health: Health
    # When the refresh that last got an answer listed the watched jobs: the states cover every
    # job watched by then. 0 until one has.
    states_listed_at: float = 0.0


class SharedSlurmView:
    """Job states for every cell waiting under `directory`, and the submission of the cells
    queued there: at most one sacct and one sbatch every refresh_s, for all of them."""

    def __init__(self, directory: Path, refresh_s: float = 20.0, shared: bool = False,
                 vet: RequestVetting | None = None) -> None:
        self.directory = directory
        self.refresh_s = refresh_s
        self.watch_dir = directory / "watch"
        self.usage_dir = directory / "usage"  # <job id>: asked for; <job id>.json: what sacct told
        self.cache_path = directory / "states.json"
        self.queue = SubmissionQueue(directory, shared, vet)  # makes the directory private
        private_dir(self.watch_dir, shared)
        private_dir(self.usage_dir, shared)

    def watch(self, job_id: str) -> None:
        (self.watch_dir / job_id).touch()

    def unwatch(self, job_id: str) -> None:
        (self.watch_dir / job_id).unlink(missing_ok=True)

    def usage(self, job_id: str, timeout_s: float, poll_s: float = 1.0) -> JobUsage | None:
        """What an ended job used, from the accounting sacct of a refresh after this call (one for every
        job asked about meanwhile); None when accounting has not told within timeout_s."""
        answer = self.usage_dir / f"{job_id}.json"
        answer.unlink(missing_ok=True)
        (self.usage_dir / job_id).touch()
        deadline = time.time() + timeout_s
        try:
            while time.time() < deadline:
                self.tick()
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, TypeError):
                    return JobUsage(**json.loads(answer.read_text()))
                time.sleep(poll_s)
            return None
        finally:
            (self.usage_dir / job_id).unlink(missing_ok=True)
            answer.unlink(missing_ok=True)

    def _write_usage(self, usage: dict[str, JobUsage], asked: list[str]) -> None:
        """The usage of each asked-about job that has ended (its step records are final then)."""
        for job_id in asked:
            if job_id in usage and usage[job_id].state not in ("RUNNING", "COMPLETING", "PENDING", "REQUEUED"):
                with replaced_atomically(self.usage_dir / f"{job_id}.json", mode=file_mode(self.queue.shared),
                                         per_process=True) as out:
                    out.write(json.dumps(dataclasses.asdict(usage[job_id])))

    def _read_cache(self) -> ViewCache:
        try:
            cached = json.loads(self.cache_path.read_text())
            return ViewCache(cached["sbatch_at"], cached["sacct_at"],
                             {k: JobState(**v) for k, v in cached["states"].items()}, Health(**cached["health"]),
                             cached.get("states_listed_at", 0.0))
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return ViewCache(0.0, 0.0, {}, Health(answered_at=time.time()))

    def _write_cache(self, cache: ViewCache) -> None:
        with replaced_atomically(self.cache_path, mode=file_mode(self.queue.shared), per_process=True) as out:
            out.write(json.dumps({"sbatch_at": cache.sbatch_at, "sacct_at": cache.sacct_at,
                                  "states": {k: vars(v) for k, v in cache.states.items()},
                                  "health": vars(cache.health), "states_listed_at": cache.states_listed_at}))

    def state(self, job_id: str) -> JobState | None:
        """The job's last known state; None until the scheduler has told it."""
        return self.tick().get(job_id)

    def health(self) -> Health:
        return self._read_cache().health

    def fresh_state(self, job_id: str, outage_s: float, poll_s: float = 1.0) -> JobState | None:
        """The job's state from a refresh that began after this call; None when Slurm does not
        know the job. The cells a restarted Snakemake reattaches all wait for the same sacct,
        not one each. Raises SchedulerUnavailable when neither sacct nor squeue answers for outage_s."""
        self.watch(job_id)
        asked_at = time.time()  # after the watch: a refresh that began later lists this job
        try:
            while True:
                self.tick()
                cache = self._read_cache()
                if cache.states_listed_at > asked_at:
                    return cache.states.get(job_id)
                if time.time() - asked_at > outage_s:
                    raise SchedulerUnavailable(f"neither sacct nor squeue has answered for {outage_s:g} s "
                                               f"(last error: {cache.health.sacct_error})")
                time.sleep(poll_s)
        finally:
            self.unwatch(job_id)

    def _due(self, at: float) -> bool:
        return time.time() - at >= self.refresh_s

    def tick(self) -> dict[str, JobState]:
        """Make the calls that are due, unless another waiting cell is making them; the
        job states known after them."""
        cache = self._read_cache()
        if not self._due(cache.sacct_at) and not (self._due(cache.sbatch_at) and self.queue.has_requests()):
            return cache.states
        with open(self.directory / "lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return cache.states  # another waiting cell is calling right now
            cache = before = self._read_cache()  # as the cell that held the lock last left it
            if self._due(cache.sbatch_at) and self.queue.ready(time.time()):
                self.queue.submit_oldest_shape()
                # Jobs just submitted need no sacct yet: the first is a refresh after them.
                cache = dataclasses.replace(cache, sbatch_at=time.time(), sacct_at=cache.sacct_at or time.time())
            if self._due(cache.sacct_at):
                cache = self._refresh_states(cache)
            if cache != before:
                self._write_cache(cache)
            return cache.states

    def _refresh_states(self, cache: ViewCache) -> ViewCache:
        """The due refresh: a killed session's unfinished submissions settled for every waiting
        cell at once (first: a settled cell's launcher watches its job next), then one sacct
        for the watched jobs."""
        asked = False
        if self.queue.has_intents():
            with contextlib.suppress(SchedulerUnavailable):  # asked again at the next refresh
                self.queue.settle(find_arrays, time.time())
            asked = True
        listed_at = time.time()
        watched = sorted(p.name for p in self.watch_dir.iterdir())
        usage_asked = sorted(p.name for p in self.usage_dir.iterdir() if not p.name.endswith(".json"))
        if watched or usage_asked:
            states, health, usage = self._ask(watched, usage_asked, cache.states, cache.health, listed_at)
            self._write_usage(usage, usage_asked)
            answered = health.answered_at == listed_at
            return dataclasses.replace(cache, sacct_at=time.time(), states=states, health=health,
                                       states_listed_at=listed_at if answered else cache.states_listed_at)
        return dataclasses.replace(cache, sacct_at=time.time()) if asked else cache

    def settle_cell(self, cell_dir: Path, outage_s: float, poll_s: float = 1.0) -> SubmissionIntent | None:
        """Wait until no unfinished submission lists the cell: then its job.json names its task,
        or the cell was never submitted. Returns the submission it waited for, if any.
        Raises SchedulerUnavailable when that takes longer than outage_s."""
        waited_for = intent = self.queue.unsettled(cell_dir)
        asked_at = time.time()
        while intent is not None:
            if time.time() - asked_at > outage_s:
                raise SchedulerUnavailable(f"Slurm has not told for {outage_s:g} s whether job array "
                                           f"{intent.job_name} was submitted")
            time.sleep(poll_s)
            self.tick()
            intent = self.queue.unsettled(cell_dir)
        return waited_for

    @staticmethod
    def _ask(watched: list[str], usage_asked: list[str], known: dict[str, JobState], health: Health,
             now: float) -> tuple[dict[str, JobState], Health, dict[str, JobUsage]]:
        """One sacct: the watched jobs' states, with the step records (what they used) when any job's
        usage is asked for; squeue where sacct does not know a job or does not answer."""
        def only_watched(states: dict[str, JobState]) -> dict[str, JobState]:
            return {job_id: states[job_id] for job_id in watched if job_id in states}  # not their arrays' others

        usage: dict[str, JobUsage] = {}
        try:
            if usage_asked:
                found, usage = query_accounting(sorted({*watched, *usage_asked}))
                states = only_watched(found)
            else:
                states = only_watched(query_sacct(watched))
        except SchedulerUnavailable as error:
            error_text = str(error)
        else:
            # A job accounting has not recorded yet (slurmdbd lagging behind a submission) is in
            # the controller's queue: told as unknown, it would look ended to a reattaching cell.
            if missing := [job_id for job_id in watched if job_id not in states]:
                with contextlib.suppress(SchedulerUnavailable):
                    states = {**states, **only_watched(query_squeue(missing))}
            return states, Health(answered_at=now), usage
        try:
            known = only_watched(known)
            return {**known, **only_watched(query_squeue(watched))}, Health(now, error_text), usage
        except SchedulerUnavailable:
            return known, Health(health.answered_at, error_text), usage
