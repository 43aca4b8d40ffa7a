"""Does the training job measure the hardware, or its own data path? Side by side, on
one worker and the same device, model, batch, optimizer and data:

  bare loop   a hand-written PyTorch loop: a shuffled index per epoch, batches sliced
              from tensors already on the device, forward, backward, SGD step;
  the job     the project's own training entry point (jobs/train/job.py: run_training,
              1 worker), in this process, its throughput read from its metrics.jsonl:
              samples / time in training steps, as the tables compute it.

It prints steady-state samples/s of both (the median over epochs, the first left out)
and their ratio (job / bare loop; 1.00 means the job adds nothing to the step). Each
case alternates the two several times and reports the medians, since a shared
machine is noisy.

    .venv/bin/python benchmarks/job_vs_bare_loop.py            # every case
    .venv/bin/python benchmarks/job_vs_bare_loop.py --quick    # fewer epochs and rounds
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.cell import CellDir
from jobs.plan.params import TrainParams
from jobs.train.data import DeviceSplit, load_dataset
from jobs.train.job import TrainingJob, run_training
from jobs.train.models import build_model
from jobs.train.optim import make_optimizer
from jobs.train.workers import SingleWorker


@dataclass(frozen=True)
class Case:
    name: str
    params: TrainParams


def cases(epochs: int) -> list[Case]:
    def make(name: str, **values: object) -> Case:
        return Case(name, TrainParams(epochs=epochs, lr_scaling="none", momentum=0.9, seed=0, **values))  # type: ignore[arg-type]

    return [
        make("linear, batch 1", dataset="linear", model="linear", batch_size=1, lr=1e-4, train_subset=2000),
        make("linear, batch 16", dataset="linear", model="linear", batch_size=16, lr=1e-3, train_subset=16000),
        make("CNN, batch 16", dataset="digits", model="cnn", batch_size=16, lr=0.02),
        make("CNN, batch 64", dataset="digits", model="cnn", batch_size=64, lr=0.02),
        make("Wide ResNet 10-1, batch 32", dataset="synthetic_images", model="wide_resnet", depth=10, width=1,
             batch_size=32, lr=0.02, train_subset=256),
        make("Wide ResNet 10-1, batch 128", dataset="synthetic_images", model="wide_resnet", depth=10, width=1,
             batch_size=128, lr=0.02, train_subset=512),
    ]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(params: TrainParams, device: torch.device) -> float:
    """Steady-state samples/s of the hand-written loop (first epoch left out)."""
    torch.manual_seed(params.seed)
    data = load_dataset(params.dataset, Path("data"), seed=params.seed, train_subset=params.train_subset)
    train = DeviceSplit.of(data.train, device)
    model = build_model(params.model, data.input_shape, data.num_classes, width=params.width,
                        depth=params.depth).to(device)
    optimizer = make_optimizer(params, model)
    loss_fn = torch.nn.CrossEntropyLoss() if data.num_classes else torch.nn.MSELoss()
    rates = []
    for _ in range(params.epochs):
        synchronize(device)
        started = time.perf_counter()
        order = torch.randperm(len(train), device=device)
        for start in range(0, len(train), params.batch_size):
            chosen = order[start:start + params.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train.inputs[chosen]), train.targets[chosen])
            loss.backward()
            optimizer.step()
        synchronize(device)
        rates.append(len(train) / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def the_job(params: TrainParams, workdir: Path) -> float:
    """Steady-state samples/s of the project's training job, as runs.csv computes it."""
    cell_dir = workdir / f"cell-{time.monotonic_ns()}"
    cell_dir.mkdir(parents=True)
    job = TrainingJob(cell_dir=str(cell_dir), study="bench", cell="bench", grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir="data")
    run_training(job, SingleWorker(), "localhost", "bench", 0, time.time())
    records = CellDir(cell_dir).read_metrics().epochs
    return statistics.median(record["samples_per_s"] for record in records[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs and 1 round per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    epochs, rounds = (3, 1) if args.quick else (5, 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"device: {name}; torch {torch.__version__}; {epochs} epochs, {rounds} round(s), medians\n")
    print("| case | bare loop (samples/s) | the job (samples/s) | job / bare loop |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases(epochs):
            bare, job = [], []
            for _ in range(rounds):
                bare.append(bare_loop(case.params, device))
                job.append(the_job(case.params, Path(workdir)))
            bare_rate, job_rate = statistics.median(bare), statistics.median(job)
            print(f"| {case.name} | {bare_rate:.0f} | {job_rate:.0f} | {job_rate / bare_rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
