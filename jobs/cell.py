"""The cell directory, results/<study>/cells/<cell>/: its one owner.

Every other module (launcher, training job, status, analysis) reads and writes a
cell's files through this one, so the layout and the record formats live here only:

    metrics.jsonl    one JSON record per line: a MetaRecord at each (re)start, then an
                     EpochRecord per finished epoch; appended by rank 0 only
    checkpoint.pt    the last finished epoch's state (written by the training job)
    result.json      the training job's SummaryRecord, checked by the launcher and
    summary.json     published under this name: the cell's Snakemake output
    job.json         the JobRecord of the cell's current submitit job
    rendezvous.json  rank 0's rendezvous address (Horovod's server or DDP's store) (jobs/train/rendezvous.py)
    submitit/        submitit's scripts and per-task logs (unless submitit_root is set)

A run is never deleted: when a cell must run again (its parameters or measurement
settings changed, its summary was removed, or its files are damaged) the earlier
run's files move to results/<study>/superseded/<cell>.<UTC time>/, a cell directory
of its own that analysis/collect.py can still read.

Records carry ``version`` (RECORD_VERSION); readers accept older records, filling the
fields those lacked with None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

RECORD_VERSION = 2

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
RESULT_FILE = "result.json"
SUMMARY_FILE = "summary.json"
JOB_FILE = "job.json"
ACCOUNTING_FILE = "accounting.json"  # what Slurm's accounting says the job used (jobs/launch/accounting.py)
LAUNCHER_LOCK_FILE = ".launcher.lock"
SUBMITIT_DIR = "submitit"
DAMAGED_SUFFIX = ".damaged"
SUPERSEDED_DIR = "superseded"

FINISHED_STATUSES = ("complete", "diverged")

# What a job id in job.json may look like: a Slurm job or array task ("123", "123_4"), or a
# local job's process id. Anything else is never passed to a command or made into a path.
JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")


@contextlib.contextmanager
def replaced_atomically(path: Path, binary: bool = False, mode: int | None = None,
                        per_process: bool = False) -> Iterator[Any]:
    """A file to write that replaces `path` once written and flushed to disk: readers see
    the old file or the new one, never half of one. `mode`: its permissions whatever the
    umask (jobs/private.py); by default the umask decides. `per_process`: a temporary name
    of its own, for a file several processes replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if per_process else f".{path.name}.tmp")
    try:
        with open(tmp, "wb" if binary else "w") as out:
            if mode is not None:
                os.fchmod(out.fileno(), mode)
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A write that failed (disk full, quota, a file-size limit) leaves the old file and no
        # half-written one, which would only hold space the next write needs.
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomically(path: Path, record: dict[str, Any], mode: int | None = None) -> None:
    with replaced_atomically(path, mode=mode) as out:
        out.write(json.dumps(record, indent=2, allow_nan=False))


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


R = TypeVar("R", bound="Record")


@dataclass
class Record:
    """A JSON record with a type tag and a format version."""

    TYPE: ClassVar[str] = ""

    @classmethod
    def from_dict(cls: type[R], values: dict[str, Any]) -> R:
        """Known fields only; fields an older version lacked become their default (None)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {"type": self.TYPE, **values} if self.TYPE else values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)


@dataclass
class MetaRecord(Record):
    """Written by rank 0 at every start and restart of the training job."""

    TYPE: ClassVar[str] = "meta"
    study: str = ""
    cell: str = ""
    version: int = RECORD_VERSION
    world_size: int | None = None
    local_size: int | None = None
    nodes: int | None = None
    hosts: list[str] | None = None
    controller: str | None = None
    # The gradient exchange as it took effect: backend, controller, compression, bucket (fusion) MB.
    communication: dict[str, Any] | None = None
    threads_per_worker: int | None = None
    device: str | None = None
    job_id: str | None = None
    attempt: int | None = None
    resumed_from_epoch: int | None = None
    resumed_from_step: int | None = None  # the step inside epoch resumed_from_epoch + 1 (0: its start)
    startup_s: float | None = None
    compile_s: float | None = None  # torch.compile's warm-up, before the first epoch's clock
    time_limit_s: float | None = None  # the job's time limit (launcher.time_limit)
    memory_per_task_gb: float | None = None  # the memory each task asked for (slurm mem_gb / tasks per node)
    steps_per_epoch: int | None = None
    samples_per_epoch: int | None = None
    initial_val_loss: float | None = None
    # The gradient every step averages over the workers: parameters and bytes (the scaling model's M).
    parameters: int | None = None
    gradient_bytes: int | None = None
    # Floating-point operations of one training sample, forward and backward (3 x the forward's,
    # counted by torch.utils.flop_counter): throughput x this is the FLOP rate the run achieved.
    flops_per_sample: float | None = None
    # What the numbers were measured on: CPUs given, load average, GPU model, CUDA version.
    machine: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    params: dict[str, Any] | None = None


@dataclass
class EpochRecord(Record):
    """One finished epoch, in rank 0's clock.

    The epoch's wall time is split into parts that add up to epoch_time_s:
    steps_s (training steps, device synchronised at the end), validation_s,
    io_s (rank 0's checkpoint of this epoch and the log line of the previous one),
    wait_s (barriers and metric reductions: waiting for the other ranks) and
    other_s (bookkeeping between the timed parts). Throughput is samples / steps_s.
    train_time_s sums steps_s over the epochs so far: the clock time to accuracy
    reads; wall_time_s sums epoch_time_s.
    """

    TYPE: ClassVar[str] = "epoch"
    epoch: int = 0
    version: int = RECORD_VERSION
    steps_s: float | None = None
    validation_s: float | None = None
    io_s: float | None = None
    wait_s: float | None = None
    other_s: float | None = None
    slowest_steps_s: float | None = None  # the steps of the slowest rank (rank 0's include the last allreduce)
    epoch_time_s: float | None = None
    train_time_s: float | None = None
    wall_time_s: float | None = None
    steps: int | None = None
    samples: int | None = None
    samples_per_s: float | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    lr: float | None = None
    world_size: int | None = None
    load_average_1m: float | None = None  # rank 0's host at the end of the epoch: others' load skews timings
    # What the workers used (jobs/train/usage.py): CPU seconds over wall seconds x threads given,
    # summed over the ranks; the largest resident memory high-water mark of a rank; on GPUs, the
    # mean NVML utilisation (0 to 1) and the largest device memory in use, sampled at the epoch's end.
    cpu_efficiency: float | None = None
    max_rss_gb: float | None = None
    gpu_utilization: float | None = None
    gpu_memory_gb: float | None = None
    # The linear model's (w, b) at the end of the epoch (Lab 1); None for other models.
    weight: float | None = None
    bias: float | None = None
    # (w, b) after each update of the epoch, when the cell records them (record_updates).
    updates: list[list[float]] | None = None
    # The gradient noise scale (jobs/train/noise.py), cells of 2+ workers: the epoch's mean squared
    # norm of a worker's local gradient and of the averaged one, the unbiased estimates of |G|^2 and
    # tr(Sigma) made from them, and B_simple = tr(Sigma) / |G|^2 (None unless both are positive).
    grad_sq_norm_local: float | None = None
    grad_sq_norm_averaged: float | None = None
    grad_sq_norm: float | None = None
    grad_trace: float | None = None
    noise_scale: float | None = None


TIME_PARTS = ("steps_s", "validation_s", "io_s", "wait_s", "other_s")
"""The named parts of an epoch's wall time; they add up to epoch_time_s."""


@dataclass
class SummaryRecord(Record):
    """The training job's result: result.json, published by the launcher as summary.json."""

    study: str = ""
    cell: str = ""
    status: str = ""
    version: int = RECORD_VERSION
    stop_reason: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    grid_axes: list[str] = field(default_factory=list)
    world_size: int | None = None
    hosts: list[str] | None = None
    epochs_run: int | None = None
    train_time_s: float | None = None
    validation_time_s: float | None = None
    io_time_s: float | None = None
    wait_time_s: float | None = None
    wall_time_training_s: float | None = None
    startup_s: float | None = None
    best_val_accuracy: float | None = None
    final_val_accuracy: float | None = None
    job_id: str | None = None
    restarts: int | None = None
    queue_time_s: float | None = None
    wall_time_s: float | None = None
    longest_attempt_s: float | None = None  # the longest a job attempt ran, start to stop: against the time limit
    measured_with: dict[str, Any] | None = None  # added by the launcher when it publishes the result


@dataclass(frozen=True)
class JobRecord:
    """What job.json says about the cell's current job."""

    job_id: str
    executor: str
    submitted_at: float
    folder: str = ""  # submitit's folder: the job's scripts and per-task logs
    collected: bool = False  # its result was published as summary.json
    # The launcher settings that change what is measured (threads, placement, controller);
    # None in records written before they were recorded.
    measured_with: dict[str, Any] | None = None


@dataclass
class MetricsLog:
    """What could be read from one metrics.jsonl: records as plain dicts, for tables."""

    metas: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None


STARTUP_EPOCH = "startup_epoch"
"""Flag set on an epoch record that directly follows a meta line (a start or resume)."""


def parse_record(line: str) -> tuple[dict[str, Any], str | None]:
    """(record, problem) of one metrics.jsonl line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return {}, "not valid JSON (truncated or corrupt)"
    if not isinstance(record, dict) or record.get("type") not in (MetaRecord.TYPE, EpochRecord.TYPE):
        return {}, "not a meta or epoch record"
    epoch = record.get("epoch")
    if record["type"] == EpochRecord.TYPE and not (isinstance(epoch, int) and not isinstance(epoch, bool)):
        return {}, "epoch record without an integer epoch"
    return record, None


class CellDir:
    """One cell's directory and every file in it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CellDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def result(self) -> Path:
        return self.path / RESULT_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def job(self) -> Path:
        return self.path / JOB_FILE

    @property
    def accounting(self) -> Path:
        return self.path / ACCOUNTING_FILE

    @property
    def launcher_lock(self) -> Path:
        return self.path / LAUNCHER_LOCK_FILE

    @property
    def default_submitit_folder(self) -> Path:
        return self.path / SUBMITIT_DIR

    @property
    def study_submitit_folder(self) -> Path:
        """results/<study>/submitit: where the study's Slurm job arrays keep their files."""
        return self.path.parent.parent / SUBMITIT_DIR

    # ---- metrics.jsonl ----------------------------------------------------------

    def append(self, record: Record) -> None:
        """One line, flushed to disk before returning: the launcher tails this file."""
        with self.metrics.open("a") as out:
            out.write(record.to_json() + "\n")
            out.flush()
            os.fsync(out.fileno())

    def trim_metrics(self, epochs_done: int, last_epoch: EpochRecord | None, fresh: bool | None = None) -> None:
        """Keep the records of the epochs a checkpoint holds, and only those; a fresh start
        (by default: no epoch done) keeps none, a resume inside the first epoch its starts.

        ``last_epoch`` is the checkpoint's own record of its epoch, appended when the
        job stopped between saving the checkpoint and logging that epoch."""
        if (epochs_done == 0 if fresh is None else fresh) or not self.metrics.exists():
            self.metrics.write_text("")
            return
        kept, epochs = [], set()
        for line in self.metrics.read_text().splitlines():
            record, problem = parse_record(line)
            if problem is not None:
                continue  # a line cut short by the stop we are resuming from
            if record["type"] != EpochRecord.TYPE or record["epoch"] <= epochs_done:
                kept.append(line)
                epochs.add(record.get("epoch"))
        if epochs_done not in epochs and last_epoch is not None:
            kept.append(last_epoch.to_json())
        with replaced_atomically(self.metrics) as out:
            out.write("".join(line + "\n" for line in kept))

    def read_metrics(self) -> MetricsLog:
        """Every valid line, noting the first bad one.

        Epochs come in epoch order, the last record of a repeated epoch winning; an
        epoch that directly follows a meta line (a start or a resume) is flagged
        STARTUP_EPOCH."""
        log = MetricsLog()
        try:
            text = self.metrics.read_text(encoding="utf-8")
        except FileNotFoundError:
            log.problem = f"{METRICS_FILE} missing"
            return log
        except (OSError, UnicodeDecodeError) as error:
            log.problem = f"{METRICS_FILE} unreadable: {error}"
            return log
        by_epoch: dict[int, dict[str, Any]] = {}
        after_meta = True
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            record, problem = parse_record(line)
            if problem is not None:
                log.problem = log.problem or f"{METRICS_FILE} line {number}: {problem}"
                continue
            if record["type"] == MetaRecord.TYPE:
                log.metas.append(record)
                after_meta = True
            else:
                by_epoch[record["epoch"]] = {**record, STARTUP_EPOCH: after_meta}
                after_meta = False
        log.epochs = [by_epoch[number] for number in sorted(by_epoch)]
        if log.problem is None and not log.metas and log.epochs:
            log.problem = f"{METRICS_FILE} has no meta line"
        return log

    def new_epoch_records(self, seen: int) -> tuple[list[EpochRecord], int]:
        """Epoch records appended since ``seen`` complete lines were read, and the new count."""
        try:
            text = self.metrics.read_text()
        except FileNotFoundError:
            return [], seen
        lines = text.splitlines()
        complete = lines if text.endswith("\n") else lines[:-1]
        if len(complete) < seen:  # a resumed job rewrote the file
            seen = 0
        records = []
        for line in complete[seen:]:
            record, problem = parse_record(line)
            if problem is None and record["type"] == EpochRecord.TYPE:
                records.append(EpochRecord.from_dict(record))
        return records, len(complete)

    def last_epoch(self) -> EpochRecord | None:
        records, _ = self.new_epoch_records(0)
        return records[-1] if records else None

    # ---- result.json and summary.json -------------------------------------------

    def write_result(self, summary: SummaryRecord) -> None:
        write_json_atomically(self.result, summary.to_dict())

    def read_result(self) -> dict[str, Any] | None:
        try:
            result = json.loads(self.result.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return result if isinstance(result, dict) else None

    def write_accounting(self, usage: dict[str, Any]) -> None:
        write_json_atomically(self.accounting, usage)

    def read_accounting(self, job_id: Any) -> dict[str, Any] | None:
        """The accounting record of this job (None when there is none, or it is another job's)."""
        try:
            usage = json.loads(self.accounting.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return usage if isinstance(usage, dict) and str(usage.get("job_id")) == str(job_id) else None

    def publish_summary(self, result: dict[str, Any]) -> None:
        write_json_atomically(self.summary, result)

    def read_summary(self) -> tuple[dict[str, Any] | None, str | None]:
        """(summary, problem): (None, None) while the cell has not finished."""
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return None, f"{SUMMARY_FILE} unreadable: {error}"
        if not isinstance(summary, dict):
            return None, f"{SUMMARY_FILE} is not a JSON object"
        if summary.get("status") not in FINISHED_STATUSES:
            return summary, f"{SUMMARY_FILE} has unknown status {summary.get('status')!r}"
        return summary, None

    # ---- damage and superseded runs -----------------------------------------------

    def damaged_summaries(self) -> list[Path]:
        """Summaries set aside as damaged and not yet moved aside with their run."""
        return sorted(self.path.glob(SUMMARY_FILE + DAMAGED_SUFFIX + "*"))

    def next_damaged_summary(self) -> Path:
        """Where the damaged summary goes: summary.json.damaged, or .damaged.2, ... if one is
        already there (a run stopped before its launcher moved the earlier one aside)."""
        path, number = self.path / (SUMMARY_FILE + DAMAGED_SUFFIX), 1
        while path.exists():
            number += 1
            path = self.path / f"{SUMMARY_FILE}{DAMAGED_SUFFIX}.{number}"
        return path

    def damage(self) -> str | None:
        """Why a finished cell's results cannot be trusted (unreadable summary or metrics), or None."""
        if not self.summary.exists():
            return None
        _, problem = self.read_summary()
        if problem is None:
            log = self.read_metrics()
            problem = log.problem
            if problem is None and not log.epochs:
                problem = f"{METRICS_FILE} has no epoch records"
        return problem

    def set_aside_damaged_summary(self, destination: Path | None = None) -> Path:
        """Renamed, not deleted: the cell counts as unfinished, so the next run trains it again."""
        destination = destination or self.next_damaged_summary()
        if destination.exists():
            raise FileExistsError(f"{destination} exists: a damaged summary is never overwritten")
        os.replace(self.summary, destination)
        return destination

    def has_run_files(self) -> bool:
        return any(entry.name != LAUNCHER_LOCK_FILE for entry in self.path.iterdir()) if self.path.is_dir() else False

    def last_params(self) -> dict[str, Any] | None:
        """The parameters of the run on disk: its result, else its last meta line."""
        result = self.read_result()
        if result is not None and isinstance(result.get("params"), dict):
            return result["params"]
        for meta in reversed(self.read_metrics().metas):
            if isinstance(meta.get("params"), dict):
                return meta["params"]
        return None

    def move_run_aside(self, now: float) -> Path:
        """Move every file of the run on disk (all but the launcher's lock, held by the caller)
        to results/<study>/superseded/<cell>.<UTC time>/ and return that directory."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        destination = self.path.parent.parent / SUPERSEDED_DIR / f"{self.name}.{stamp}"
        suffix = 1
        while destination.exists():
            suffix += 1
            destination = destination.with_name(f"{self.name}.{stamp}.{suffix}")
        destination.mkdir(parents=True)
        for entry in self.path.iterdir():
            if entry.name != LAUNCHER_LOCK_FILE:
                os.replace(entry, destination / entry.name)
        # A collected run whose summary.json was removed still has its result: make the
        # superseded directory a complete cell again.
        moved = CellDir(destination)
        if not moved.summary.exists() and not moved.damaged_summaries() and moved.result.exists():
            shutil.copyfile(moved.result, moved.summary)
        return destination

    # ---- job.json ---------------------------------------------------------------

    def read_job(self) -> JobRecord | None:
        """The record, parsed strictly: a job id like Slurm's, a known executor; else None."""
        try:
            data = json.loads(self.job.read_text())
            measured_with = data.get("measured_with")
            record = JobRecord(str(data["job_id"]), data["executor"], float(data["submitted_at"]),
                               str(data.get("folder", "")), bool(data.get("collected", False)),
                               measured_with if isinstance(measured_with, dict) else None)
        except (FileNotFoundError, KeyError, ValueError, TypeError, AttributeError):
            return None
        if not JOB_ID.match(record.job_id) or record.executor not in ("local", "slurm"):
            print(f"ignoring {self.job}: job id {record.job_id!r} or executor {record.executor!r} is not one "
                  "this tool writes", file=sys.stderr, flush=True)
            return None
        return record

    def write_job(self, record: JobRecord) -> None:
        write_json_atomically(self.job, dataclasses.asdict(record))

    def submitted_at(self, default: float) -> float:
        record = self.read_job()
        return record.submitted_at if record is not None else default
