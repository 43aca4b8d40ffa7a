"""Where does weak scaling go on this machine, and what does each backend cost?
Training-step throughput side by side, in one run:

  1. plain PyTorch, one process                      (the baseline)
  2. plain PyTorch, N processes at once, no exchange (what the hardware allows)
  3. Horovod, 1 worker, and N workers                (jobs/train/horovod_workers.py)
  4. PyTorch DDP, 1 worker, and N workers            (jobs/train/ddp_workers.py)

Each runs the same model and batch on one CPU thread per process, with submitit's
local executor; the backends through the project's own Workers classes (rendezvous
from the task placement, `wrap`, rank 0's weights broadcast), as a cell does. Ratios
are per-worker throughput against the baseline, so 1.00 means no loss.

This benchmark isolates the backends' own cost and the hardware's: every row times a
synthetic loop on fixed tensors, not the project's training job (jobs/train/job.py), so
they say nothing about the job's data path or bookkeeping
(benchmarks/job_vs_bare_loop.py measures those).

    .venv/bin/python benchmarks/step_overhead.py --batch-size 64 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import submitit

from jobs.plan.params import TrainParams
from jobs.train import rendezvous

BACKENDS = {"plain": "plain PyTorch", "horovod": "Horovod", "ddp": "PyTorch DDP"}


def step_loop(batch_size: int, width: int, steps: int, backend: str, cell_dir: str) -> float:
    """Samples per second of one process running `steps` training steps."""
    import torch

    from jobs.train.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=width)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = model
    if backend != "plain":
        from jobs.train.ddp_workers import DDPWorkers
        from jobs.train.horovod_workers import HorovodWorkers

        placement = rendezvous.placement_from_submitit()
        params = TrainParams(gpus=placement.num_tasks, backend=backend)  # type: ignore[arg-type]
        workers = HorovodWorkers(placement, Path(cell_dir), params, "gloo") if backend == "horovod" \
            else DDPWorkers(placement, Path(cell_dir), params)
        forward, optimizer = workers.wrap(model, optimizer)
        workers.broadcast_parameters(model.state_dict())
    inputs, targets = torch.randn(batch_size, 1, 8, 8), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(forward(inputs), targets).backward()
        optimizer.step()

    for _ in range(20):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def run(workers: int, backend: str, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        if backend != "plain":
            executor.update_parameters(tasks_per_node=workers, nodes=1, timeout_min=30)
            job = executor.submit(step_loop, args.batch_size, args.width, args.steps, backend, folder)
            return job.results()
        # Without an exchange: independent single-task jobs started together.
        executor.update_parameters(tasks_per_node=1, nodes=1, timeout_min=30)
        jobs = [executor.submit(step_loop, args.batch_size, args.width, args.steps, backend, folder)
                for _ in range(workers)]
        return [job.result() for job in jobs]


def label(backend: str, workers: int) -> str:
    unit = ("process", "processes") if backend == "plain" else ("worker", "workers")
    return f"{BACKENDS[backend]}, {workers} {unit[workers > 1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, help="per worker (samples)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=4, help="CNN width, as in the default study")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    runs = {label(backend, workers): run(workers, backend, args)
            for backend in BACKENDS for workers in (1, args.workers)}
    baseline = runs[label("plain", 1)][0]
    print(f"CNN width {args.width}, batch {args.batch_size} per worker, {args.steps} steps, 1 thread per process")
    print("| run | per worker (samples/s) | total (samples/s) | per worker / baseline |\n|---|---|---|---|")
    for name, rates in runs.items():
        per_worker = sum(rates) / len(rates)
        print(f"| {name} | {per_worker:.0f} | {sum(rates):.0f} | {per_worker / baseline:.2f} |")


if __name__ == "__main__":
    main()
