"""What Slurm's accounting says a finished job used, as `seff` reads it: CPU time against the
cores and the time it had, the largest resident memory of a task, and the GPU TRES where the
site gathers them (AcctGatherGpuType: `gres/gpuutil`, `gres/gpumem` in TRESUsageIn*).

The shared view (jobs/launch/scheduler.py) asks in its refresh's one sacct, for every job
watched and every job asked about since the last, with the job steps (no `-X`): MaxRSS and the
TRES usage live in the step records, sampled every JobAcctGatherFrequency seconds. The
allocation lines give the jobs' states as `sacct -X` would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from jobs.launch.slurm import JobState, array_ids, failure, job_ids_of, run_query

USAGE_FIELDS = "JobID,State,Elapsed,TotalCPU,AllocCPUS,MaxRSS,Timelimit,TRESUsageInAve,TRESUsageInMax,NodeList,Reason"
_UNITS = {"": 1.0, "K": 1024.0, "M": 1024.0**2, "G": 1024.0**3, "T": 1024.0**4, "P": 1024.0**5}
_SIZE = re.compile(r"^([0-9.]+)([KMGTP]?)$")


def duration_s(text: str) -> float | None:
    """Slurm's [D-]HH:MM:SS[.mmm], MM:SS[.mmm] or SS as seconds; None for UNLIMITED, empty or unparsable."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    try:
        seconds = sum(float(part) * 60**power for power, part in enumerate(reversed(parts)))
        return seconds + 86400 * int(days or 0) if clock and len(parts) <= 3 else None
    except ValueError:
        return None


def size_bytes(text: str) -> float | None:
    """Slurm's 3388K, 2158M, 1.5G (binary units) as bytes; None when empty or unparsable."""
    match = _SIZE.match(text.strip())
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


def tres(text: str) -> dict[str, str]:
    """"cpu=00:00:01,gres/gpumem=2158M,gres/gpuutil=99,mem=1084K" as a dict."""
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


@dataclass(frozen=True)
class JobUsage:
    """One job's use of what it was given, from its allocation and step records."""

    job_id: str
    state: str
    elapsed_s: float | None
    total_cpu_s: float | None  # user + system CPU of every step
    alloc_cpus: int | None
    time_limit_s: float | None  # None: no limit
    max_rss_bytes: float | None  # the largest resident memory of any task of any step
    gpu_utilization: float | None  # 0-1: the steps' mean GPU utilisation (gres/gpuutil), where recorded
    gpu_memory_bytes: float | None  # the largest GPU memory used (gres/gpumem), where recorded

    @property
    def cpu_efficiency(self) -> float | None:
        """TotalCPU / (Elapsed x AllocCPUS), as seff computes it."""
        if self.total_cpu_s is None or not self.elapsed_s or not self.alloc_cpus:
            return None
        return self.total_cpu_s / (self.elapsed_s * self.alloc_cpus)

    @property
    def time_limit_used_fraction(self) -> float | None:
        return self.elapsed_s / self.time_limit_s if self.elapsed_s is not None and self.time_limit_s else None

    def record(self) -> dict[str, Any]:
        """As written into the cell's accounting.json (analysis/collect.py reads it)."""
        return {**asdict(self), "cpu_efficiency": self.cpu_efficiency,
                "time_limit_used_fraction": self.time_limit_used_fraction}


def _largest(values: Sequence[float | None]) -> float | None:
    known = [value for value in values if value is not None and math.isfinite(value)]
    return max(known) if known else None


def parse_usage(output: str) -> dict[str, JobUsage]:
    """Parse `sacct -n -P -o USAGE_FIELDS`: each job's allocation line (JobID without a step) and
    its step lines (JobID.batch, .extern, .0, ...) into one JobUsage per job."""
    allocations: dict[str, list[str]] = {}
    steps: dict[str, list[list[str]]] = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) < 9:
            continue
        job_id, _, step = fields[0].partition(".")
        if step:
            steps.setdefault(job_id, []).append(fields)
        else:
            allocations[job_id] = fields
    usage = {}
    for job_id, (_, state, elapsed, total_cpu, cpus, _, limit, *_) in allocations.items():
        step_lines = steps.get(job_id, [])
        utilization = [float(tres(fields[7])["gres/gpuutil"]) / 100 for fields in step_lines
                       if "gres/gpuutil" in tres(fields[7])]
        usage[job_id] = JobUsage(
            job_id=job_id, state=state.split()[0] if state else "UNKNOWN", elapsed_s=duration_s(elapsed),
            total_cpu_s=duration_s(total_cpu), alloc_cpus=int(cpus) if cpus.isdigit() else None,
            time_limit_s=duration_s(limit),
            max_rss_bytes=_largest([size_bytes(fields[5]) for fields in step_lines]),
            gpu_utilization=_largest(utilization),
            gpu_memory_bytes=_largest([size_bytes(tres(fields[8]).get("gres/gpumem", "")) for fields in step_lines]))
    return usage


def parse_states(output: str) -> dict[str, JobState]:
    """The jobs' states from the allocation lines of `sacct -n -P -o USAGE_FIELDS`."""
    states = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) < 11 or "." in fields[0]:
            continue
        state, elapsed, nodes, reason = fields[1], fields[2], fields[9], fields[10]
        for job_id in job_ids_of(fields[0]):
            states[job_id] = JobState(job_id, state.split()[0] if state else "UNKNOWN", elapsed, nodes, reason)
    return states


def query_accounting(job_ids: list[str]) -> tuple[dict[str, JobState], dict[str, JobUsage]]:
    """One sacct call for all the given jobs, steps included: their states and what they used."""
    if not job_ids:
        return {}, {}
    result = run_query(["sacct", "-n", "-P", "-o", USAGE_FIELDS, "-j", ",".join(array_ids(job_ids))])
    if result.returncode != 0:
        raise failure(result)
    return parse_states(result.stdout), parse_usage(result.stdout)
