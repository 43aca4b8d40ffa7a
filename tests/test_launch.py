"""The launcher's bookkeeping: which result belongs to which job, progress, root causes."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import submitit

from jobs.cell import CellDir, JobRecord
from jobs.launch.launcher import JobWatch, SchedulerSilent, collect_result, job_paths, rerun_reason, root_failure
from jobs.launch.scheduler import SharedSlurmView
from jobs.launch.slurm import array_ids, arrays_by_name, job_ids_of, parse_sacct
from jobs.launch.submission import (
    GATHER_MAX_S,
    GATHER_QUIET_S,
    SBATCH_SETTLE_S,
    CellTask,
    SubmissionIntent,
    SubmissionQueue,
    SubmissionRequest,
    staged_pickle,
    take_staged_pickle,
    write_intent,
)
from jobs.plan.params import LauncherSettings, TrainParams


def write_result(cell_dir, job_id, params):
    (cell_dir / "result.json").write_text(json.dumps({"job_id": job_id, "params": params.to_dict(),
                                                      "status": "complete"}))


def test_result_is_published_only_for_its_own_job_and_parameters(tmp_path):
    params = TrainParams(batch_size=8)
    record = JobRecord("17", "slurm", 0.0)
    write_result(tmp_path, "16", params)
    assert collect_result(tmp_path, record, params) is None
    write_result(tmp_path, "17", TrainParams(batch_size=9))
    assert collect_result(tmp_path, record, params) is None
    assert not (tmp_path / "summary.json").exists()
    write_result(tmp_path, "17", params)
    assert collect_result(tmp_path, record, params)["status"] == "complete"
    assert json.loads((tmp_path / "summary.json").read_text())["job_id"] == "17"
    assert CellDir(tmp_path).read_job() == JobRecord("17", "slurm", 0.0, collected=True)


def finished_cell(tmp_path, params, job_id="17", measured_with=None):
    cell_dir = tmp_path / "results" / "study" / "cells" / "bs8-gpus1"
    cell_dir.mkdir(parents=True)
    cell = CellDir(cell_dir)
    meta = {"type": "meta", "params": params.to_dict()}
    (cell_dir / "metrics.jsonl").write_text(json.dumps(meta) + "\n" + json.dumps({"type": "epoch", "epoch": 1}) + "\n")
    (cell_dir / "checkpoint.pt").write_text("weights")
    (cell_dir / ".launcher.lock").write_text("")
    write_result(cell_dir, job_id, params)
    cell.write_job(JobRecord(job_id, "local", 0.0, collected=True, measured_with=measured_with))
    return cell


def test_a_rerun_moves_the_finished_run_aside_whole_never_deleting_it(tmp_path):
    params = TrainParams(batch_size=8)
    cell = finished_cell(tmp_path, params)
    reason = rerun_reason(cell, cell.read_job(), params, {"threads_per_worker": 1})
    assert reason is not None and "runs it again" in reason
    moved = cell.move_run_aside(now=0.0)
    assert moved == tmp_path / "results" / "study" / "superseded" / "bs8-gpus1.19700101T000000Z"
    assert sorted(p.name for p in cell.path.iterdir()) == [".launcher.lock"]  # the caller's lock stays
    assert sorted(p.name for p in moved.iterdir()) == ["checkpoint.pt", "job.json", "metrics.jsonl", "result.json",
                                                         "summary.json"]
    # Snakemake had removed summary.json before the rerun: the moved run gets it back from its result.
    assert json.loads((moved / "summary.json").read_text())["job_id"] == "17"
    assert cell.move_run_aside(now=0.0).name == "bs8-gpus1.19700101T000000Z.2"  # never over an earlier one


def test_rerun_reason_names_what_changed(tmp_path):
    old = TrainParams(batch_size=8, epochs=8)
    cell = finished_cell(tmp_path, old, measured_with={"threads_per_worker": 1, "nodes": 1})
    new = TrainParams(batch_size=8, epochs=10)
    assert rerun_reason(cell, cell.read_job(), new, {"threads_per_worker": 1, "nodes": 1}) == \
        "parameters changed (epochs 8 -> 10)"
    assert rerun_reason(cell, cell.read_job(), old, {"threads_per_worker": 2, "nodes": 1}) == \
        "measurement settings changed (threads_per_worker 1 -> 2)"


def test_the_files_of_a_job_still_starting_are_not_judged_unreadable(tmp_path):
    """A job starting afresh empties metrics.jsonl before its first line: a rerun asking then, while the
    job runs, reattaches; the same files from a job that has ended are set aside."""
    cell = CellDir(tmp_path / "cell")
    cell.path.mkdir()
    cell.write_job(JobRecord("63_0", "slurm", 0.0, measured_with={"threads_per_worker": 1}))
    cell.metrics.write_text("")
    params = TrainParams(batch_size=8)
    assert rerun_reason(cell, cell.read_job(), params, {"threads_per_worker": 1}, running=True) is None
    assert rerun_reason(cell, cell.read_job(), params, {"threads_per_worker": 1}) == "its earlier files are unreadable"


def test_an_unfinished_run_with_the_same_settings_is_resumed_not_moved(tmp_path):
    params = TrainParams(batch_size=8)
    cell = finished_cell(tmp_path, params, measured_with={"threads_per_worker": 1})
    cell.result.unlink()
    cell.write_job(JobRecord("18", "local", 0.0, measured_with={"threads_per_worker": 1}))
    assert rerun_reason(cell, cell.read_job(), params, {"threads_per_worker": 1}) is None
    assert rerun_reason(CellDir(tmp_path / "empty"), None, params, {}) is None


def test_damage_is_an_unreadable_summary_or_metrics_of_a_finished_cell(tmp_path):
    params = TrainParams(batch_size=8)
    cell = finished_cell(tmp_path, params)
    assert cell.damage() is None  # not finished: no summary.json yet
    cell.publish_summary({"status": "complete", "params": params.to_dict()})
    assert cell.damage() is None
    with cell.metrics.open("a") as log:
        log.write("{garbage\n")
    assert "line 3" in cell.damage()
    first = cell.set_aside_damaged_summary()
    assert not cell.summary.exists() and first.name == "summary.json.damaged"
    assert rerun_reason(cell, cell.read_job(), params, {}) == "its results were damaged"
    # Damaged again before the launcher moved the first aside: both kept, none overwritten.
    cell.publish_summary({"status": "complete", "params": params.to_dict()})
    second = cell.set_aside_damaged_summary()
    assert second.name == "summary.json.damaged.2" and cell.damaged_summaries() == [first, second]
    cell.publish_summary({"status": "complete", "params": params.to_dict()})
    with pytest.raises(FileExistsError):
        cell.set_aside_damaged_summary(first)


def test_progress_reads_only_complete_new_epoch_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "meta"}\n{"type": "epoch", "epoch": 1}\n{"type": "ep')
    records, seen = CellDir(tmp_path).new_epoch_records(0)
    assert [r.epoch for r in records] == [1] and seen == 2
    path.write_text('{"type": "meta"}\n{"type": "epoch", "epoch": 1}\n{"type": "epoch", "epoch": 2}\n')
    records, seen = CellDir(tmp_path).new_epoch_records(seen)
    assert [r.epoch for r in records] == [2] and seen == 3


def test_root_failure_prefers_the_rank_that_raised_over_horovod_shutdown(tmp_path):
    folder = tmp_path / "submitit"
    folder.mkdir()
    record = JobRecord("5", "local", 0.0)
    outcomes = {0: ("error", "Traceback...\nHorovodInternalError: Horovod has been shut down. ..."),
                1: ("error", "Traceback...\nRuntimeError: rank 1 fails on purpose")}
    for task, outcome in outcomes.items():
        submitit.core.utils.cloudpickle_dump(outcome, folder / f"5_{task}_result.pkl")
    reason, log = root_failure(tmp_path, record, num_tasks=2)
    assert reason == "RuntimeError: rank 1 fails on purpose"
    assert log == folder / "5_1_log.err"
    assert root_failure(tmp_path, JobRecord("6", "local", 0.0), num_tasks=2) is None


def test_a_job_record_names_the_submitit_folder_its_logs_are_in(tmp_path):
    cell_dir = tmp_path / "results" / "study" / "cells" / "bs8-gpus2"
    assert LauncherSettings().submitit_folder(cell_dir, "study", "bs8-gpus2") == cell_dir / "submitit"
    elsewhere = LauncherSettings(submitit_root=str(tmp_path / "logs")).submitit_folder(cell_dir, "study", "bs8-gpus2")
    assert elsewhere == tmp_path / "logs" / "study" / "bs8-gpus2"
    cell_dir.mkdir(parents=True)
    cell = CellDir(cell_dir)
    cell.write_job(JobRecord("9", "slurm", 0.0, folder=str(elsewhere)))
    assert job_paths(cell, cell.read_job(), task=1).stderr == elsewhere / "9_1_log.err"
    # A record without a folder (written before the setting existed) means the cell's own.
    assert job_paths(cell, JobRecord("9", "slurm", 0.0)).stderr == cell_dir / "submitit" / "9_0_log.err"
    # On Slurm the study's cells share job arrays, and so one folder: the task's files bear its id.
    on_slurm = LauncherSettings(executor="slurm").submitit_folder(cell_dir, "study", "bs8-gpus2")
    assert on_slurm == tmp_path / "results" / "study" / "submitit"
    assert LauncherSettings(executor="slurm", submitit_root=str(tmp_path / "logs")).submitit_folder(
        cell_dir, "study", "bs8-gpus2") == tmp_path / "logs" / "study"
    assert job_paths(cell, JobRecord("31_4", "slurm", 0.0, folder=str(on_slurm)), task=1).stderr == \
        on_slurm / "31_4_1_log.err"


def test_sacct_parsing():
    text = "12|RUNNING|00:01:02|node[1-2]|None\n13|CANCELLED by 0|00:00:05|node1|None\n14|PENDING|00:00:00|None assigned|Priority\n"
    states = parse_sacct(text)
    assert states["12"].active and states["12"].nodes == "node[1-2]"
    assert states["13"].state == "CANCELLED" and not states["13"].active
    assert states["14"].active and states["14"].reason == "Priority"


def test_the_tasks_of_a_job_array_not_yet_started_share_one_line_of_sacct():
    text = "30_0|COMPLETED|00:00:09|node1|None\n30_[2-4,7,9-13:2%256]|PENDING|00:00:00|None assigned|Resources\n"
    states = parse_sacct(text)
    expected = ["30_0", *(f"30_{task}" for task in (2, 3, 4, 7, 9, 11, 13))]
    assert sorted(states) == sorted(expected)
    assert not states["30_0"].active
    assert all(states[job_id].active and states[job_id].reason == "Resources" for job_id in expected[1:])
    assert job_ids_of("30_[5]") == ["30_5"] and job_ids_of("41") == ["41"]
    # Slurm tells a pending task only through its array, so the array is what is asked for.
    assert array_ids(["30_7", "30_2", "41", "52_0"]) == ["30", "41", "52"]


def a_request(cell_dir: Path, **fields) -> SubmissionRequest:
    defaults = {"folder": str(cell_dir.parent / "submitit"), "parameters": {"nodes": 1}, "max_requeues": 3,
                "training": {}, "measured_with": {}}
    return SubmissionRequest(cell_dir=str(cell_dir), **(defaults | fields))


def test_a_queued_cell_is_withdrawn_or_answered_never_both(tmp_path):
    queue = SubmissionQueue(tmp_path / "scheduler")
    first = a_request(tmp_path / "bs8-gpus1")
    queue.request(first)
    assert [r.nonce for r in queue.pending()] == [first.nonce]
    # The cell's next launcher (its last one died) replaces the request rather than adding one.
    second = a_request(tmp_path / "bs8-gpus1")
    queue.request(second)
    assert [r.nonce for r in queue.pending()] == [second.nonce]
    assert not queue.withdraw(first)  # not the pending one: nothing taken back
    assert queue.withdraw(second) and queue.pending() == []
    assert not queue.withdraw(second)  # gone (as when it was submitted meanwhile)
    assert queue.answer(second) is None


def test_a_request_whose_launcher_died_is_dropped_not_submitted(tmp_path):
    queue = SubmissionQueue(tmp_path / "scheduler")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    queue.request(a_request(tmp_path / "bs8-gpus1", pid=gone.pid))
    assert queue.pending()[0].abandoned() and not a_request(tmp_path / "bs8-gpus2").abandoned()
    assert queue.submit_oldest_shape() == 0  # no sbatch: the only request was abandoned
    assert queue.pending() == []


def test_a_burst_of_requests_is_gathered_into_one_array(tmp_path):
    queue = SubmissionQueue(tmp_path / "scheduler")
    now = time.time()
    queue.request(a_request(tmp_path / "bs8-gpus1", requested_at=now))
    assert not queue.ready(now + GATHER_QUIET_S / 2)
    assert queue.ready(now + GATHER_QUIET_S)  # nothing came for a while
    # Requests coming every half second: gathered until the oldest has waited GATHER_MAX_S.
    for index in range(1, 2 * int(GATHER_MAX_S) + 2):
        queue.request(a_request(tmp_path / f"bs8-gpus1-seed{index}", requested_at=now + index * GATHER_QUIET_S / 2))
        latest = now + index * GATHER_QUIET_S / 2
        assert queue.ready(latest) == (latest - now >= GATHER_MAX_S), index
    other = a_request(tmp_path / "bs8-gpus2", requested_at=now - 60, parameters={"nodes": 2})
    queue.request(other)
    assert queue.pending()[0].nonce == other.nonce
    assert queue.pending()[0].shape != queue.pending()[1].shape  # 1 node and 2 nodes: two arrays


def test_a_silent_scheduler_ends_the_wait_only_after_scheduler_outage_s(tmp_path, monkeypatch):
    # Neither sacct nor squeue can run (as when slurmctld and slurmdbd are both away).
    # (tests/test_slurm.py stops the real slurmdbd, where squeue still answers.)
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    launcher = LauncherSettings(executor="slurm", scheduler_refresh_s=0.01, scheduler_outage_s=1.0)
    out = io.StringIO()
    watch = JobWatch(JobRecord("42", "slurm", 0.0), None, SharedSlurmView(tmp_path / "scheduler", 0.01),
                     "bs8-gpus1", launcher, out)
    for _ in range(3):
        assert not watch.ended()  # nothing known: neither ended nor given up on
        time.sleep(0.02)
    assert out.getvalue().count("bs8-gpus1: sacct does not answer (sacct did not run:") == 1, out.getvalue()
    time.sleep(1.0)
    with pytest.raises(SchedulerSilent, match=r"job 42 for \d+ s \(launcher.scheduler_outage_s = 1;.*"
                                              r"the next snakemake reattaches"):
        watch.ended()


def test_progress_lines_of_concurrent_cells_never_share_a_line():
    # Every cell's launcher writes to the one terminal; CI sets PYTHONUNBUFFERED, under
    # which print() emits the text and the newline as two writes that others split.
    writer = "import sys; from jobs.launch.launcher import say\nfor _ in range(3000): say(sys.stderr, sys.argv[1] + ': submitting ' + 'x' * 60)"
    env = os.environ | {"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    output = subprocess.run(
        ["bash", "-c", f"{sys.executable} -c \"$0\" A & {sys.executable} -c \"$0\" B & wait", writer],
        env=env, capture_output=True, text=True, check=True).stderr
    lines = output.splitlines()
    assert len(lines) == 6000
    assert all(line.count("submitting") == 1 for line in lines)


def test_a_run_recorded_before_a_parameter_existed_still_matches_its_default(tmp_path):
    params = TrainParams(batch_size=8)
    cell = finished_cell(tmp_path, params, measured_with={"threads_per_worker": 1})
    older = {key: value for key, value in params.to_dict().items() if key != "repeat"}
    write_result(cell.path, "17", params)
    cell.result.write_text(json.dumps({"job_id": "17", "params": older, "status": "complete"}))
    cell.write_job(JobRecord("17", "local", 0.0, measured_with={"threads_per_worker": 1}))
    assert rerun_reason(cell, cell.read_job(), params, {"threads_per_worker": 1}) is None
    assert collect_result(cell.path, cell.read_job(), params)["status"] == "complete"
    changed = TrainParams(batch_size=8, repeat=1)
    assert rerun_reason(cell, cell.read_job(), changed, {"threads_per_worker": 1}) == "parameters changed (repeat 0 -> 1)"


def an_intent(tmp_path: Path, cells: list[str], created_at: float, array_id: str | None = None) -> SubmissionIntent:
    tasks = []
    for name in cells:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        tasks.append(CellTask(str((tmp_path / name).resolve()), {"threads": 1}))
    submission_id = f"{len(cells):02d}{int(created_at):010d}"[-12:]
    return SubmissionIntent(submission_id=submission_id, job_name=f"study.{submission_id}",
                            folder=str(tmp_path / "submitit"), cells=tasks, created_at=created_at, array_id=array_id)


def test_settling_an_unfinished_submission_writes_its_tasks_or_drops_what_slurm_never_had(tmp_path):
    queue = SubmissionQueue(tmp_path / "scheduler")
    now = time.time()
    found = an_intent(tmp_path, ["a", "b", "c"], now - 5)
    CellDir(tmp_path / "b").write_job(JobRecord("41_1", "slurm", 1.0, collected=True))  # written before the kill
    never = an_intent(tmp_path, ["d"], now - SBATCH_SETTLE_S - 1)
    young = an_intent(tmp_path, ["e"], now - 1)
    recorded = an_intent(tmp_path, ["f"], now - 100, array_id="40")  # its sbatch returned; Slurm need not be asked
    for intent in (found, never, young, recorded):
        write_intent(queue.intents_dir, intent)
    (tmp_path / "submitit").mkdir()
    never_pickle, young_pickle = (staged_pickle(tmp_path / "submitit", i.submission_id, 0) for i in (never, young))
    never_pickle.write_bytes(b"x")
    young_pickle.write_bytes(b"x")
    asked = []

    def slurm_knows(names: list[str], since: float) -> tuple[dict[str, str], bool]:
        asked.append(sorted(names))
        assert since <= min(found.created_at, never.created_at, young.created_at)
        return {found.job_name: "41"}, True

    queue.settle(slurm_knows, now)
    assert asked == [sorted([found.job_name, never.job_name, young.job_name])]  # one lookup for all of them
    assert [CellDir(tmp_path / name).read_job().job_id for name in "abcf"] == ["41_0", "41_1", "41_2", "40_0"]
    assert CellDir(tmp_path / "b").read_job().collected  # not rewritten
    assert CellDir(tmp_path / "a").read_job().measured_with == {"threads": 1}
    # Slurm has no array named like `never` and it is old enough: dropped, with its staged pickle.
    # `young` may still be on its way.
    assert [intent.submission_id for intent in queue.intents()] == [young.submission_id]
    assert not never_pickle.exists() and young_pickle.exists()
    assert queue.unsettled(tmp_path / "e") == young and queue.unsettled(tmp_path / "a") is None

    # Slurm half answering (sacct down, squeue not knowing the name) drops nothing, even when old.
    queue.settle(lambda names, since: ({}, False), now + SBATCH_SETTLE_S + 1)
    assert queue.unsettled(tmp_path / "e") == young
    queue.settle(lambda names, since: ({}, True), now + SBATCH_SETTLE_S + 1)
    assert queue.intents() == []


def test_arrays_are_found_by_name_from_squeue_and_sacct_lines():
    output = "12_[3-5%2]|study.aaa\n13_0|study.bbb\n14|other\n15_2|study.bbb\n"
    assert arrays_by_name(output, ["study.aaa", "study.bbb", "study.ccc"]) == {"study.aaa": "12", "study.bbb": "15"}


def test_an_array_task_takes_its_staged_pickle_once(tmp_path):
    staged = staged_pickle(tmp_path, "abc", 2)
    staged.write_bytes(b"pickle")
    take_staged_pickle(tmp_path, "abc", "77", 2)
    target = submitit.core.utils.JobPaths(tmp_path, job_id="77_2").submitted_pickle
    assert target.read_bytes() == b"pickle" and not staged.exists()
    target.write_bytes(b"requeued: checkpointed by submitit")
    take_staged_pickle(tmp_path, "abc", "77", 2)  # another rank, or a requeued task: nothing to move
    assert target.read_bytes() == b"requeued: checkpointed by submitit"


def test_a_submission_record_unlike_what_the_submitter_writes_is_ignored(tmp_path, capsys):
    results = tmp_path / "results"
    queue = SubmissionQueue(results / ".scheduler")
    honest = an_intent(results, ["a"], time.time())
    outside = an_intent(tmp_path / "elsewhere", ["b"], time.time() + 1)
    shell = dataclasses.replace(an_intent(results, ["c"], time.time() + 2), array_id="1;touch x")
    for intent in (honest, outside, shell):
        write_intent(queue.intents_dir, intent)
    assert [intent.submission_id for intent in queue.intents()] == [honest.submission_id]
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and "outside the results tree" in " ".join(said) and "is not Slurm's" in " ".join(said)
    queue.settle(lambda names, since: ({honest.job_name: "9"}, True), time.time())
    assert CellDir(results / "a").read_job().job_id == "9_0"
    assert not (tmp_path / "elsewhere" / "b" / "job.json").exists() and not (results / "c" / "job.json").exists()


def test_a_run_marker_is_live_while_its_heartbeat_is_fresh_or_its_process_runs(tmp_path):
    """jobs/launch/active_runs.py: a run on another host is live while its heartbeat is younger
    than STALE_AFTER_S; one on this host while its process exists."""
    import socket

    from jobs.launch.active_runs import RUNS_DIR, STALE_AFTER_S, ActiveRun, other_active_runs, studies_left_alone

    runs = tmp_path / RUNS_DIR
    runs.mkdir()
    now = time.time()

    def marker(name: str, host: str, pid: int, age_s: float) -> None:
        path = runs / f"{name}.json"
        path.write_text(json.dumps({"host": host, "pid": pid, "started_at": now - 600, "studies": [name]}))
        os.utime(path, (now - age_s, now - age_s))

    dead = psutil.Popen(["true"])
    dead.wait()
    marker("elsewhere_fresh", "login2.example", 1234, STALE_AFTER_S - 30)
    marker("elsewhere_stale", "login2.example", 1234, STALE_AFTER_S + 30)
    marker("here_running", socket.gethostname(), os.getppid(), 5)
    marker("here_dead", socket.gethostname(), dead.pid, 5)
    (runs / "broken.json").write_text("{")
    assert [run.studies for run in other_active_runs(tmp_path)] == [("elsewhere_fresh",), ("here_running",)]
    assert ActiveRun.read(runs / "broken.json") is None
    busy = studies_left_alone(tmp_path, ["elsewhere_fresh", "here_dead", "mine"])
    assert list(busy) == ["elsewhere_fresh"]
