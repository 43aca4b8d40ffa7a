"""Slurm's accounting of what a job used (jobs/launch/accounting.py), from sacct output in the formats
Slurm's documentation gives, GPU TRES included; and how runs.csv takes it (analysis/collect.py)."""

from __future__ import annotations

import pytest

from analysis.collect import accounted_usage
from jobs.launch.accounting import duration_s, parse_states, parse_usage, size_bytes, tres


@pytest.mark.parametrize(("text", "seconds"), [
    ("00:06.873", 6.873), ("01:00:00", 3600.0), ("1-02:03:04", 93784.0), ("59", 59.0), ("12:30", 750.0),
    ("UNLIMITED", None), ("", None), ("Partition_Limit", None)])
def test_slurm_durations(text, seconds):
    assert duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(("text", "size"), [
    ("3388K", 3388 * 1024), ("2158M", 2158 * 2**20), ("1.5G", 1.5 * 2**30), ("512", 512), ("", None), ("n/a", None)])
def test_slurm_sizes(text, size):
    assert size_bytes(text) == size


# sacct -n -P -o JobID,State,Elapsed,TotalCPU,AllocCPUS,MaxRSS,Timelimit,TRESUsageInAve,TRESUsageInMax,NodeList,Reason:
# an array task on GPUs at a site that gathers GPU TRES (AcctGatherGpuType), and a CPU-only job.
GPU_TRES_AVE = "cpu=00:01:10,energy=0,fs/disk=4096,gres/gpumem=1800M,gres/gpuutil={util},mem={mem},pages=0,vmem=0"
SACCT = "\n".join([
    "41_3|COMPLETED|00:02:00|03:00.500|4||01:00:00|||gpu[01-02]|None",
    "41_3.batch|COMPLETED|00:02:00|00:00.500|4|3388K||cpu=00:00:00,mem=3388K|cpu=00:00:00,mem=3388K|gpu01|",
    "41_3.extern|COMPLETED|00:02:00|00:00:00|4|1000K||cpu=00:00:00,mem=1000K|cpu=00:00:00,mem=1000K|gpu[01-02]|",
    "41_3.0|COMPLETED|00:01:50|03:00.000|2|1.5G||" + GPU_TRES_AVE.format(util=87, mem="1.2G") + "|"
    + GPU_TRES_AVE.format(util=99, mem="1.5G").replace("1800M", "2158M") + "|gpu[01-02]|",
    "42|TIMEOUT|1-00:00:10|2-00:00:20|2||1-00:00:00|||cpu07|None",
    "42.batch|CANCELLED by 0|1-00:00:10|2-00:00:20|2|512M||cpu=2-00:00:20,mem=512M|cpu=2-00:00:20,mem=512M|cpu07|",
    "43|RUNNING|00:00:05|00:00:00|1||UNLIMITED|||cpu08|None",
    "44_[2-3]|PENDING|00:00:00|00:00:00|1||01:00:00|||None assigned|Priority",
])


def test_jobs_usage_from_their_allocation_and_step_records():
    usage = parse_usage(SACCT)
    assert set(usage) == {"41_3", "42", "43", "44_[2-3]"}
    gpu = usage["41_3"]
    assert (gpu.state, gpu.elapsed_s, gpu.total_cpu_s, gpu.alloc_cpus, gpu.time_limit_s) == (
        "COMPLETED", 120.0, 180.5, 4, 3600.0)
    assert gpu.max_rss_bytes == 1.5 * 2**30  # the largest of the steps', not the allocation line's empty field
    assert gpu.gpu_utilization == pytest.approx(0.87)  # TRESUsageInAve's gres/gpuutil, in percent
    assert gpu.gpu_memory_bytes == 2158 * 2**20  # TRESUsageInMax's gres/gpumem
    assert gpu.cpu_efficiency == pytest.approx(180.5 / (120 * 4))
    assert gpu.time_limit_used_fraction == pytest.approx(120 / 3600)
    cpu = usage["42"]
    assert cpu.state == "TIMEOUT" and cpu.max_rss_bytes == 512 * 2**20
    assert cpu.gpu_utilization is None and cpu.gpu_memory_bytes is None
    assert cpu.cpu_efficiency == pytest.approx((2 * 86400 + 20) / ((86400 + 10) * 2))
    assert cpu.time_limit_used_fraction == pytest.approx((86400 + 10) / 86400)
    running = usage["43"]
    assert running.time_limit_s is None and running.time_limit_used_fraction is None
    assert running.max_rss_bytes is None and running.cpu_efficiency == 0.0
    assert tres("gres/gpuutil=5,mem=1K") == {"gres/gpuutil": "5", "mem": "1K"}


def test_runs_table_takes_slurms_account_where_it_has_one():
    record = parse_usage(SACCT)["41_3"].record()
    columns = accounted_usage(record, memory_per_task_gb=6.0)
    assert columns == {"cpu_efficiency": pytest.approx(180.5 / 480), "max_rss_gb": 1.5,
                       "memory_used_fraction": pytest.approx(1.5 / 6), "time_limit_used_fraction": pytest.approx(1 / 30),
                       "gpu_utilization": pytest.approx(0.87), "gpu_memory_gb": pytest.approx(2158 / 1024),
                       "usage_source": "sacct"}
    without = accounted_usage(parse_usage(SACCT)["43"].record(), memory_per_task_gb=None)
    assert without == {"cpu_efficiency": 0.0, "usage_source": "sacct"}  # the job's own readings stay for the rest
    # sacct shows a requeued job's last attempt only: the job's own longest attempt wins where longer.
    assert accounted_usage(record, 6.0, own_time_limit_fraction=0.9)["time_limit_used_fraction"] == 0.9
    assert accounted_usage(record, 6.0, own_time_limit_fraction=0.01)["time_limit_used_fraction"] == \
        pytest.approx(1 / 30)


def test_the_same_sacct_gives_the_jobs_states_as_sacct_x_would():
    states = parse_states(SACCT)
    assert {job_id: state.state for job_id, state in states.items()} == {
        "41_3": "COMPLETED", "42": "TIMEOUT", "43": "RUNNING", "44_2": "PENDING", "44_3": "PENDING"}
    assert (states["41_3"].nodes, states["44_2"].reason, states["42"].elapsed) == ("gpu[01-02]", "Priority", "1-00:00:10")
