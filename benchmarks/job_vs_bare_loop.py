"""Does the training job measure the hardware, or its own data path? Side by side, on
one worker and the same device, model, batch, precision, optimizer and data:

  bare loop   a hand-written PyTorch loop: a shuffled index per epoch, batches sliced
              from tensors already on the device, forward (under autocast for bf16 and
              fp16, with a gradient scaler for fp16), backward, SGD step;
  + chores    the same loop doing, between epochs, what Horovod's examples do there:
              validate, then save a checkpoint (model and optimizer, torch.save) and
              append a log line; only the steps are timed, as in the job;
  the job     the project's own training entry point (jobs/train/job.py: run_training,
              1 worker), in this process, its throughput read from its metrics.jsonl:
              samples / time in training steps, as the tables compute it.

It prints steady-state samples/s of each (the median over epochs, the first left out)
and the job's ratio to both loops (1.00 means the job adds nothing to the step). The
second ratio tells the job's own cost from what coming back to the steps after an
epoch's validation and checkpoint costs any loop (caches the chores evicted; on a small
VM, a core the hypervisor let go during the file I/O): with 7 steps an epoch, as in
Lab 1's row, that alone is several per cent of the step time. Each
case alternates the two several times and reports the medians, since a shared
machine is noisy. It also prints the model FLOP/s the job achieved (the FLOPs of one
training step, forward and backward, counted by torch.utils.flop_counter, times steps
per second) and, on a GPU whose peak it knows, that as a fraction of the peak for the
precision (model FLOP utilisation, MFU).

    .venv/bin/python benchmarks/job_vs_bare_loop.py            # every case
    .venv/bin/python benchmarks/job_vs_bare_loop.py --quick    # fewer epochs and rounds
    .venv/bin/python benchmarks/job_vs_bare_loop.py --precision bf16 --only "Wide ResNet"
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def cases(epochs: int, precision: str, on_gpu: bool) -> list[Case]:
    """The issue's rows. A GPU gets more samples per epoch, so an epoch lasts long enough to time."""
    more = 16 if on_gpu else 1

    def make(name: str, **values: object) -> Case:
        return Case(name, TrainParams.from_dict({"epochs": epochs, "lr_scaling": "none", "momentum": 0.9, "seed": 0,
                                                 "precision": precision, **values}))

    return [
        make("linear, batch 1", dataset="linear", model="linear", batch_size=1, lr=1e-4, train_subset=2000),
        make("linear, batch 16", dataset="linear", model="linear", batch_size=16, lr=1e-3,
             train_subset=16000 * min(more, 4)),
        # Lab 1's data, 100 points: 7 steps an epoch, so any fixed cost per epoch inside the step clock shows.
        make("Lab 1: linear, 100 points, batch 16", dataset="linear", model="linear", batch_size=16, lr=1e-3,
             train_subset=100, epochs=max(epochs, 40)),
        make("CNN, batch 16", dataset="digits", model="cnn", batch_size=16, lr=0.02),
        make("CNN, batch 64", dataset="digits", model="cnn", batch_size=64, lr=0.02),
        make("Wide ResNet 10-1, batch 32", dataset="synthetic_images", model="wide_resnet", depth=10, width=1,
             batch_size=32, lr=0.02, train_subset=256 * more),
        make("Wide ResNet 10-1, batch 128", dataset="synthetic_images", model="wide_resnet", depth=10, width=1,
             batch_size=128, lr=0.02, train_subset=1024 * more),
    ]


# Dense (no sparsity) peak FLOP/s by precision, from NVIDIA's data sheets: H100 and H200
# ("NVIDIA H100 Tensor Core GPU" datasheet, SXM5 and PCIe columns; the H200 datasheet), A100
# ("NVIDIA A100 Tensor Core GPU" datasheet, SXM). fp32 is the non-tensor-core rate.
PEAK_FLOPS = {
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "H100": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    "H200": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
}


def peak_flops(device_name: str, precision: str) -> float | None:
    """The data sheet's peak for this GPU and precision, or None for a device not listed."""
    for model, peaks in PEAK_FLOPS.items():  # "H100 PCIe" is listed before "H100"
        if model in device_name:
            return peaks[precision]
    return None


def flops_per_sample(params: TrainParams, device: torch.device) -> float:
    """Model FLOPs of one training step (forward and backward) over its batch, per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    data = load_dataset(params.dataset, Path("data"), seed=params.seed, train_subset=params.train_subset)
    model = build_model(params.model, data.input_shape, data.num_classes, width=params.width,
                        depth=params.depth).to(device)
    train = DeviceSplit.of(data.train, device)
    inputs, targets = train.inputs[:params.batch_size], train.targets[:params.batch_size]
    loss_fn = torch.nn.CrossEntropyLoss() if data.num_classes else torch.nn.MSELoss()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(inputs), targets).backward()
    return counter.get_total_flops() / len(targets)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(params: TrainParams, device: torch.device, chores_dir: Path | None = None) -> float:
    """Steady-state samples/s of the hand-written loop (first epoch left out); with
    `chores_dir`, validating and saving a checkpoint there after each epoch, off the clock."""
    torch.manual_seed(params.seed)
    data = load_dataset(params.dataset, Path("data"), seed=params.seed, train_subset=params.train_subset)
    train, val = DeviceSplit.of(data.train, device), DeviceSplit.of(data.val, device)
    model = build_model(params.model, data.input_shape, data.num_classes, width=params.width,
                        depth=params.depth).to(device)
    optimizer = make_optimizer(params, model)
    loss_fn = torch.nn.CrossEntropyLoss() if data.num_classes else torch.nn.MSELoss()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = params.precision == "tf32"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(params.precision)
    scaler = torch.amp.GradScaler(device.type) if params.precision == "fp16" else None
    rates = []
    for _ in range(params.epochs):
        synchronize(device)
        started = time.perf_counter()
        order = torch.randperm(len(train), device=device)
        for start in range(0, len(train), params.batch_size):
            chosen = order[start:start + params.batch_size]
            optimizer.zero_grad()
            if dtype is None:
                loss = loss_fn(model(train.inputs[chosen]), train.targets[chosen])
                loss.backward()
                optimizer.step()
                continue
            with torch.autocast(device.type, dtype=dtype):
                loss = loss_fn(model(train.inputs[chosen]), train.targets[chosen])
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
        synchronize(device)
        rates.append(len(train) / (time.perf_counter() - started))
        if chores_dir is not None:
            epoch_chores(model, optimizer, loss_fn, val, chores_dir, len(rates))
    return statistics.median(rates[1:])


def epoch_chores(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: torch.nn.Module,
                 val: DeviceSplit, directory: Path, epoch: int) -> None:
    """Between two epochs, as Horovod's examples: validate, save a checkpoint, log a line."""
    model.eval()
    with torch.no_grad():
        val_loss = float(loss_fn(model(val.inputs), val.targets))
    model.train()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
               directory / "checkpoint.pt")
    with open(directory / "log.txt", "a") as log:
        log.write(f"epoch {epoch}: val loss {val_loss}\n")


def the_job(params: TrainParams, workdir: Path) -> float:
    """Steady-state samples/s of the project's training job, as runs.csv computes it."""
    cell_dir = workdir / f"cell-{time.monotonic_ns()}"
    cell_dir.mkdir(parents=True)
    job = TrainingJob(cell_dir=str(cell_dir), study="bench", cell="bench", grid_axes=("batch_size", "gpus"),
                      params=params.to_dict(), data_dir="data")
    with contextlib.redirect_stdout(io.StringIO()):  # its per-epoch lines would bury the table
        run_training(job, SingleWorker(), "localhost", "bench", 0, time.time())
    records = CellDir(cell_dir).read_metrics().epochs
    return statistics.median(record["samples_per_s"] for record in records[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs and 1 round per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    epochs, rounds = (3, 1) if args.quick else (5, 3)
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
        peak = peak_flops(torch.cuda.get_device_name(device), args.precision)
    else:
        name, peak = f"CPU, {args.threads} thread(s)", None
    print(f"device: {name}; torch {torch.__version__}; precision {args.precision}; {epochs} epochs, "
          f"{rounds} round(s), medians")
    print(f"MFU against {f'{peak / 1e12:.1f} TFLOP/s, the data sheet peak' if peak else 'no known peak'}\n")
    print("| case | bare loop (samples/s) | + chores (samples/s) | the job (samples/s) | job / bare loop | "
          "job / bare loop + chores | job's model GFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases(epochs, args.precision, device.type == "cuda"):
            if args.only not in case.name:
                continue
            bare, chores, job = [], [], []
            for _ in range(rounds):
                bare.append(bare_loop(case.params, device))
                chores.append(bare_loop(case.params, device, chores_dir=Path(workdir)))
                job.append(the_job(case.params, Path(workdir)))
            bare_rate, chores_rate, job_rate = statistics.median(bare), statistics.median(chores), statistics.median(job)
            achieved = flops_per_sample(case.params, device) * job_rate
            mfu = f"{achieved / peak:.1%}" if peak else "n/a"
            print(f"| {case.name} | {bare_rate:.0f} | {chores_rate:.0f} | {job_rate:.0f} | {job_rate / bare_rate:.2f} | "
                  f"{job_rate / chores_rate:.2f} | {achieved / 1e9:.3g} | {mfu} |", flush=True)


if __name__ == "__main__":
    main()
