"""Where a grid cell is trained: the Horovod data-parallel training job.

Every task of a cell's submitit job runs `TrainingJob.__call__`. It follows Horovod's
PyTorch recipe, in Horovod's order (each distributed line is marked `# Horovod:`):
init, pin the local rank's GPU, shard the data, scale the learning rate, broadcast the
initial state from rank 0, wrap the optimizer, average metrics with allreduce, and let
rank 0 alone write. jobs/launch.py submits it; a NaN or infinite loss ends the run as `diverged`, a
result like any other.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from jobs import rendezvous
from jobs.params import TrainParams

METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"  # the launcher checks it and publishes it as summary.json
CHECKPOINT_FILE = "checkpoint.pt"
JOB_FILE = "job.json"


def write_json_atomically(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    os.replace(tmp, path)


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def learning_rate(params: TrainParams, epoch_progress: float) -> float:
    """Gradual warmup (Goyal et al. 2017) from the base lr to the scaled lr, then flat.

    epoch_progress counts epochs from 0, fractional within an epoch."""
    target = params.scaled_lr()
    if params.warmup_epochs > 0 and epoch_progress < params.warmup_epochs:
        return params.lr + (target - params.lr) * epoch_progress / params.warmup_epochs
    return target


@dataclass
class Progress:
    """What survives a restart: saved in the checkpoint each epoch."""

    epoch: int = 0
    train_time_s: float = 0.0
    epochs_above_target: int = 0
    best_val_accuracy: float | None = None
    last_record: dict[str, Any] = field(default_factory=dict)
    first_started_at: float | None = None  # when the first attempt started (queue time ends)


@dataclass(frozen=True)
class TrainingJob(submitit.helpers.Checkpointable):
    """The callable submitted once per cell; a Checkpointable, so a preempted or
    timed-out job is requeued and resumes from the cell's last checkpoint."""

    cell_dir: str
    study: str
    cell: str
    grid_axes: tuple[str, ...]
    params: dict[str, Any]
    data_dir: str
    threads_per_worker: int = 1
    controller: str = "gloo"

    def __call__(self) -> dict[str, Any] | None:
        started = time.time()
        placement = rendezvous.placement_from_submitit()
        server = None
        if self.controller == "gloo":
            server = rendezvous.join(placement, Path(self.cell_dir))  # noqa: F841  (rank 0 keeps it alive)
        return run_training(self, placement, started)


def run_training(job: TrainingJob, placement: rendezvous.TaskPlacement, started: float) -> dict[str, Any] | None:
    import horovod.torch as hvd
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, Subset

    from jobs.data import load_dataset
    from jobs.models import build_model

    params = TrainParams.from_dict(job.params)
    cell_dir = Path(job.cell_dir)
    if job.controller == "mpi" and not hvd.mpi_built():
        raise RuntimeError("launcher.controller = 'mpi', but this Horovod was built without MPI: "
                           "rerun setup.sh with an MPI (mpicxx) on PATH, or use controller 'gloo'")
    hvd.init()  # Horovod: initialise (Gloo: from rendezvous.join's HOROVOD_* variables; MPI: from PMIx)
    threads = torch_threads(job.threads_per_worker, hvd.local_size())
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(hvd.local_rank())  # Horovod: pin one GPU per process
        device = torch.device("cuda", hvd.local_rank())
    is_writer = hvd.rank() == 0

    torch.manual_seed(params.seed)
    data = load_dataset(params.dataset, Path(job.data_dir), seed=params.seed, train_subset=params.train_subset)
    # Horovod: each worker sees its own shard of the training data.
    train_sampler = DistributedSampler(data.train, num_replicas=hvd.size(), rank=hvd.rank(), seed=params.seed)
    train_loader = DataLoader(data.train, batch_size=params.batch_size, sampler=train_sampler)
    val_shard = Subset(data.val, range(hvd.rank(), len(data.val), hvd.size()))
    val_loader = DataLoader(val_shard, batch_size=1024)

    model = build_model(params.model, data.input_shape, data.num_classes, width=params.width, depth=params.depth)
    model.to(device)
    optimizer = make_optimizer(params, model)
    progress = Progress()
    checkpoint_path = cell_dir / CHECKPOINT_FILE
    if checkpoint_path.exists():
        progress = load_checkpoint(checkpoint_path, model, optimizer, params)
    progress = hvd.broadcast_object(progress, root_rank=0)
    if progress.first_started_at is None:
        progress.first_started_at = started
    # Horovod: every worker starts from rank 0's parameters and optimizer state.
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    # Horovod: average gradients across workers with allreduce at each step.
    distributed_optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())

    hosts = hvd.allgather_object(placement.hostname)
    loss_fn = torch.nn.CrossEntropyLoss() if data.num_classes else torch.nn.MSELoss()
    steps_per_epoch = len(train_loader)
    startup_s = time.time() - started
    if is_writer:
        prepare_metrics_file(cell_dir / METRICS_FILE, progress)
        append_record(cell_dir / METRICS_FILE, {
            "type": "meta",
            "study": job.study,
            "cell": job.cell,
            "world_size": hvd.size(),
            "local_size": hvd.local_size(),
            "nodes": hvd.cross_size(),
            "hosts": hosts,
            "controller": "mpi" if hvd.mpi_enabled() else "gloo",  # what Horovod runs on, not what was asked
            "threads_per_worker": threads,
            "device": str(device),
            "job_id": placement.job_id,
            "attempt": placement.attempt,
            "resumed_from_epoch": progress.epoch,
            "startup_s": startup_s,
            "steps_per_epoch": steps_per_epoch,
            "versions": versions(),
            "params": params.to_dict(),
        })
        print(f"[{job.cell}] world size {hvd.size()} on {sorted(set(hosts))}, "
              f"global batch {params.batch_size * hvd.size()}, {steps_per_epoch} steps/epoch, "
              f"lr {params.lr} -> {params.scaled_lr():g} ({params.lr_scaling}), start-up {startup_s:.1f} s",
              flush=True)

    status, stop_reason = "complete", "epochs"
    for epoch in range(progress.epoch + 1, params.epochs + 1):
        if params.fail_at_epoch == epoch and hvd.rank() == hvd.size() - 1:
            raise RuntimeError(f"fail_at_epoch = {epoch}: rank {hvd.rank()} fails on purpose (testing switch)")
        train_sampler.set_epoch(epoch)
        epoch_start = time.perf_counter()
        model.train()
        loss_sum, samples = 0.0, 0
        for step, (inputs, targets) in enumerate(train_loader):
            lr = learning_rate(params, epoch - 1 + step / steps_per_epoch)
            for group in distributed_optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = inputs.to(device), targets.to(device)
            distributed_optimizer.zero_grad()
            loss = loss_fn(model(inputs), targets)
            loss.backward()
            distributed_optimizer.step()
            loss_sum += loss.item() * len(inputs)
            samples += len(inputs)
        train_phase_s = time.perf_counter() - epoch_start
        val_loss_sum, val_correct, val_count = evaluate(model, val_loader, loss_fn, device, data.num_classes)
        epoch_s = time.perf_counter() - epoch_start

        # Horovod: metrics summed (or maxed, for time) over all workers.
        sums = hvd.allreduce(torch.tensor([loss_sum, samples, val_loss_sum, val_correct, val_count],
                                          dtype=torch.float64), op=hvd.Sum, name="epoch_sums")
        slowest = hvd.allreduce(torch.tensor([train_phase_s, epoch_s], dtype=torch.float64),
                                op=hvd.Max, name="epoch_times")
        train_loss = float(sums[0] / sums[1])
        val_loss = float(sums[2] / sums[4])
        val_accuracy = float(sums[3] / sums[4]) if data.num_classes else None
        progress.epoch = epoch
        progress.train_time_s += float(slowest[1])
        record = {
            "type": "epoch",
            "epoch": epoch,
            "train_time_s": progress.train_time_s,
            "epoch_time_s": float(slowest[1]),
            "samples": int(sums[1]),
            "samples_per_s": float(sums[1] / slowest[0]),
            "train_loss": finite_or_none(train_loss),
            "val_loss": finite_or_none(val_loss),
            "val_accuracy": val_accuracy,
            "lr": lr,
            "world_size": hvd.size(),
        }
        progress.last_record = record
        diverged = not (math.isfinite(train_loss) and math.isfinite(val_loss))
        if val_accuracy is not None and not diverged:
            progress.best_val_accuracy = max(progress.best_val_accuracy or 0.0, val_accuracy)
            progress.epochs_above_target = progress.epochs_above_target + 1 if val_accuracy >= params.target_accuracy else 0
        if is_writer:
            save_checkpoint(checkpoint_path, model, optimizer, progress, params)
            append_record(cell_dir / METRICS_FILE, record)
            acc = "n/a" if val_accuracy is None else f"{val_accuracy:.3f}"
            print(f"[{job.cell}] epoch {epoch}/{params.epochs}: loss {train_loss:.4g}, val acc {acc}, "
                  f"{record['samples_per_s']:.0f} samples/s, {record['epoch_time_s']:.2f} s", flush=True)
        if diverged:
            status, stop_reason = "diverged", "diverged"
            break
        if params.stop_at_target and progress.epochs_above_target >= params.patience:
            stop_reason = "target"
            break

    if not is_writer:
        return None
    summary = {
        "study": job.study,
        "cell": job.cell,
        "status": status,
        "stop_reason": stop_reason,
        "params": params.to_dict(),
        "grid_axes": list(job.grid_axes),
        "world_size": hvd.size(),
        "hosts": hosts,
        "epochs_run": progress.epoch,
        "train_time_s": progress.train_time_s,
        "startup_s": startup_s,
        "best_val_accuracy": progress.best_val_accuracy,
        "final_val_accuracy": progress.last_record.get("val_accuracy"),
        "job_id": placement.job_id,
        "restarts": placement.attempt,
        "queue_time_s": queue_time_s(cell_dir, progress.first_started_at),
        "wall_time_s": time.time() - submitted_at(cell_dir, started),
    }
    write_json_atomically(cell_dir / RESULT_FILE, summary)
    return summary


def torch_threads(wanted: int, workers_on_this_node: int) -> int:
    """Threads per worker such that workers x threads never exceed the CPUs we were given."""
    available = len(os.sched_getaffinity(0))
    return max(1, min(wanted, available // workers_on_this_node))


def make_optimizer(params: TrainParams, model: Any) -> Any:
    import torch

    lr = learning_rate(params, 0.0)
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=params.momentum, weight_decay=params.weight_decay)
    if params.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=params.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=params.weight_decay)


def evaluate(model: Any, loader: Any, loss_fn: Any, device: Any, num_classes: int) -> tuple[float, int, int]:
    import torch

    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            loss_sum += float(loss_fn(outputs, targets)) * len(inputs)
            if num_classes:
                correct += int((outputs.argmax(dim=1) == targets).sum())
            count += len(inputs)
    return loss_sum, correct, count


def save_checkpoint(path: Path, model: Any, optimizer: Any, progress: Progress, params: TrainParams) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": progress,
                "params": params.to_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: Any, optimizer: Any, params: TrainParams) -> Progress:
    """Resume from the cell's checkpoint, unless it was made with other parameters."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("params") != params.to_dict():
        print(f"ignoring {path}: it was saved with other parameters", flush=True)
        return Progress()
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["progress"]


def prepare_metrics_file(path: Path, progress: Progress) -> None:
    """Keep the records of the epochs the checkpoint holds, and only those."""
    if progress.epoch == 0 or not path.exists():
        path.write_text("")
        return
    kept, epochs = [], set()
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the stop we are resuming from
        if record.get("type") != "epoch" or record.get("epoch", 0) <= progress.epoch:
            kept.append(line)
            epochs.add(record.get("epoch"))
    if progress.epoch not in epochs and progress.last_record:
        # Stopped between saving the checkpoint and logging its epoch.
        kept.append(json.dumps(progress.last_record, allow_nan=False))
    path.write_text("".join(line + "\n" for line in kept))


def append_record(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as out:
        out.write(json.dumps(record, allow_nan=False) + "\n")
        out.flush()
        os.fsync(out.fileno())


def submitted_at(cell_dir: Path, default: float) -> float:
    try:
        return float(json.loads((cell_dir / JOB_FILE).read_text())["submitted_at"])
    except (FileNotFoundError, KeyError, ValueError):
        return default


def queue_time_s(cell_dir: Path, first_started_at: float) -> float:
    """Seconds between submission and the first attempt's start (requeues not included)."""
    return max(0.0, first_started_at - submitted_at(cell_dir, first_started_at))


def versions() -> dict[str, str]:
    import horovod
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "horovod": horovod.__version__,
        "submitit": submitit.__version__,
    }
