"""Where Slurm cells are submitted: together, as job arrays, one sbatch for many cells.

A cell's launcher does not call sbatch itself. It leaves a request in the shared
scheduler directory and waits; whichever waiting process next finds the scheduler due
(SharedSlurmView) submits every pending request of one shape (the same resources, time
limit and submitit folder) as ONE job array through submitit's `executor.batch()`,
writes each cell's job.json and answers each request. So the number of sbatch calls
per minute is bounded by the scheduler's refresh, not by how fast cells finish.

Requests, their withdrawal and their submission all happen under one lock, so a request
is either still pending (and can be withdrawn, or replaced by the cell's next launcher)
or submitted and answered, never both. A request whose launcher has died (killed with
its Snakemake, say) is dropped, not submitted: nobody would wait for that job, and the
cell's next launcher, perhaps with changed settings, submits the cell itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import submitit
from submitit.core.utils import FailedJobError

from jobs.cell import CellDir, JobRecord, write_json_atomically

# Cells a Snakemake starts together reach the queue over a few seconds: the queue is
# submitted once no request has come for GATHER_QUIET_S, or once the oldest has waited
# GATHER_MAX_S, so that one sbatch takes the whole burst.
GATHER_QUIET_S = 1.0
GATHER_MAX_S = 5.0


@dataclass(frozen=True)
class SubmissionRequest:
    """Everything the submitting process needs to submit a cell that is not its own."""

    cell_dir: str
    folder: str  # submitit's folder: the array's scripts and per-task logs
    parameters: dict[str, Any]  # submitit's executor.update_parameters(...)
    max_requeues: int
    training: dict[str, Any]  # the TrainingJob's fields
    measured_with: dict[str, Any]
    nonce: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    requested_at: float = dataclasses.field(default_factory=time.time)
    host: str = dataclasses.field(default_factory=socket.gethostname)  # of the launcher waiting for it
    pid: int = dataclasses.field(default_factory=os.getpid)

    @property
    def key(self) -> str:
        return hashlib.sha256(str(Path(self.cell_dir).resolve()).encode()).hexdigest()[:24]

    def abandoned(self) -> bool:
        """Whether its launcher has died. One on another host counts as alive."""
        return self.host == socket.gethostname() and not psutil.pid_exists(self.pid)

    @property
    def shape(self) -> str:
        """Requests of one shape can share a job array: Slurm gives every task the same resources."""
        return json.dumps([self.folder, self.parameters, self.max_requeues], sort_keys=True)


@dataclass(frozen=True)
class SubmissionAnswer:
    nonce: str
    job_id: str | None = None
    folder: str | None = None
    error: str | None = None


def sbatch_message(error: Exception) -> str:
    """Slurm's own words from a refused sbatch, without submitit's wrapping."""
    output = getattr(error, "stderr", None) or getattr(error, "output", None) or str(error)
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    lines = [line.strip() for line in str(output).splitlines() if "error" in line.lower()]
    if lines:
        return " / ".join(dict.fromkeys(lines))
    rest = [line.strip() for line in str(output).splitlines() if line.strip()]
    return rest[0] if rest else "unknown error"


class SubmissionQueue:
    """The requests of every cell waiting to be submitted under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.requests_dir = directory / "requests"
        self.answers_dir = directory / "answers"
        self.lock_path = directory / "requests.lock"
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        self.answers_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---- the waiting cell's side ------------------------------------------------------

    def request(self, request: SubmissionRequest) -> None:
        """Queue the cell, replacing a request a dead launcher of the same cell left."""
        with self._locked():
            (self.answers_dir / f"{request.key}.json").unlink(missing_ok=True)
            write_json_atomically(self.requests_dir / f"{request.key}.json", dataclasses.asdict(request))

    def withdraw(self, request: SubmissionRequest) -> bool:
        """Take the request back; False when it has been submitted already."""
        with self._locked():
            path = self.requests_dir / f"{request.key}.json"
            pending = self._read_request(path)
            if pending is None or pending.nonce != request.nonce:
                return False
            path.unlink()
            return True

    def answer(self, request: SubmissionRequest) -> SubmissionAnswer | None:
        path = self.answers_dir / f"{request.key}.json"
        try:
            answer = SubmissionAnswer(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None
        if answer.nonce != request.nonce:
            return None
        path.unlink(missing_ok=True)
        return answer

    # ---- the submitting process's side ------------------------------------------------

    @staticmethod
    def _read_request(path: Path) -> SubmissionRequest | None:
        try:
            return SubmissionRequest(**json.loads(path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def pending(self) -> list[SubmissionRequest]:
        requests = (self._read_request(path) for path in self.requests_dir.glob("*.json"))
        return sorted((r for r in requests if r is not None), key=lambda r: r.requested_at)

    def has_requests(self) -> bool:
        """One directory listing: what a waiting cell pays per poll to know whether to submit."""
        return any(path.suffix == ".json" for path in self.requests_dir.iterdir())

    def ready(self, now: float) -> bool:
        """Whether the requests have stopped coming, or the oldest has waited long enough."""
        pending = self.pending()
        return bool(pending) and (now - pending[-1].requested_at >= GATHER_QUIET_S
                                  or now - pending[0].requested_at >= GATHER_MAX_S)

    def submit_oldest_shape(self) -> int:
        """One sbatch: every pending request of the oldest request's shape, as one job array.
        Returns how many cells it submitted (0 when nothing was pending or sbatch refused)."""
        with self._locked():
            pending = []
            for request in self.pending():
                if request.abandoned():
                    (self.requests_dir / f"{request.key}.json").unlink(missing_ok=True)
                else:
                    pending.append(request)
            if not pending:
                return 0
            batch = [r for r in pending if r.shape == pending[0].shape]
            answers = submit_array(batch)
            for request, answer in zip(batch, answers):
                write_json_atomically(self.answers_dir / f"{request.key}.json", dataclasses.asdict(answer))
                (self.requests_dir / f"{request.key}.json").unlink(missing_ok=True)
            return sum(answer.job_id is not None for answer in answers)


def submit_array(batch: list[SubmissionRequest]) -> list[SubmissionAnswer]:
    """Submit the requests (all of one shape) with one sbatch and record each cell's job."""
    from jobs.train.job import TrainingJob  # the training code, only where a job is submitted

    first = batch[0]
    executor = submitit.AutoExecutor(folder=first.folder, cluster="slurm", slurm_max_num_timeout=first.max_requeues)
    executor.update_parameters(**first.parameters)
    try:
        with executor.batch():
            jobs = [executor.submit(TrainingJob(**{**r.training, "grid_axes": tuple(r.training["grid_axes"])}))
                    for r in batch]
    except (FailedJobError, subprocess.CalledProcessError, OSError) as error:
        return [SubmissionAnswer(r.nonce, error=sbatch_message(error)) for r in batch]
    answers = []
    submitted_at, folder = time.time(), str(Path(first.folder).resolve())
    for request, job in zip(batch, jobs):
        CellDir(Path(request.cell_dir)).write_job(JobRecord(
            job_id=str(job.job_id), executor="slurm", submitted_at=submitted_at, folder=folder,
            measured_with=request.measured_with))
        answers.append(SubmissionAnswer(request.nonce, job_id=str(job.job_id), folder=folder))
    return answers
