"""Where a grid cell is trained: the data-parallel training job, Horovod or DDP.

Every task of a cell's submitit job runs `TrainingJob.__call__`. It follows Horovod's
PyTorch recipe, in Horovod's order: init, pin the local rank's GPU, shard the data,
scale the learning rate, wrap the model and optimizer, broadcast the initial state
from rank 0, average metrics with allreduce, and let rank 0 alone write. One loop
serves every backend: the collectives go through jobs/train/workers.py, Horovod or
PyTorch's DistributedDataParallel (params.backend) for several workers, nothing for
one (a 1-worker cell imports neither). jobs/launch/launcher.py submits the job.

What the numbers mean (jobs/cell.py's EpochRecord has the fields):
- The data sit on the worker's device as tensors; each epoch every rank slices its
  batches from its shard of a seeded permutation (jobs/train/data.py: epoch_shard),
  so nothing per sample runs in Python between steps and the same seed gives the
  same batches after a resume.
- The step loop never reads from the device: losses accumulate there and are read
  once per epoch, together with every other metric.
- An epoch's wall time, on rank 0's clock, is split into steps, validation, I/O
  (rank 0 saving the previous epoch's checkpoint and log line, which the others wait
  for at a barrier before the steps start, so it never lands in their step time),
  wait (barriers and reductions) and other. Throughput and time to accuracy count
  the steps only.
- A resumed run is exact: the checkpoint holds the model, the state of the optimizer
  the backend wraps (momentum, Adam's moments), and the progress; the learning rate and
  the data order are functions of the epoch. Slurm's warning before the time limit, or a
  preemption's SIGTERM, stops every rank at one agreed step (jobs/train/interrupt.py);
  that checkpoint also holds the step inside the epoch and each rank's random state,
  BatchNorm statistics and partial sums, and the requeued job resumes at that step.
- A run whose loss is not finite, or exceeds divergence_factor x the validation loss
  before training, ends as `diverged`: a result like any other.
- With 2+ workers each epoch also records the gradient noise scale B_simple from the
  local and the averaged gradients' norms (jobs/train/noise.py), summed on the device
  and reduced with the other metrics: no extra collective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

import submitit

from jobs.cell import (
    DAMAGED_SUFFIX,
    CellDir,
    EpochRecord,
    MetaRecord,
    SummaryRecord,
    finite_or_none,
    replaced_atomically,
)
from jobs.launch.slurm import other_live_owner
from jobs.plan.params import TrainParams, same_params
from jobs.plan.user_code import add_to_python_path, build_user_model, is_import_path, load_callable
from jobs.private import check_private, file_mode, never_group_writable
from jobs.train import rendezvous
from jobs.train.interrupt import StopAgreement, StopSignals, planned_signals
from jobs.train.workers import SingleWorker, Workers, start_workers

if TYPE_CHECKING:  # torch and what needs it are imported by the job itself, not by the launcher
    from jobs.train.noise import GradientNoiseMeter
    from jobs.train.precision import Precision
    from jobs.train.usage import UsageMeter

CHECKPOINT_VERSION = 2
VALIDATION_CHUNK = 1024  # samples per validation forward pass
# Testing switch: seconds rank 0 sleeps in each checkpoint save (a slow shared filesystem).
CHECKPOINT_DELAY_ENV = "SCALING_STUDY_TEST_CHECKPOINT_DELAY_S"


@dataclass
class Progress:
    """What survives a restart: saved in the checkpoint after each epoch."""

    epoch: int = 0
    train_time_s: float = 0.0  # training steps, summed over epochs: the clock of time to accuracy
    validation_time_s: float = 0.0
    io_time_s: float = 0.0
    wait_time_s: float = 0.0
    wall_time_s: float = 0.0  # the epochs' whole wall time
    epochs_above_target: int = 0
    best_val_accuracy: float | None = None
    initial_val_loss: float | None = None
    last_record: dict[str, Any] | None = None
    first_started_at: float | None = None  # when the first attempt started (queue time ends)
    longest_attempt_s: float = 0.0  # of the attempts that stopped before this one
    # A checkpoint written mid-epoch (on a stop signal): the steps of epoch `epoch + 1` done, and
    # rank 0's seconds of that partial epoch (io_s, wait_s, elapsed_s). Each rank's own partial
    # sums, random state and BatchNorm statistics are in the checkpoint's "ranks".
    epoch_step: int = 0
    partial_epoch: dict[str, float] | None = None

    def add(self, record: EpochRecord, params: TrainParams) -> None:
        self.epoch = record.epoch
        self.epoch_step, self.partial_epoch = 0, None
        self.train_time_s = float(record.train_time_s or 0.0)
        self.validation_time_s += float(record.validation_s or 0.0)
        self.io_time_s += float(record.io_s or 0.0)
        self.wait_time_s += float(record.wait_s or 0.0)
        self.wall_time_s = float(record.wall_time_s or 0.0)
        self.last_record = record.to_dict()
        accuracy = record.val_accuracy
        if accuracy is not None:
            self.best_val_accuracy = max(self.best_val_accuracy or 0.0, accuracy)
        if params.target_loss is not None:  # the target is on validation loss: at or below it
            loss = record.val_loss
            at_target = loss is not None and math.isfinite(loss) and loss <= params.target_loss
        else:
            at_target = accuracy is not None and accuracy >= params.target_accuracy
        self.epochs_above_target = self.epochs_above_target + 1 if at_target else 0


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
    python_path: tuple[str, ...] = ()  # the config's: where the user's model and data packages are
    threads_per_worker: int = 1
    controller: str = "gloo"
    share_with_group: bool = False  # launcher.share_results_with_group: the checkpoint's mode
    checkpoint_every_s: float | None = None  # launcher.checkpoint_every_s: periodic mid-epoch checkpoints
    time_limit_s: float | None = None  # what the job asked for: recorded, to compare with what it used
    memory_per_task_gb: float | None = None

    def __call__(self) -> dict[str, Any] | None:
        started = time.time()
        signals = StopSignals().install()  # Slurm's warning and preemption: noted, acted on at a step boundary
        never_group_writable()
        add_to_python_path(self.python_path)
        try:
            placement = rendezvous.placement_from_submitit()
            if (owner := other_live_owner(Path(self.cell_dir), placement.job_id)) is not None:
                print(f"{self.cell}: Slurm task {owner} owns {self.cell_dir} and is live; task {placement.job_id} "
                      "exits without touching it", file=sys.stderr, flush=True)
                return None
            workers = start_workers(placement, CellDir(self.cell_dir).path, TrainParams.from_dict(self.params),
                                    self.controller)
            summary = run_training(self, workers, placement.hostname, placement.job_id, placement.attempt, started,
                                   signals)
            workers.close()
            return summary
        finally:
            self._private_from_now_on()

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        self._private_from_now_on()  # submitit pickles the requeued job next
        return super().checkpoint(*args, **kwargs)

    def _private_from_now_on(self) -> None:
        """What the task writes from here on is submitit's pickle of its outcome (or of the
        requeued job): owner-only, or group-readable, as the private folder it goes to."""
        os.umask(0o777 & ~file_mode(self.share_with_group))


@dataclass
class Setup:
    """What every epoch of a cell uses, built once per start of its job (Horovod's examples'
    set-up: pin the device, shard the data, wrap the model and the optimizer)."""

    job: TrainingJob
    params: TrainParams
    cell: CellDir
    workers: Workers
    device: Any
    threads: int
    step: Step
    train: Any
    val: Any  # this rank's shard of the validation split
    classification: bool
    samples_per_rank: int
    steps_per_epoch: int
    usage: UsageMeter

    @property
    def is_writer(self) -> bool:
        return self.workers.rank == 0  # rank 0 alone writes


def run_training(job: TrainingJob, workers: Workers, hostname: str, job_id: str, attempt: int,
                 started: float, signals: StopSignals | None = None) -> dict[str, Any] | None:
    """Horovod's recipe in named steps: set up, resume and broadcast, the meta record, then
    one epoch after another until a stop rule says so, then rank 0's summary. A stop signal
    ends the task at an agreed step boundary, after rank 0's checkpoint of that position."""
    signals = signals if signals is not None else StopSignals()
    setup = set_up(job, workers)
    progress, resumed = resume_and_broadcast(setup, started)
    compile_s = warm_up(setup, progress)
    hosts = workers.allgather_object(hostname, name="hosts")
    startup_s = time.time() - started
    if setup.is_writer:
        write_meta(setup, progress, hosts, job_id, attempt, startup_s, compile_s)

    params = setup.params
    updates = UpdateRecorder(linear_weights(setup.step.model, params), setup.steps_per_epoch) \
        if params.record_updates and setup.is_writer else None
    stop = StopAgreement(signals, workers, planned_signals(params.signal_at), checkpoint_every_s=job.checkpoint_every_s)
    status, stop_reason = "complete", "epochs"
    pending: EpochRecord | None = None  # saved and logged at the start of the next epoch, on its clock
    epoch_start = device_clock(setup.device)
    for epoch in range(progress.epoch + 1, params.epochs + 1):
        # I/O: rank 0 saves the previous epoch; everyone waits for it (in run_epoch) before stepping.
        io_s = persist_epoch(setup.cell, job.cell, params, setup.step, progress, pending, job.share_with_group) \
            if pending is not None and setup.is_writer else 0.0
        stop.saved()
        setup.usage.start()  # the whole epoch's use, periodic checkpoints inside it included
        outcome = run_epoch_through_checkpoints(setup, progress, epoch, io_s, epoch_start, updates, stop, resumed,
                                                started)
        resumed = None
        record, epoch_start, is_diverged = outcome.record, outcome.end, outcome.diverged
        previous_loss = (progress.last_record or {}).get("train_loss")
        progress.add(record, params)
        pending = record
        if (rule := stop_rule(params, progress, record, is_diverged, previous_loss)) is not None:
            status, stop_reason = rule
            break
        if outcome.stop_requested and epoch < params.epochs:  # a signal during validation: stop at the epoch's end
            progress.longest_attempt_s = max(progress.longest_attempt_s, time.time() - started)
            if setup.is_writer:
                persist_epoch(setup.cell, job.cell, params, setup.step, progress, pending, job.share_with_group)
            leave(setup, stop)
    if pending is not None and setup.is_writer:
        persist_epoch(setup.cell, job.cell, params, setup.step, progress, pending, job.share_with_group)
    if not setup.is_writer:
        return None
    return write_summary(setup, progress, status, stop_reason, hosts, job_id, attempt, startup_s, started)


def run_epoch_through_checkpoints(setup: Setup, progress: Progress, epoch: int, io_s: float, epoch_start: float,
                                  updates: UpdateRecorder | None, stop: StopAgreement, resumed: MidEpoch | None,
                                  started: float) -> FinishedEpoch:
    """run_epoch, and the checkpoints the ranks agree on inside it: after a periodic one
    (checkpoint_every_s) the epoch goes on in this process from it, as a resume would; after a
    signal's, the task ends."""
    outcome = run_epoch(setup, progress, epoch, io_s, epoch_start, updates, stop, resumed)
    while isinstance(outcome, StoppedEpoch):
        if not stop.checkpoint_only:
            progress.longest_attempt_s = max(progress.longest_attempt_s, time.time() - started)
        resumed = save_mid_epoch(setup, progress, outcome, updates)
        if not stop.checkpoint_only:
            leave(setup, stop)
        if setup.is_writer:
            print(f"[{setup.job.cell}] checkpoint inside epoch {epoch} after {outcome.steps} steps "
                  f"(checkpoint_every_s = {setup.job.checkpoint_every_s:g})", flush=True)
        stop.saved()
        outcome = run_epoch(setup, progress, epoch, 0.0, device_clock(setup.device), updates, stop, resumed)
    return outcome


def leave(setup: Setup, stop: StopAgreement) -> NoReturn:
    """End the task after a stop, rank 0's checkpoint written (jobs/train/interrupt.py)."""
    if setup.is_writer:
        rendezvous.withdraw_address(setup.cell.path)
    stop.signals.leave(setup.workers, setup.job.cell, stop.signum)


def set_up(job: TrainingJob, workers: Workers) -> Setup:
    """Threads and device, the data and this rank's shards, the model, its precision, the
    backend's wrappers of model and optimizer, and the gradient noise meter."""
    import torch

    from jobs.train.data import load_dataset
    from jobs.train.models import build_model
    from jobs.train.noise import GradientNoiseMeter
    from jobs.train.optim import make_optimizer
    from jobs.train.precision import configure_precision
    from jobs.train.usage import UsageMeter

    params = TrainParams.from_dict(job.params)
    threads = torch_threads(job.threads_per_worker, workers.local_size)
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(workers.local_rank)  # one GPU per worker process
        device = torch.device("cuda", workers.local_rank)
    world, rank = workers.size, workers.rank

    torch.manual_seed(params.seed)
    data = load_dataset(params.dataset, Path(job.data_dir), seed=params.seed, train_subset=params.train_subset,
                        args=params.dataset_args)
    train, val = data_split(data.train, params, device), data_split(data.val, params, device).shard(world, rank)
    samples_per_rank = len(train) // world  # each worker trains on its shard (epoch_shard)
    classification = data.task == "classification"  # accuracy is reported for class targets
    loss_fn = loss_function(params.loss, classification)

    model = build_user_model(params.model, params.model_args) if is_import_path(params.model) else \
        build_model(params.model, data.input_shape, data.num_classes, width=params.width, depth=params.depth,
                    model_args=params.model_args)
    model.to(device)
    precision = configure_precision(params, device, model)
    # The module is what is saved and broadcast; the backend's wrapper (DDP's) and the compiled one,
    # if any, share its parameters.
    forward, optimizer = workers.wrap(model, make_optimizer(params, model))
    noise = GradientNoiseMeter(model, device) if world > 1 and params.measure_noise_scale else None
    step = Step(model, torch.compile(forward) if params.compile else forward, optimizer, loss_fn, precision,
                workers, noise)
    return Setup(job, params, CellDir(job.cell_dir), workers, device, threads, step, train, val, classification,
                 samples_per_rank, math.ceil(samples_per_rank / params.batch_size), UsageMeter(threads, device))


def resume_and_broadcast(setup: Setup, started: float) -> tuple[Progress, MidEpoch | None]:
    """Rank 0 resumes from the cell's checkpoint, if any; every worker starts from rank 0's
    parameters and, resuming, its optimizer (and gradient scaler) state, and, resuming
    mid-epoch, from its own state at the stop (MidEpoch)."""
    workers, step, is_writer = setup.workers, setup.step, setup.is_writer
    progress, resumed = Progress(), None
    if is_writer and setup.cell.checkpoint.exists():
        progress, resumed = load_checkpoint(setup.cell, step, setup.params)
    progress = workers.broadcast_object(progress, name="progress")
    if progress.epoch_step > 0:
        resumed = workers.broadcast_object(resumed, name="mid_epoch")
    # (Not hvd.broadcast_optimizer_state: its zero-gradient step would apply weight decay once.)
    workers.broadcast_parameters(step.model.state_dict())
    if progress.epoch > 0 or progress.epoch_step > 0:
        optimizer_state = workers.broadcast_object(step.optimizer.state_dict() if is_writer else None,
                                                   name="optimizer_state")
        if not is_writer:
            step.optimizer.load_state_dict(optimizer_state)
        scaler = step.precision.scaler
        if scaler is not None:
            scaler.load_state_dict(workers.broadcast_object(scaler.state_dict() if is_writer else None,
                                                            name="grad_scaler"))
    if progress.first_started_at is None:
        progress.first_started_at = started
    return progress, resumed


def warm_up(setup: Setup, progress: Progress) -> float | None:
    """Before the first epoch's clock: torch.compile's graphs (their seconds returned) and, on
    a first start, the validation loss before training (the divergence rule's reference)."""
    import torch

    step, params = setup.step, setup.params
    compile_s = warm_up_compiled(step, setup.train, setup.val, params.batch_size, setup.device) \
        if params.compile else None
    if step.noise is not None:
        step.noise.discard()  # the warm-up's backward pass was no training step
    if progress.initial_val_loss is None:
        loss_sum, _, count = evaluate(step, setup.val, setup.classification)
        totals = setup.workers.sum(torch.stack([loss_sum, count]).to("cpu", torch.float64), name="initial_val_loss")
        progress.initial_val_loss = float(totals[0] / totals[1])
    return compile_s


def write_meta(setup: Setup, progress: Progress, hosts: list[str], job_id: str, attempt: int, startup_s: float,
               compile_s: float | None) -> None:
    """Rank 0 keeps the metrics of the epochs the checkpoint holds and records this start."""
    job, params, workers, cell = setup.job, setup.params, setup.workers, setup.cell
    world = workers.size
    trained = [p for p in setup.step.model.parameters() if p.requires_grad]
    cell.trim_metrics(progress.epoch, EpochRecord.from_dict(progress.last_record) if progress.last_record else None,
                      fresh=progress.epoch == 0 and progress.epoch_step == 0)
    cell.append(MetaRecord(
        study=job.study,
        cell=job.cell,
        world_size=world,
        local_size=workers.local_size,
        nodes=workers.nodes,
        hosts=hosts,
        controller=workers.controller,
        communication=workers.communication(),
        threads_per_worker=setup.threads,
        device=str(setup.device),
        job_id=job_id,
        attempt=attempt,
        resumed_from_epoch=progress.epoch,
        resumed_from_step=progress.epoch_step,
        time_limit_s=job.time_limit_s,
        memory_per_task_gb=job.memory_per_task_gb,
        startup_s=startup_s,
        compile_s=compile_s,
        steps_per_epoch=setup.steps_per_epoch,
        samples_per_epoch=setup.samples_per_rank * world,
        initial_val_loss=finite_or_none(progress.initial_val_loss),
        parameters=sum(p.numel() for p in trained),
        gradient_bytes=sum(p.numel() * p.element_size() for p in trained),
        flops_per_sample=training_flops_per_sample(setup.step.model, next(iter(setup.val.chunks(2)))[0]),
        machine=machine(setup.device),
        versions=versions(),
        params=params.to_dict(),
    ))
    print(f"[{job.cell}] world size {world} on {sorted(set(hosts))}, global batch {params.batch_size * world}, "
          f"{setup.steps_per_epoch} steps/epoch, lr {params.lr} -> {params.scaled_lr():g} ({params.lr_scaling}), "
          f"start-up {startup_s:.1f} s", flush=True)


@dataclass
class MidEpoch:
    """What a mid-epoch checkpoint holds beyond the model and optimizer: each rank's state at the
    stop (random generators, BatchNorm statistics, partial loss and noise sums, step seconds)
    and rank 0's updates of Lab 1's model so far."""

    ranks: list[dict[str, Any]]
    updates: Any = None


@dataclass
class FinishedEpoch:
    record: EpochRecord
    end: float  # on the device clock: the next epoch's start
    diverged: bool
    stop_requested: bool  # a rank received a stop signal: the ranks agreed in the epoch's reduction


@dataclass
class StoppedEpoch:
    """An epoch the ranks agreed to stop inside: this rank's position and partial sums."""

    steps: int
    loss_sum: Any
    steps_s: float
    io_s: float
    wait_s: float
    elapsed_s: float


class EpochSums(NamedTuple):
    """What the workers sum at an epoch's end, in the order of the one tensor they reduce: the
    losses and validation counts, the noise meter's totals (jobs/train/noise.py), the stop flags
    (jobs/train/interrupt.py) and the usage readings (jobs/train/usage.py)."""

    train_loss: float
    val_loss: float
    val_correct: float
    val_count: float
    noise_local: float
    noise_averaged: float
    noise_steps: float
    usr2: float
    term: float
    cpu_s: float
    cpu_capacity_s: float
    gpu_utilization: float
    gpu_sampled: float


def run_epoch(setup: Setup, progress: Progress, epoch: int, io_s: float, epoch_start: float,
              updates: UpdateRecorder | None, stop: StopAgreement | None = None,
              resumed: MidEpoch | None = None) -> FinishedEpoch | StoppedEpoch:
    """One epoch after rank 0's I/O: wait for it, train on this rank's shard (from the step a
    mid-epoch checkpoint stopped at, if `resumed`), validate, and reduce every metric at once.
    Returns the finished epoch, or where it stopped if the ranks agreed to stop inside it."""
    import torch

    from jobs.train.data import epoch_seed, epoch_shard
    from jobs.train.noise import NOT_MEASURED, epoch_noise

    params, workers, step, device = setup.params, setup.workers, setup.step, setup.device
    world, rank = workers.size, workers.rank
    mark = device_clock(device)
    workers.barrier()
    wait_s = device_clock(device) - mark
    if params.fail_at_epoch == epoch and rank == world - 1:
        raise RuntimeError(f"fail_at_epoch = {epoch}: rank {rank} fails on purpose (testing switch)")

    first, carried = 0, EpochCarry()
    if resumed is not None and progress.epoch_step > 0:
        first, carried = progress.epoch_step, restore_rank_state(setup, resumed, progress.partial_epoch or {})
        if updates is not None and resumed.updates is not None:
            updates.restore(resumed.updates)
    else:
        torch.manual_seed(epoch_seed(params.seed, epoch) + rank)  # any randomness in the model, resumable
    shard = epoch_shard(len(setup.train), world, rank, seed=params.seed, epoch=epoch).to(device)
    rates = epoch_learning_rates(params, epoch, setup.steps_per_epoch)
    if stop is not None:
        stop.epoch = epoch
    step.model.train()  # not on the step clock: Module.train() visits every submodule
    mark = device_clock(device)
    trained = train_epoch(step, setup.train, shard, params.batch_size, rates,
                          updates.record if updates is not None else None, first, stop)
    steps_s = device_clock(device) - mark + carried.steps_s
    loss_sum, lr, steps_done = trained.loss_sum(), trained.lr, trained.done
    if carried.loss_sum is not None:
        loss_sum = loss_sum + carried.loss_sum
    io_s, wait_s = io_s + carried.io_s, wait_s + carried.wait_s
    if steps_done < setup.steps_per_epoch:
        return StoppedEpoch(steps_done, loss_sum, steps_s, io_s, wait_s,
                            device_clock(device) - epoch_start + carried.elapsed_s)

    mark = device_clock(device)
    average_batchnorm_statistics(step.model, workers)  # one set of statistics to validate and save
    wait_s += device_clock(device) - mark
    mark = device_clock(device)
    val_loss_sum, val_correct, val_count = evaluate(step, setup.val, setup.classification)
    validation_s = device_clock(device) - mark

    mark = device_clock(device)
    # The epoch's one read from the device: every metric at once, summed over the workers, with
    # each rank's stop flag (a signal that came after the last check inside the epoch).
    noise_totals = step.noise.take() if step.noise is not None else torch.zeros(3, dtype=torch.float64, device=device)
    weights = linear_weights(step.model, params)
    used = setup.usage.read()
    usr2, term = stop.signals.flags() if stop is not None else [0.0, 0.0]
    on_host = torch.tensor([usr2, term, used.cpu_s, used.cpu_capacity_s, used.gpu_utilization or 0.0,
                            float(used.gpu_utilization is not None)], dtype=torch.float64, device=device)
    local = torch.cat([torch.stack([loss_sum, val_loss_sum, val_correct, val_count]).double(), noise_totals, on_host,
                       torch.stack(weights).double() if weights else noise_totals[:0]]).to("cpu")
    summed = len(EpochSums._fields)  # the rest of `local`, Lab 1's (w, b), is the same on every rank
    sums = EpochSums(*workers.sum(local[:summed], name="epoch_sums").tolist())
    largest = workers.max(torch.tensor([steps_s, used.max_rss_gb, used.gpu_memory_gb if used.gpu_memory_gb is not None
                                        else -1.0], dtype=torch.float64), name="epoch_largest")
    slowest_steps_s = float(largest[0])
    wait_s += device_clock(device) - mark

    epoch_end = device_clock(device)
    epoch_time_s = epoch_end - epoch_start + carried.elapsed_s
    samples = setup.samples_per_rank * world
    train_loss = sums.train_loss / samples
    val_loss = sums.val_loss / sums.val_count
    val_accuracy = sums.val_correct / sums.val_count if setup.classification else None
    weight, bias = (float(local[summed]), float(local[summed + 1])) if weights else (None, None)
    gradient_noise = epoch_noise(sums.noise_local, sums.noise_averaged, sums.noise_steps, params.batch_size,
                                 world) or NOT_MEASURED
    is_diverged = diverged(train_loss, val_loss, progress.initial_val_loss, params.divergence_factor)
    record = EpochRecord(
        epoch=epoch,
        steps_s=steps_s,
        validation_s=validation_s,
        io_s=io_s,
        wait_s=wait_s,
        other_s=epoch_time_s - steps_s - validation_s - io_s - wait_s,
        slowest_steps_s=slowest_steps_s,
        epoch_time_s=epoch_time_s,
        train_time_s=progress.train_time_s + steps_s,
        wall_time_s=progress.wall_time_s + epoch_time_s,
        steps=setup.steps_per_epoch,
        samples=samples,
        samples_per_s=samples / steps_s,
        train_loss=finite_or_none(train_loss),
        val_loss=finite_or_none(val_loss),
        val_accuracy=None if is_diverged else val_accuracy,
        lr=lr,
        world_size=world,
        load_average_1m=os.getloadavg()[0],
        weight=finite_or_none(weight),
        bias=finite_or_none(bias),
        updates=updates.read() if updates is not None else None,
        grad_sq_norm_local=finite_or_none(gradient_noise.local_sq_norm),
        grad_sq_norm_averaged=finite_or_none(gradient_noise.averaged_sq_norm),
        grad_sq_norm=finite_or_none(gradient_noise.gradient_sq_norm),
        grad_trace=finite_or_none(gradient_noise.gradient_trace),
        noise_scale=finite_or_none(gradient_noise.noise_scale),
        cpu_efficiency=sums.cpu_s / sums.cpu_capacity_s if sums.cpu_capacity_s > 0 else None,
        max_rss_gb=float(largest[1]),
        gpu_utilization=sums.gpu_utilization / sums.gpu_sampled if sums.gpu_sampled > 0 else None,
        gpu_memory_gb=float(largest[2]) if largest[2] >= 0 else None,
    )
    stop_requested = stop is not None and stop.agree(sums.usr2, sums.term)
    return FinishedEpoch(record, epoch_end, is_diverged, stop_requested)


@dataclass
class EpochCarry:
    """What the part of an epoch before a mid-epoch stop adds to its resumed part."""

    loss_sum: Any = None
    steps_s: float = 0.0
    io_s: float = 0.0
    wait_s: float = 0.0
    elapsed_s: float = 0.0


def rank_state(setup: Setup, stopped: StoppedEpoch) -> dict[str, Any]:
    """This rank's state at a mid-epoch stop: tensors and plain values (a weights-only checkpoint)."""
    import torch

    device = setup.device
    return {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        # BatchNorm statistics are each rank's own until the epoch's end averages them.
        "buffers": {name: buffer.detach().to("cpu", copy=True) for name, buffer in setup.step.model.named_buffers()},
        "loss_sum": stopped.loss_sum.detach().to("cpu", copy=True),
        "noise": setup.step.noise.totals.to("cpu", copy=True) if setup.step.noise is not None else None,
        "steps_s": stopped.steps_s,
    }


def restore_rank_state(setup: Setup, resumed: MidEpoch, partial: dict[str, float]) -> EpochCarry:
    """This rank's state at the stop, back in place; what the epoch's part before it adds."""
    import torch

    state = resumed.ranks[setup.workers.rank]
    torch.set_rng_state(state["rng"])
    if setup.device.type == "cuda" and state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], setup.device)
    buffers = dict(setup.step.model.named_buffers())
    with torch.no_grad():
        for name, value in state["buffers"].items():
            buffers[name].copy_(value)
        if setup.step.noise is not None and state["noise"] is not None:
            setup.step.noise.totals.copy_(state["noise"])
    return EpochCarry(state["loss_sum"].to(setup.device), float(state["steps_s"]), float(partial.get("io_s", 0.0)),
                      float(partial.get("wait_s", 0.0)), float(partial.get("elapsed_s", 0.0)))


def save_mid_epoch(setup: Setup, progress: Progress, stopped: StoppedEpoch, updates: UpdateRecorder | None) -> MidEpoch:
    """Every rank hands rank 0 its state at the stop; rank 0 writes the checkpoint of this position
    (or, the disk refusing it, keeps the last one). `progress` is left at the position, and the
    states returned, for an epoch that goes on in this process: the write's seconds are its I/O."""
    started = time.perf_counter()
    states = setup.workers.allgather_object(rank_state(setup, stopped), name="rank_states")
    progress.epoch_step = stopped.steps
    progress.partial_epoch = {"io_s": stopped.io_s, "wait_s": stopped.wait_s, "elapsed_s": stopped.elapsed_s}
    mid_epoch = MidEpoch(states, updates.values[:updates.count].to("cpu", copy=True) if updates is not None else None)
    if setup.is_writer:
        save_checkpoint(setup.cell, setup.step, progress, setup.params, setup.job.share_with_group, mid_epoch)
    seconds = time.perf_counter() - started
    progress.partial_epoch = {**progress.partial_epoch, "io_s": stopped.io_s + seconds,
                              "elapsed_s": stopped.elapsed_s + seconds}
    return mid_epoch


def stop_rule(params: TrainParams, progress: Progress, record: EpochRecord, is_diverged: bool,
              previous_loss: float | None) -> tuple[str, str] | None:
    """(status, stop reason) when the run stops after this epoch; None while it goes on."""
    if is_diverged:
        return "diverged", "diverged"
    if params.stop_at_target and progress.epochs_above_target >= params.patience:
        return "complete", "target"
    assert record.train_loss is not None  # finite: it did not diverge
    if loss_settled(previous_loss, record.train_loss, params.stop_at_loss_change):
        return "complete", "converged"
    return None


def write_summary(setup: Setup, progress: Progress, status: str, stop_reason: str, hosts: list[str], job_id: str,
                  attempt: int, startup_s: float, started: float) -> dict[str, Any]:
    """Rank 0's result.json, which the launcher publishes as the cell's summary.json."""
    job, cell = setup.job, setup.cell
    first_started_at = progress.first_started_at if progress.first_started_at is not None else started
    summary = SummaryRecord(
        study=job.study,
        cell=job.cell,
        status=status,
        stop_reason=stop_reason,
        params=setup.params.to_dict(),
        grid_axes=list(job.grid_axes),
        world_size=setup.workers.size,
        hosts=hosts,
        epochs_run=progress.epoch,
        train_time_s=progress.train_time_s,
        validation_time_s=progress.validation_time_s,
        io_time_s=progress.io_time_s,
        wait_time_s=progress.wait_time_s,
        wall_time_training_s=progress.wall_time_s,
        startup_s=startup_s,
        best_val_accuracy=progress.best_val_accuracy,
        final_val_accuracy=(progress.last_record or {}).get("val_accuracy"),
        job_id=job_id,
        restarts=attempt,
        queue_time_s=max(0.0, first_started_at - cell.submitted_at(first_started_at)),
        wall_time_s=time.time() - cell.submitted_at(started),
        longest_attempt_s=max(progress.longest_attempt_s, time.time() - started),
    )
    cell.write_result(summary)
    return summary.to_dict()


def data_split(dataset: Any, params: TrainParams, device: Any) -> Any:
    """The split as the step loop reads it: tensors on the device, or a DataLoader (data_path)."""
    from jobs.train.data import DeviceSplit, LoaderSplit

    if params.data_path == "loader":
        return LoaderSplit(dataset, device, params.loader_workers)
    return DeviceSplit.of(dataset, device)


def device_clock(device: Any) -> float:
    """Seconds, read once the device has finished the work queued so far."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Step:
    """What one training step uses."""

    model: Any  # the torch.nn.Module: its state is what is saved and broadcast
    forward: Any  # the module, or its DDP and torch.compile wrappers (same parameters)
    optimizer: Any  # Horovod's DistributedOptimizer for several Horovod workers
    loss_fn: Any
    precision: Precision
    workers: Workers = dataclasses.field(default_factory=SingleWorker)
    noise: GradientNoiseMeter | None = None  # cells of 2+ workers: the gradient noise scale's sums


def epoch_learning_rates(params: TrainParams, epoch: int, steps_per_epoch: int) -> list[float]:
    """The lr of each step of `epoch` (1-based), computed before the epoch's clock starts."""
    from jobs.train.optim import learning_rate

    return [learning_rate(params, epoch - 1 + index / steps_per_epoch) for index in range(steps_per_epoch)]


class EpochSteps(NamedTuple):
    """What train_epoch ran: each step's loss (detached, on the device), the last lr, the steps of
    the epoch done (its steps up to the last, or fewer where the ranks agreed to stop)."""

    losses: list[Any]
    lr: float
    done: int
    batch_size: int
    samples: int  # in the steps run

    def loss_sum(self) -> Any:
        """The loss summed over the samples of the steps run: a few kernels, so the caller runs it
        after reading the step clock. Every batch holds batch_size samples but the last, which
        holds the rest (the plan keeps batch_size within a worker's share: at least one batch)."""
        import torch

        per_batch = torch.stack(self.losses).float()
        last_size = self.samples - self.batch_size * (len(self.losses) - 1)
        if last_size == self.batch_size:
            return per_batch.sum() * self.batch_size
        return per_batch[:-1].sum() * self.batch_size + per_batch[-1] * last_size


def train_epoch(step: Step, train: Any, shard: Any, batch_size: int, rates: list[float],
                after_update: Callable[[int], None] | None = None, first: int = 0,
                stop: StopAgreement | None = None) -> EpochSteps:
    """The epoch's steps over this rank's shard at the given lr per step, from step `first`
    (0-based) on, until the last or until the ranks agree to stop.

    The hot loop is what a hand-written loop would be: the lr is set only when it changes,
    plain fp32 skips the autocast and scaler calls, and each step's loss is only kept (its
    detached tensor, no kernel); EpochSteps.loss_sum sums them, after the clock. The stop
    check costs an integer comparison per step (jobs/train/interrupt.py)."""
    from jobs.train.precision import step_after_average

    if not step.model.training:  # run_epoch sets it before the clock; a direct caller may not have
        step.model.train()
    optimizer, forward, loss_fn, precision = step.optimizer, step.forward, step.loss_fn, step.precision
    plain = precision.is_plain()
    noise = step.noise
    losses = []
    lr = None
    measure = None
    last = len(rates) - 1
    check_at = stop.first_check(first) if stop is not None else -1
    done = len(rates)
    for index, (inputs, targets) in enumerate(train.batches(shard[first * batch_size:], batch_size), start=first):
        if rates[index] != lr:
            lr = rates[index]
            for group in optimizer.param_groups:
                group["lr"] = lr
        if noise is not None:  # the estimators need batches of one size: a partial last batch is not counted
            measure = functools.partial(noise.after_average, len(targets) == batch_size)
        optimizer.zero_grad()
        if plain:
            loss = loss_fn(forward(inputs), targets)
            loss.backward()
            if measure is None:
                optimizer.step()
            else:
                step_after_average(optimizer, step.workers, measure)
        else:
            with precision.autocast():
                loss = loss_fn(forward(precision.inputs(inputs)), targets)
            precision.backward_and_step(loss, optimizer, step.workers, measure)
        losses.append(loss.detach())
        if after_update is not None:
            after_update(index)
        if index == check_at:
            assert stop is not None
            stopping, check_at = stop.check(index)
            if stopping and index < last:  # at the last step the epoch finishes, and stops at its end
                done = index + 1
                break
    if done < len(rates):
        return EpochSteps(losses, float(lr or rates[first]), done, batch_size, batch_size * len(losses))
    return EpochSteps(losses, rates[-1], done, batch_size, len(shard) - first * batch_size)


def training_flops_per_sample(model: Any, inputs: Any) -> float | None:
    """3 x the forward pass's floating-point operations per sample, the usual count of a training
    step's (the backward pass costs about twice the forward), counted by torch.utils.flop_counter
    over an evaluation-mode forward, which changes no weight, statistic or random state."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs)
    finally:
        model.train(was_training)
    total = counter.get_total_flops()
    return 3.0 * total / len(inputs) if total > 0 else None


def loss_function(name: str, classification: bool) -> Any:
    """The cell's loss: by the targets (auto), by name, or the user's function."""
    import torch

    if is_import_path(name):
        return load_callable(name)
    if name == "cross_entropy" or (name == "auto" and classification):
        return cross_entropy
    return torch.nn.functional.mse_loss


def cross_entropy(logits: Any, targets: Any) -> Any:
    """Mean cross-entropy over the targets: one class per sample (logits N x C), or one per
    position of a sequence (logits N x T x C, targets N x T), as a language model predicts."""
    import torch

    if logits.dim() > 2:
        return torch.nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten())
    return torch.nn.functional.cross_entropy(logits, targets)


def evaluate(step: Step, split: Any, classification: bool) -> tuple[Any, Any, Any]:
    """(summed loss, correct predictions, samples) over a split, as device tensors."""
    import torch

    step.model.eval()
    device = step.precision.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    with torch.no_grad(), step.precision.autocast():
        for inputs, targets in split.chunks(VALIDATION_CHUNK):
            outputs = step.forward(step.precision.inputs(inputs))
            loss_sum += step.loss_fn(outputs, targets).float() * len(targets)
            if classification:
                # A sample's share of right predictions: 1 or 0 for one class per sample, the
                # fraction of its tokens for a sequence of them.
                correct += (outputs.argmax(dim=-1) == targets).float().sum() * (len(targets) / targets.numel())
    return loss_sum, correct, torch.full((), float(len(split)), device=device)  # a fill: no copy to the device


def warm_up_compiled(step: Step, train: Any, val: Any, batch_size: int, device: Any) -> float:
    """Compile the training and the validation graph before the first epoch's clock starts, and
    return the seconds it took. The warm-up step's effects (gradients, BatchNorm statistics,
    random numbers) are undone, so the run trains exactly as without it."""
    import copy

    import torch

    started = device_clock(device)
    saved_state, saved_rng = copy.deepcopy(step.model.state_dict()), torch.get_rng_state()
    step.model.train()
    inputs, targets = next(train.batches(torch.arange(min(batch_size, len(train)), device=device), batch_size))
    with step.precision.autocast():
        loss = step.loss_fn(step.forward(step.precision.inputs(inputs)), targets)
    loss.backward()
    step.optimizer.zero_grad(set_to_none=True)
    step.model.load_state_dict(saved_state)
    torch.set_rng_state(saved_rng)
    evaluate(step, val, classification=False)
    return device_clock(device) - started


class UpdateRecorder:
    """(w, b) of Lab 1's linear model after each update of an epoch, kept on the device
    (one small copy per update) and read with the epoch's other metrics."""

    def __init__(self, weights: list[Any], steps_per_epoch: int) -> None:
        import torch

        self.weights = weights  # views of w and b (linear_weights): they follow every update
        self.values = torch.zeros(steps_per_epoch, 2, device=weights[0].device)
        self.count = 0

    def record(self, index: int) -> None:
        import torch

        torch.stack(self.weights, out=self.values[index])
        self.count = index + 1

    def restore(self, values: Any) -> None:
        """The updates of an epoch's part before a mid-epoch stop."""
        self.values[:len(values)] = values.to(self.values.device)
        self.count = len(values)

    def read(self) -> list[list[float]]:
        values = self.values[:self.count].tolist()
        self.count = 0
        return values


def loss_settled(previous: float | None, current: float, tolerance: float | None) -> bool:
    """Lab 1's stop rule: the epoch loss changed by less than `tolerance` x the previous epoch's."""
    if tolerance is None or previous is None or not math.isfinite(current) or previous == 0:
        return False
    return abs(current - previous) / abs(previous) < tolerance


def linear_weights(model: Any, params: TrainParams) -> list[Any]:
    """Lab 1's (w, b) of the one-input linear model, to log each epoch; nothing for other models."""
    if params.model != "linear":
        return []
    layer = model[-1]
    if layer.weight.numel() != 1:
        return []
    return [layer.weight.detach().reshape(()), layer.bias.detach().reshape(())]


def average_batchnorm_statistics(model: Any, workers: Workers) -> None:
    """Each rank's BatchNorm running statistics come from its own shard; validate and save their mean."""
    import torch

    buffers = [buffer for module in model.modules()
               if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats
               for buffer in (module.running_mean, module.running_var) if buffer is not None]
    if workers.size > 1 and buffers:
        workers.average_in_place(buffers, name="batchnorm_statistics")


def diverged(train_loss: float, val_loss: float, initial_val_loss: float | None, factor: float) -> bool:
    """Not finite, or far above where training started (factor x the validation loss before step 1)."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        return True
    return initial_val_loss is not None and math.isfinite(initial_val_loss) and train_loss > factor * initial_val_loss


def torch_threads(wanted: int, workers_on_this_node: int) -> int:
    """Threads per worker such that workers x threads never exceed the CPUs we were given."""
    available = len(os.sched_getaffinity(0))
    return max(1, min(wanted, available // workers_on_this_node))


def persist_epoch(cell: CellDir, cell_name: str, params: TrainParams, step: Step,
                  progress: Progress, record: EpochRecord, shared: bool = False) -> float:
    """Rank 0 saves the checkpoint of a finished epoch, then logs it; returns the seconds it took."""
    started = time.perf_counter()
    if not save_checkpoint(cell, step, progress, params, shared):
        print(f"[{cell_name}] epoch {record.epoch} is logged without a checkpoint: a resume starts from the "
              "last one written and trains this epoch again", file=sys.stderr, flush=True)
    cell.append(record)
    acc = "n/a" if record.val_accuracy is None else f"{record.val_accuracy:.3f}"
    print(f"[{cell_name}] epoch {record.epoch}/{params.epochs}: loss {record.train_loss}, val acc {acc}, "
          f"{record.samples_per_s:.0f} samples/s, steps {record.steps_s:.3f} s of {record.epoch_time_s:.3f} s",
          flush=True)
    return time.perf_counter() - started


def save_checkpoint(cell: CellDir, step: Step, progress: Progress, params: TrainParams, shared: bool = False,
                    mid_epoch: MidEpoch | None = None) -> bool:
    """Tensors and plain Python values only, so that loading needs no pickle (weights_only);
    owner-only (or group-readable) whatever the umask. A write the disk refuses (full, quota,
    a file-size limit) is one line and False: the previous checkpoint stays whole, and training
    goes on. `mid_epoch`: the ranks' states at a stop inside the epoch after progress.epoch."""
    import io

    import torch

    scaler = step.precision.scaler
    # Serialised in memory first, so that the only error writing the file can raise is the disk's.
    state = io.BytesIO()
    torch.save({"version": CHECKPOINT_VERSION, "model": step.model.state_dict(),
                "optimizer": step.optimizer.state_dict(), "grad_scaler": scaler.state_dict() if scaler else None,
                "progress": dataclasses.asdict(progress), "params": params.to_dict(),
                "ranks": mid_epoch.ranks if mid_epoch else None, "updates": mid_epoch.updates if mid_epoch else None},
               state)
    try:
        with replaced_atomically(cell.checkpoint, binary=True, mode=file_mode(shared)) as out:
            out.write(state.getbuffer())
            delay = float(os.environ.get(CHECKPOINT_DELAY_ENV, "0") or 0)
            if delay > 0:
                time.sleep(delay)
    except OSError as error:
        kept = "the previous checkpoint is kept" if cell.checkpoint.exists() else "there is no earlier checkpoint"
        print(f"could not write the checkpoint {cell.checkpoint}: {error.strerror or error}; {kept}",
              file=sys.stderr, flush=True)
        return False
    return True


def load_checkpoint(cell: CellDir, step: Step, params: TrainParams) -> tuple[Progress, MidEpoch | None]:
    """Resume from the cell's checkpoint, unless it was made with other parameters or another format:
    (the progress, the ranks' states if it was written mid-epoch).

    | the checkpoint                                    | what happens                          |
    | someone else's, or writable by group or others    | NotPrivate: the cell fails, in one line |
    | not readable as weights only (corrupt, truncated, | set aside as checkpoint.pt.damaged,   |
    |   foreign, an older format needing pickle)        |   one line; the cell starts afresh    |
    | readable as weights only                          | resume                                |
    torch.load(weights_only=True) rebuilds tensors and plain Python values and refuses any
    other object, so a replaced checkpoint cannot run code."""
    import torch

    check_private(cell.checkpoint)
    try:
        state = torch.load(cell.checkpoint, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"a {type(state).__name__}, not a dict")
    except Exception as error:
        damaged = cell.checkpoint.with_name(cell.checkpoint.name + DAMAGED_SUFFIX)
        os.replace(cell.checkpoint, damaged)
        print(f"{cell.checkpoint} cannot be read as weights only ({last_line(error)}); set aside as {damaged}, "
              "the cell starts afresh", file=sys.stderr, flush=True)
        return Progress(), None
    if state.get("version") != CHECKPOINT_VERSION or not same_params(state.get("params"), params):
        print(f"ignoring {cell.checkpoint}: it was saved with other parameters or by another version", flush=True)
        return Progress(), None
    step.model.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    if step.precision.scaler is not None and state.get("grad_scaler"):
        step.precision.scaler.load_state_dict(state["grad_scaler"])
    progress = Progress(**state["progress"])
    if progress.epoch_step > 0 and state.get("ranks"):
        return progress, MidEpoch(state["ranks"], state.get("updates"))
    progress.epoch_step, progress.partial_epoch = 0, None  # (no ranks' states: resume at the epoch's start)
    return progress, None


def last_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def machine(device: Any) -> dict[str, Any]:
    """Rank 0's host as the cell found it: the CPUs it may use, its load, its GPU."""
    import torch

    found: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0)), "cpus_on_host": os.cpu_count(),
                             "load_average": list(os.getloadavg()), "gpu": None, "cuda": torch.version.cuda}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        found.update(gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1),
                     compute_capability=f"{properties.major}.{properties.minor}", gpu_driver=nvidia_driver())
    return found


def nvidia_driver(version_file: Path = Path("/proc/driver/nvidia/version")) -> str | None:
    """The NVIDIA kernel module's version ("550.54.15"), which CUDA's own calls do not give."""
    try:
        text = version_file.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return match.group(1) if match else None


def versions() -> dict[str, str]:
    import importlib.metadata

    import torch

    found = {"python": platform.python_version(), "torch": torch.__version__, "submitit": submitit.__version__}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):  # not imported: 1 worker runs without it
        found["horovod"] = importlib.metadata.version("horovod")
    return found
