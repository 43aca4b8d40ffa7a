"""Where does weak scaling go on this machine? Training-step throughput side by side:

  1. plain PyTorch, one process                      (the baseline)
  2. plain PyTorch, N processes at once, no Horovod  (what the hardware allows)
  3. Horovod through our launcher path, 1 worker     (Horovod's own cost)
  4. Horovod through our launcher path, N workers    (what a grid cell gets)

Each runs the same model and batch on one CPU thread per process, with submitit's
local executor. Ratios are per-worker throughput against the baseline, so 1.00 means
no loss.

This benchmark isolates Horovod's own cost and the hardware's: all four rows time a
synthetic loop on fixed tensors, not the project's training job (jobs/train/job.py),
so they say nothing about the job's data path or bookkeeping.

    .venv/bin/python benchmarks/step_overhead.py --batch-size 64 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import submitit

from jobs.train import rendezvous


def step_loop(batch_size: int, width: int, steps: int, use_horovod: bool, cell_dir: str) -> float:
    """Samples per second of one process running `steps` training steps."""
    if use_horovod:
        placement = rendezvous.placement_from_submitit()
        server = rendezvous.join(placement, Path(cell_dir))  # noqa: F841  (rank 0 keeps it alive)
        import horovod.torch as hvd

        hvd.init()
    import torch

    from jobs.train.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10, width=width)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if use_horovod:
        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    inputs, targets = torch.randn(batch_size, 1, 8, 8), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()

    for _ in range(20):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def run(workers: int, use_horovod: bool, args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        if use_horovod:
            executor = submitit.AutoExecutor(folder=folder, cluster="local")
            executor.update_parameters(tasks_per_node=workers, nodes=1, timeout_min=30)
            job = executor.submit(step_loop, args.batch_size, args.width, args.steps, True, folder)
            return job.results()
        # Without Horovod: independent single-task jobs started together.
        executor = submitit.AutoExecutor(folder=folder, cluster="local")
        executor.update_parameters(tasks_per_node=1, nodes=1, timeout_min=30)
        jobs = [executor.submit(step_loop, args.batch_size, args.width, args.steps, False, folder)
                for _ in range(workers)]
        return [job.result() for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64, help="per worker (samples)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=4, help="CNN width, as in the default study")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()

    runs = {
        "plain PyTorch, 1 process": run(1, False, args),
        f"plain PyTorch, {args.workers} processes": run(args.workers, False, args),
        "Horovod, 1 worker": run(1, True, args),
        f"Horovod, {args.workers} workers": run(args.workers, True, args),
    }
    baseline = runs["plain PyTorch, 1 process"][0]
    print(f"CNN width {args.width}, batch {args.batch_size} per worker, {args.steps} steps, 1 thread per process")
    print(f"{'run':34} {'per worker (samples/s)':>24} {'total (samples/s)':>18} {'per worker / baseline':>22}")
    for name, rates in runs.items():
        per_worker = sum(rates) / len(rates)
        print(f"{name:34} {per_worker:24.0f} {sum(rates):18.0f} {per_worker / baseline:22.2f}")


if __name__ == "__main__":
    main()
