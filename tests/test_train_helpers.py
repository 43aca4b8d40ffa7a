"""Pieces of the training job that need no Horovod: warmup and resuming the metrics file."""

from __future__ import annotations

import json

import pytest

from jobs.params import TrainParams
import os

from jobs.train import Progress, learning_rate, prepare_metrics_file, torch_threads


def test_warmup_ramps_from_base_to_scaled_lr():
    params = TrainParams(lr=0.1, gpus=4, lr_scaling="linear", warmup_epochs=2)
    assert learning_rate(params, 0.0) == pytest.approx(0.1)
    assert learning_rate(params, 1.0) == pytest.approx(0.25)
    assert learning_rate(params, 2.0) == pytest.approx(0.4)
    assert learning_rate(params, 7.5) == pytest.approx(0.4)


def test_no_warmup_starts_at_scaled_lr():
    assert learning_rate(TrainParams(lr=0.1, gpus=4, lr_scaling="sqrt"), 0.0) == pytest.approx(0.2)


def test_resume_keeps_checkpointed_epochs_and_drops_later_ones(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"type": "meta"}, {"type": "epoch", "epoch": 1}, {"type": "epoch", "epoch": 2},
             {"type": "epoch", "epoch": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "epo')
    prepare_metrics_file(path, Progress(epoch=2, last_record=lines[2]))
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert kept == lines[:3]


def test_resume_restores_the_checkpointed_epoch_missing_from_the_log(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "meta"}\n{"type": "epoch", "epoch": 1}\n')
    prepare_metrics_file(path, Progress(epoch=2, last_record={"type": "epoch", "epoch": 2}))
    assert [json.loads(line).get("epoch") for line in path.read_text().splitlines()] == [None, 1, 2]


def test_fresh_start_empties_the_metrics_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"type": "epoch", "epoch": 1}\n')
    prepare_metrics_file(path, Progress())
    assert path.read_text() == ""


def test_threads_never_oversubscribe_the_cpus_given():
    cpus = len(os.sched_getaffinity(0))
    assert torch_threads(1, 1) == 1
    assert torch_threads(64, 1) == cpus
    assert torch_threads(64, cpus) == 1
    assert torch_threads(2, 4 * cpus) == 1  # more workers than CPUs: one thread each, no fewer
