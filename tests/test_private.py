"""Nobody else's code runs as the user: private modes, checks before loading, strict reading."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import submitit
import torch

from jobs.cell import CellDir, JobRecord
from jobs.launch.launcher import CellFailed, CellLaunch, checked_answer, root_failure, vet_request
from jobs.launch.submission import SubmissionAnswer, SubmissionQueue, SubmissionRequest
from jobs.plan.params import LauncherSettings, TrainParams
from jobs.private import NotPrivate, check_private, private_dir
from jobs.train.job import load_checkpoint

SOMEONE_ELSE = 65534  # nobody: the tests run as root, so ownership is given away with chown


class Planted:
    """What an attacker pickles: unpickling it creates the marker file (runs code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def umask_002():
    old = os.umask(0o002)  # group project space
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_parts_are_owner_only_whatever_the_umask(tmp_path, umask_002):
    queue = SubmissionQueue(tmp_path / "scheduler")
    request = SubmissionRequest(cell_dir=str(tmp_path / "cell"), folder=str(tmp_path / "submitit"), parameters={},
                                max_requeues=1, training={}, measured_with={})
    queue.request(request)
    assert {mode(path) for path in (tmp_path / "scheduler").rglob("*") if path.is_dir()} == {0o700}
    assert mode(tmp_path / "scheduler") == 0o700
    assert mode(queue.requests_dir / f"{request.key}.json") == 0o600
    shared = SubmissionQueue(tmp_path / "shared", shared=True)
    shared.request(request)
    assert mode(tmp_path / "shared") == 0o750 and mode(shared.requests_dir / f"{request.key}.json") == 0o640


def test_a_file_others_could_write_or_that_is_not_yours_is_refused_with_the_fix(tmp_path):
    folder = private_dir(tmp_path / "submitit")
    pickle_path = folder / "1_0_0_result.pkl"
    pickle_path.write_bytes(b"x")
    pickle_path.chmod(0o600)
    check_private(pickle_path)
    pickle_path.chmod(0o664)
    with pytest.raises(NotPrivate) as refused:
        check_private(pickle_path)
    assert str(refused.value) == (f"refusing to load {pickle_path}: {pickle_path} is writable by group (mode 0664); "
                                  f"check it, then `chmod go-w {pickle_path}`")
    pickle_path.chmod(0o600)
    folder.chmod(0o777)
    with pytest.raises(NotPrivate, match=r"is writable by group and others \(mode 0777\)"):
        check_private(pickle_path)
    folder.chmod(0o700)
    os.chown(pickle_path, SOMEONE_ELSE, -1)
    with pytest.raises(NotPrivate, match=rf"belongs to uid {SOMEONE_ELSE}, not to you"):
        check_private(pickle_path)


def test_a_result_pickle_others_could_write_is_never_unpickled(tmp_path):
    cell_dir = tmp_path / "cell"
    record = JobRecord("5_0", "slurm", 0.0, folder=str(private_dir(tmp_path / "submitit")))
    result_pickle = submitit.core.utils.JobPaths(Path(record.folder), job_id="5_0", task_id=0).result_pickle
    marker = tmp_path / "ran"
    submitit.core.utils.cloudpickle_dump(("error", Planted(marker)), result_pickle)
    result_pickle.chmod(0o664)
    reason, where = root_failure(cell_dir, record, num_tasks=1)
    assert reason.startswith(f"refusing to load {result_pickle}: ") and "chmod go-w" in reason and where == result_pickle
    assert not marker.exists()
    result_pickle.chmod(0o644)  # the check, not luck, kept it from running: once trusted, it runs
    root_failure(cell_dir, record, num_tasks=1)
    assert marker.exists()


def test_a_crafted_checkpoint_is_set_aside_without_running(tmp_path, capsys):
    cell = CellDir(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"version": 2, "model": Planted(marker)}, cell.checkpoint)
    cell.checkpoint.chmod(0o600)
    with pytest.raises(pickle.UnpicklingError):  # proof the file would run code under plain pickle
        torch.load(cell.checkpoint, weights_only=True)
    progress, _ = load_checkpoint(cell, step=None, params=TrainParams())
    assert progress.epoch == 0 and not marker.exists()
    assert not cell.checkpoint.exists() and (tmp_path / "checkpoint.pt.damaged").exists()
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"{cell.checkpoint} cannot be read as weights only") \
        and said[0].endswith("the cell starts afresh"), said
    # A truncated one likewise.
    cell.checkpoint.write_bytes((tmp_path / "checkpoint.pt.damaged").read_bytes()[:100])
    cell.checkpoint.chmod(0o600)
    assert load_checkpoint(cell, step=None, params=TrainParams())[0].epoch == 0 and not cell.checkpoint.exists()


def test_a_checkpoint_others_could_write_fails_the_cell_and_loads_nothing(tmp_path):
    cell = CellDir(tmp_path)
    marker = tmp_path / "ran"
    torch.save({"model": Planted(marker)}, cell.checkpoint)
    cell.checkpoint.chmod(0o660)
    with pytest.raises(NotPrivate, match="writable by group"):
        load_checkpoint(cell, step=None, params=TrainParams())
    assert cell.checkpoint.exists() and not marker.exists()  # left where it is for the user to look at
    cell.checkpoint.chmod(0o600)
    os.chown(cell.checkpoint, SOMEONE_ELSE, -1)
    with pytest.raises(NotPrivate, match="belongs to uid"):
        load_checkpoint(cell, step=None, params=TrainParams())


@pytest.fixture
def slurm_launcher() -> LauncherSettings:
    return LauncherSettings(executor="slurm", slurm={"partition": "debug", "setup": ["module load cuda"]})


def test_a_request_must_be_what_the_profile_and_plan_give_its_cell(tmp_path, slurm_launcher):
    results, data = tmp_path / "results", tmp_path / "data"
    cell_dir = results / "study" / "cells" / "bs32-gpus2"
    request = CellLaunch(cell_dir, "study", "bs32-gpus2", ("batch_size", "gpus"), TrainParams(gpus=2),
                         slurm_launcher, data).request()
    roundtrip = SubmissionRequest(**json.loads(json.dumps(request.__dict__)))
    assert vet_request(roundtrip, slurm_launcher, data, results) is None
    setup = {**request.parameters, "slurm_setup": ["module load cuda", "touch /tmp/marker"]}
    forged = SubmissionRequest(**{**roundtrip.__dict__, "parameters": setup})
    assert vet_request(forged, slurm_launcher, data, results).startswith("its parameters differ from what the "
                                                                          "profile and plan give cell bs32-gpus2")
    elsewhere = SubmissionRequest(**{**roundtrip.__dict__, "cell_dir": str(tmp_path / "elsewhere")})
    assert "its cell_dir differ" in vet_request(elsewhere, slurm_launcher, data, results)
    other_data = {**roundtrip.training, "data_dir": str(tmp_path / "theirs")}
    assert "its training differ" in vet_request(SubmissionRequest(**{**roundtrip.__dict__, "training": other_data}),
                                                slurm_launcher, data, results)


def test_an_answer_must_name_an_array_task_in_the_requests_folder(tmp_path):
    request = SubmissionRequest(cell_dir=str(tmp_path / "cell"), folder=str(tmp_path / "submitit"), parameters={},
                                max_requeues=1, training={}, measured_with={})
    assert checked_answer(SubmissionAnswer(request.nonce, job_id="12_3", folder=request.folder), request, "c") == "12_3"
    for job_id, folder in (("12_3; touch /tmp/x", request.folder), ("$(reboot)", request.folder),
                           ("12_3", "/tmp/elsewhere")):
        with pytest.raises(CellFailed, match="ignoring the answer to its request"):
            checked_answer(SubmissionAnswer(request.nonce, job_id=job_id, folder=folder), request, "c")


def test_a_job_record_with_a_job_id_unlike_slurms_is_ignored(tmp_path, capsys):
    cell = CellDir(tmp_path)
    cell.write_job(JobRecord("7_1", "slurm", 0.0))
    assert cell.read_job().job_id == "7_1"
    cell.write_job(JobRecord("7_1 || touch /tmp/x", "slurm", 0.0))
    assert cell.read_job() is None
    assert capsys.readouterr().err.count("\n") == 1
