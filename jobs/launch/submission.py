"""Where Slurm cells are submitted: together, as job arrays, one sbatch for many cells.

A cell's launcher does not call sbatch itself. It leaves a request in the shared
scheduler directory and waits; whichever waiting process next finds the scheduler due
(SharedSlurmView) submits every pending request of one shape (the same resources, time
limit and submitit folder) as ONE job array, writes each cell's job.json and answers
each request. So the number of sbatch calls per minute is bounded by the scheduler's
refresh, not by how fast cells finish.

Requests, their withdrawal and their submission all happen under one lock, so a request
is either still pending (and can be withdrawn, or replaced by the cell's next launcher)
or submitted and answered, never both. A request whose launcher has died (killed with
its Snakemake, say) is dropped, not submitted: nobody would wait for that job, and the
cell's next launcher, perhaps with changed settings, submits the cell itself.

No cell is submitted twice, even when the login session dies in the middle of a
submission. Before its sbatch, an array is recorded durably as a SubmissionIntent: a
unique submission id, the job name that carries it (sacct and squeue keep job names),
and which task is which cell. The order, and why a rerun is right at each instant:

  1. intent written          no sbatch yet; a rerun finds no array by that name and,
                             once the intent is SBATCH_SETTLE_S old, drops it
  2. pickles staged          as 1 (they lie under the submission's own names, unused)
  3. sbatch returned         the array is in Slurm under its name: a rerun finds it
  4. array id recorded       the rerun need not ask Slurm
  5. pickles moved           tasks find their pickle by the submission id anyway
  6. job.json, cell by cell  a cell whose job.json names its task is settled already
  7. intent removed          every cell's job.json names its task
  8. answers written         the waiting launchers read them

A rerun's launcher first waits until no intent lists its cell (SharedSlurmView.settle_cell):
whichever waiting process is due settles every unfinished intent at once, with one
squeue (and one sacct for the names squeue no longer knows), under the queue's lock, so
never while a live submitter is between steps 1 and 7. Only then does it read job.json
and reattach, collect or submit as usual. The tasks move their own pickle into place
(jobs/launch/array_task.py), so a task whose submitter died before step 5 still runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import submitit
from submitit.core.utils import FailedJobError

from jobs.cell import CellDir, JobRecord, write_json_atomically
from jobs.private import NotPrivate, check_private, file_mode, private_dir, restrict_file

# Cells a Snakemake starts together reach the queue over a few seconds: the queue is
# submitted once no request has come for GATHER_QUIET_S, or once the oldest has waited
# GATHER_MAX_S, so that one sbatch takes the whole burst.
GATHER_QUIET_S = 1.0
GATHER_MAX_S = 5.0

# What submit_array names a submission and its job array (squeue's --name takes a comma list).
SUBMISSION_ID = re.compile(r"^[0-9a-f]{12}$")
JOB_NAME = re.compile(r"^[^\s,|]+$")

# A submission not found in Slurm is taken as never made only once its intent is this old:
# an sbatch whose launcher was killed alone (not its whole group) may still be talking to
# the controller for its MessageTimeout (10 s by default) and a retry.
SBATCH_SETTLE_S = 30.0

# Testing switch: "POINT" or "POINT@N" kills this process's whole group (Snakemake and
# every launcher, as a dropped login session does) when the N-th job array submitted from
# this scheduler directory (the first by default) reaches POINT of its submission.
KILL_AT_ENV = "SCALING_STUDY_TEST_KILL_AT"


def kill_point(point: str, array_ordinal: int = 1) -> None:
    wanted = os.environ.get(KILL_AT_ENV)
    if wanted is None:
        return
    name, _, ordinal = wanted.partition("@")
    if name == point and int(ordinal or 1) == array_ordinal:
        os.killpg(os.getpgrp(), signal.SIGKILL)


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
class CellTask:
    """One task of a submission: the cell it trains and what job.json will say it measured with."""

    cell_dir: str
    measured_with: dict[str, Any]


@dataclass(frozen=True)
class SubmissionIntent:
    """One job array, recorded before its sbatch: task i of the array trains cells[i]."""

    submission_id: str
    job_name: str  # carries the submission id: what a rerun looks the array up by
    folder: str
    cells: list[CellTask]
    created_at: float
    array_id: str | None = None  # recorded as soon as sbatch returns

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SubmissionIntent:
        return cls(**{**values, "cells": [CellTask(**cell) for cell in values["cells"]]})

    def job_id(self, task: int) -> str:
        assert self.array_id is not None
        return f"{self.array_id}_{task}"

    def lists(self, cell_dir: Path) -> bool:
        resolved = str(cell_dir.resolve())
        return any(task.cell_dir == resolved for task in self.cells)

    def write_job_records(self, ordinal: int = 0) -> None:
        """Each cell's job.json names its task (the record a cell's launcher reattaches by)."""
        for task, cell in enumerate(self.cells):
            cell_dir = CellDir(cell.cell_dir)
            if (current := cell_dir.read_job()) is not None and current.job_id == self.job_id(task):
                continue  # written before a kill: leave it as it is
            cell_dir.write_job(JobRecord(job_id=self.job_id(task), executor="slurm", submitted_at=self.created_at,
                                         folder=self.folder, measured_with=cell.measured_with))
            kill_point(f"job_json_written:{task + 1}", ordinal)


# Finds job arrays by name: {name: array id} for the names Slurm has, and whether Slurm
# answered for all of them (False: a name not found may still be there).
ArrayFinder = Callable[[list[str], float], tuple[dict[str, str], bool]]


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


# Why a queued request is not what this workflow's profile and plan give for its cell; None if it is.
RequestVetting = Callable[[SubmissionRequest], str | None]


class SubmissionQueue:
    """The requests of every cell waiting to be submitted under `directory`, and the
    intents of the arrays being submitted. The directory is private (jobs/private.py):
    what is in it becomes sbatch scripts and pickles. `vet` checks each request before
    it is submitted (the launcher's vet_request); without it none is submitted."""

    def __init__(self, directory: Path, shared: bool = False, vet: RequestVetting | None = None) -> None:
        self.requests_dir = directory / "requests"
        self.answers_dir = directory / "answers"
        self.intents_dir = directory / "submissions"
        self.lock_path = directory / "requests.lock"
        self.shared, self.vet = shared, vet
        private_dir(directory, shared)
        for folder in (self.requests_dir, self.answers_dir, self.intents_dir):
            private_dir(folder, shared)

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        write_json_atomically(path, record, file_mode(self.shared))

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
            self._write(self.requests_dir / f"{request.key}.json", dataclasses.asdict(request))

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

    def _count_array(self) -> int:
        """The ordinal of the array about to be submitted, counted for the testing switch only."""
        if KILL_AT_ENV not in os.environ:
            return 0
        counter = self.requests_dir.parent / "arrays-submitted"
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        return count

    def submit_oldest_shape(self) -> int:
        """One sbatch: every pending request of the oldest request's shape, as one job array.
        Returns how many cells it submitted (0 when nothing was pending or sbatch refused)."""
        with self._locked():
            pending = []
            for request in self.pending():
                path = self.requests_dir / f"{request.key}.json"
                if request.abandoned():
                    path.unlink(missing_ok=True)
                elif (refusal := self._refusal(path, request)) is not None:
                    print(refusal, file=sys.stderr, flush=True)
                    self._answer(request, SubmissionAnswer(request.nonce, error=refusal))
                else:
                    pending.append(request)
            if not pending:
                return 0
            batch = [r for r in pending if r.shape == pending[0].shape]
            ordinal = self._count_array()
            answers = submit_array(batch, self.intents_dir, self.shared, ordinal)
            for request, answer in zip(batch, answers):
                self._answer(request, answer)
            kill_point("answers_written", ordinal)
            return sum(answer.job_id is not None for answer in answers)

    def _answer(self, request: SubmissionRequest, answer: SubmissionAnswer) -> None:
        self._write(self.answers_dir / f"{request.key}.json", dataclasses.asdict(answer))
        (self.requests_dir / f"{request.key}.json").unlink(missing_ok=True)

    def _refusal(self, path: Path, request: SubmissionRequest) -> str | None:
        """Why the request may not be submitted: a file others could have written, or
        parameters other than the profile and the cell's plan give (a `setup` line, say)."""
        try:
            check_private(path)
        except NotPrivate as refused:
            return f"request not submitted: {refused}"
        why = "no check of requests was given" if self.vet is None else self.vet(request)
        return None if why is None else f"request {path} not submitted: {why}"

    # ---- submissions a killed session left unfinished ------------------------------------

    def intents(self) -> list[SubmissionIntent]:
        """The unfinished submissions, read strictly: one that is not what submit_array writes
        is told in one line and ignored (it writes nothing anywhere)."""
        found = []
        for path in sorted(self.intents_dir.glob("*.json")):
            try:
                intent = SubmissionIntent.from_dict(json.loads(path.read_text()))
            except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
                continue  # one being written: its submitter holds the lock, and finishes it
            try:
                check_private(path)
                problem = self._intent_problem(intent)
            except NotPrivate as refused:
                problem = str(refused)
            if problem is None:
                found.append(intent)
            else:
                print(f"ignoring submission record {path}: {problem}", file=sys.stderr, flush=True)
        return found

    def _intent_problem(self, intent: SubmissionIntent) -> str | None:
        results = self.requests_dir.parent.parent.resolve()  # the scheduler directory lies in the results tree
        if not SUBMISSION_ID.match(intent.submission_id) or not JOB_NAME.match(intent.job_name) \
                or not intent.job_name.endswith(f".{intent.submission_id}"):
            return f"submission id {intent.submission_id!r} or job name {intent.job_name!r} is not one it makes"
        if intent.array_id is not None and not intent.array_id.isdigit():
            return f"array id {intent.array_id!r} is not Slurm's"
        if outside := [c.cell_dir for c in intent.cells if not Path(c.cell_dir).resolve().is_relative_to(results)]:
            return f"cell directory {outside[0]} is outside the results tree {results}"
        return None

    def has_intents(self) -> bool:
        return any(path.suffix == ".json" for path in self.intents_dir.iterdir())

    def unsettled(self, cell_dir: Path) -> SubmissionIntent | None:
        """The unfinished submission that lists the cell, if any."""
        return next((intent for intent in self.intents() if intent.lists(cell_dir)), None)

    def settle(self, find_arrays: ArrayFinder, now: float) -> None:
        """Finish what killed submitters left: each unfinished intent's array, found by its
        name in one query for all of them, gets its cells' job.json; an intent Slurm has no
        array for, once SBATCH_SETTLE_S old, is dropped, and its cells are submitted anew
        by their launchers. Under the lock, so never while a submitter is at work.
        Raises SchedulerUnavailable (jobs/launch/slurm.py) when Slurm does not answer."""
        with self._locked():
            intents = self.intents()
            unknown = [intent for intent in intents if intent.array_id is None]
            found, complete = find_arrays([i.job_name for i in unknown], min(i.created_at for i in unknown)) \
                if unknown else ({}, True)
            for intent in intents:
                array_id = intent.array_id or found.get(intent.job_name)
                if array_id is not None:
                    dataclasses.replace(intent, array_id=array_id).write_job_records()
                elif not complete or now - intent.created_at < SBATCH_SETTLE_S:
                    continue
                else:  # never reached Slurm: nothing will read its pickles
                    for task in range(len(intent.cells)):
                        staged_pickle(Path(intent.folder), intent.submission_id, task).unlink(missing_ok=True)
                (self.intents_dir / f"{intent.submission_id}.json").unlink(missing_ok=True)


def write_intent(directory: Path, intent: SubmissionIntent, shared: bool = False) -> None:
    write_json_atomically(directory / f"{intent.submission_id}.json", dataclasses.asdict(intent), file_mode(shared))


def staged_pickle(folder: Path, submission_id: str, task: int) -> Path:
    """Where the array's task finds its pickle until it is moved to submitit's own name."""
    return folder / f"{submission_id}.{task}.pkl"


def take_staged_pickle(folder: Path, submission_id: str, array_id: str, task: int) -> Path:
    """Move the task's staged pickle to the name submitit's runner reads, unless the
    submitter, the task itself or another of its ranks already has; returns that name."""
    target = submitit.core.utils.JobPaths(folder, job_id=f"{array_id}_{task}").submitted_pickle
    if not target.exists():
        with contextlib.suppress(FileNotFoundError):
            os.replace(staged_pickle(folder, submission_id, task), target)
    return target


def array_task_command(python: str, folder: Path, submission_id: str) -> str:
    """What each task of the array runs: submitit's job runner, behind jobs/launch/array_task.py."""
    return " ".join([python, "-u -m jobs.launch.array_task", shlex.quote(str(folder)), submission_id])


def submit_array(batch: list[SubmissionRequest], intents_dir: Path, shared: bool = False,
                 ordinal: int = 0) -> list[SubmissionAnswer]:
    """Submit the requests (all of one shape) with one sbatch and record each cell's job,
    in the order the module's docstring gives."""
    from jobs.train.job import TrainingJob  # the training code, only where a job is submitted

    first = batch[0]
    submission_id = uuid.uuid4().hex[:12]
    folder = Path(first.folder).resolve()
    # submitit turns the executor parameters into sbatch options; its private executor and
    # _submit_command are used (as its own executor.batch() does) for a command of ours.
    auto = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=first.max_requeues)
    auto.update_parameters(**{**first.parameters, "name": f"{first.parameters['name']}.{submission_id}"})
    executor = auto._executor
    assert isinstance(executor, submitit.SlurmExecutor)
    intent = SubmissionIntent(submission_id=submission_id, job_name=executor.parameters["job_name"],
                              folder=str(folder), created_at=time.time(),
                              cells=[CellTask(str(Path(r.cell_dir).resolve()), r.measured_with) for r in batch])
    write_intent(intents_dir, intent, shared)
    kill_point("intent_recorded", ordinal)
    private_dir(folder, shared)
    for task, request in enumerate(batch):
        delayed = submitit.core.utils.DelayedSubmission(
            TrainingJob(**{**request.training, "grid_axes": tuple(request.training["grid_axes"])}))
        delayed.set_timeout(executor.parameters.get("time", 5), first.max_requeues)
        staged = staged_pickle(folder, submission_id, task)
        delayed.dump(staged)
        restrict_file(staged, shared)  # the task checks it before submitit unpickles it
    kill_point("pickles_dumped", ordinal)
    executor.parameters["map_count"] = len(batch)
    try:
        array = executor._submit_command(array_task_command(executor.python, folder, submission_id))
    except (FailedJobError, subprocess.CalledProcessError, OSError) as error:
        # The intent stays: settle() drops it once Slurm shows no such array.
        return [SubmissionAnswer(r.nonce, error=sbatch_message(error)) for r in batch]
    kill_point("sbatch_returned", ordinal)
    intent = dataclasses.replace(intent, array_id=str(array.job_id))
    write_intent(intents_dir, intent, shared)
    kill_point("array_recorded", ordinal)
    for task in range(len(batch)):
        take_staged_pickle(folder, submission_id, str(array.job_id), task)
    kill_point("pickles_moved", ordinal)
    intent.write_job_records(ordinal)
    (intents_dir / f"{submission_id}.json").unlink()
    return [SubmissionAnswer(r.nonce, job_id=intent.job_id(task), folder=str(folder))
            for task, r in enumerate(batch)]
