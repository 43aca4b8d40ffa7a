"""The parameters of one training run (one grid cell) and of its submission.

config/config.schema.yaml says which values are allowed; this module holds the
defaults and the checks that span several parameters.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobs.cell import CellDir
from jobs.plan.datasets import GENERATED_DATASETS, TRAIN_SET_SIZES
from jobs.plan.user_code import is_import_path, probe_dataset

# model gpt's settings (model_args) and their defaults: a small decoder-only transformer.
GPT_MODEL_ARGS = {"n_layer": 2, "n_head": 2, "n_embd": 64}
# The built-in pairings of a model with the data it reads: gpt reads token sequences.
SEQUENCE_MODELS, SEQUENCE_DATASETS = ("gpt",), ("markov_text",)


# Training parameters added after results trees existed (as_rule_param). Append, never remove.
ADDED_LATER = ("dataset_args", "model_args", "user_code", "loss", "target_loss", "signal_at", "partition")


@dataclass(frozen=True)
class TrainParams:
    batch_size: int = 32
    gpus: int = 1
    # A built-in name (jobs/plan/datasets.py, jobs/train/models.py) or the user's own
    # "package.module:function", called with dataset_args or model_args (jobs/plan/user_code.py).
    dataset: str = "digits"
    model: str = "cnn"
    dataset_args: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    # Set by the plan, not the config: a hash of the user's source files per import path, so
    # that a change to them makes a new run of the cell (jobs/plan/user_code.py's source_digest).
    user_code: dict[str, str] = field(default_factory=dict)
    # auto: cross-entropy for integer targets (classes), mean squared error for float ones;
    # or the user's "package.module:function", called as loss(outputs, targets) -> a scalar.
    loss: str = "auto"
    epochs: int = 5
    lr: float = 0.05
    lr_scaling: Literal["none", "linear", "sqrt"] = "linear"
    warmup_epochs: float = 0.0
    # After warmup: constant, step (x lr_decay_factor at each of lr_decay_epochs) or cosine (to 0 at the end).
    lr_schedule: Literal["constant", "step", "cosine"] = "constant"
    lr_decay_epochs: list[float] = field(default_factory=list)
    lr_decay_factor: float = 0.1
    # lars, larc, lamb, novograd: the layer-wise adaptive optimizers of Lab 3 (pytorch-optimizer's;
    # larc is LARS with LARC's trust clipping, a value of its own so that a grid can cross it).
    optimizer: Literal["sgd", "adam", "adamw", "lars", "larc", "lamb", "novograd"] = "sgd"
    momentum: float = 0.9  # sgd, lars and larc
    weight_decay: float = 0.0
    # lars: each layer's lr is lr x trust_coefficient x |w| / |g| (You et al. 2017); larc clips
    # it: min(trust_coefficient x |w| / |g|, lr), never above the global lr.
    trust_coefficient: float = 0.001
    seed: int = 0
    width: int = 1
    depth: int = 16
    train_subset: int | None = None
    target_accuracy: float = 0.9
    # A target on validation loss instead (<= target_loss), for a model whose accuracy means
    # little, such as a language model: then time to target is time to this loss.
    target_loss: float | None = None
    patience: int = 2
    stop_at_target: bool = False
    # A run whose training loss is not finite, or exceeds divergence_factor x the validation
    # loss before the first step, is recorded as diverged and stops.
    divergence_factor: float = 10.0
    # Stop once the epoch's training loss changes by less than this fraction of the previous
    # epoch's (Lab 1 stops at 0.001, 0.1 %): stop reason "converged".
    stop_at_loss_change: float | None = None
    # Record (w, b) after every update, for Lab 1's trajectories over the loss surface: the
    # one-input linear model only, whose two numbers cost one small copy per step.
    record_updates: bool = False
    # The gradient noise scale B_simple per epoch, from the local and the averaged gradients'
    # norms (jobs/train/noise.py): cells of 2+ workers; one dot product per parameter per step.
    measure_noise_scale: bool = True
    fail_at_epoch: int | None = None
    # Testing switch: "EPOCH:STEPS[:USR2|TERM]", after that many steps of that epoch the last rank
    # sends itself the signal, as Slurm's warning (USR2) or a preemption (TERM) would.
    signal_at: list[str] = field(default_factory=list)
    # The index of a repeated measurement: it changes nothing in training (seed does),
    # only makes another cell, so a `repeat: [0, 1, 2]` axis measures run-to-run noise.
    repeat: int = 0
    # The Slurm partition (queue) the cell runs in, with that partition's launcher.partitions
    # settings (GPUs per node, price); None: launcher.slurm's partition. A grid axis compares hardware.
    partition: str | None = None
    # Numerics and speed: fp32 (TF32 off), tf32 (CUDA matmuls and convolutions in TF32),
    # bf16 (autocast), fp16 (autocast with a gradient scaler; CUDA only).
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # NHWC memory format for image models
    compile: bool = False  # torch.compile the model; the first step (compilation) is timed apart
    # device: the data set as tensors on the worker's device (what fits in memory: every data
    # set shipped); loader: a DataLoader with worker processes, pinned memory and
    # non-blocking copies, for data that does not fit.
    data_path: Literal["device", "loader"] = "device"
    loader_workers: int = 2  # the DataLoader's worker processes per training worker (data_path loader)
    # Data parallelism for 2+ workers: Horovod (Gloo or MPI) or PyTorch's DistributedDataParallel
    # (Gloo on CPU, NCCL on GPUs); jobs/train/workers.py. A 1-worker cell uses neither, and the
    # three settings below change nothing there (so that they can be crossed with gpus).
    backend: Literal["horovod", "ddp"] = "horovod"
    # Gradients cast to fp16 for the allreduce (Horovod's Compression.fp16, DDP's fp16 compress hook).
    gradient_compression: Literal["none", "fp16"] = "none"
    # MB of gradients fused into one allreduce: Horovod's fusion threshold (HOROVOD_FUSION_THRESHOLD),
    # DDP's bucket_cap_mb. None: each backend's own default (Horovod 128 MB, DDP 25 MB).
    bucket_mb: float | None = None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainParams:
        values = dict(values)
        if "lr_decay_epochs" in values:  # JSON and YAML give lists; keep them sorted, as floats
            values["lr_decay_epochs"] = sorted(float(epoch) for epoch in values["lr_decay_epochs"] or [])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def as_rule_param(self) -> dict[str, Any]:
        """The parameters as the train_cell rule's Snakemake param, whose change reruns the cell:
        those added in later versions are left out while at their defaults, so that an upgrade
        of the tool reruns no finished cell of an existing results tree."""
        defaults = TrainParams()
        return {name: value for name, value in self.to_dict().items()
                if not (name in ADDED_LATER and value == getattr(defaults, name))}

    def scaled_lr(self) -> float:
        """The learning rate after warmup, scaled with the number of workers."""
        factor = {"none": 1.0, "linear": float(self.gpus), "sqrt": math.sqrt(self.gpus)}
        return self.lr * factor[self.lr_scaling]

    def problems(self) -> list[str]:
        """Combinations the schema cannot express, one message each."""
        found = []
        if self.model == "wide_resnet" and (self.depth - 4) % 6 != 0:
            found.append(f"depth = {self.depth}: a Wide ResNet's depth must be 6n+4 (10, 16, 22, 28, ...)")
        if self.dataset == "linear" and self.model != "linear":
            found.append(
                f"model = {self.model!r} with dataset 'linear': the linear (regression) dataset "
                "needs model 'linear'"
            )
        if self.lr_schedule == "step" and not self.lr_decay_epochs:
            found.append("lr_schedule = 'step' needs lr_decay_epochs, the epochs at which the lr is multiplied "
                         "by lr_decay_factor (e.g. [30, 60, 80])")
        if self.lr_schedule == "cosine" and self.warmup_epochs >= self.epochs:
            found.append(f"lr_schedule = 'cosine' with warmup_epochs = {self.warmup_epochs} >= epochs = "
                         f"{self.epochs}: no epochs left to decay over")
        if self.channels_last and self.model == "linear":
            found.append("channels_last = true with model 'linear': the memory format is for image models "
                         "(cnn, wide_resnet)")
        if self.record_updates and not (self.model == "linear" and self.dataset == "linear"):
            found.append(f"record_updates = true with model {self.model!r} on dataset {self.dataset!r}: (w, b) "
                         "per update is recorded for Lab 1's linear model only (model and dataset 'linear')")
        builtin_model, builtin_data = not is_import_path(self.model), not is_import_path(self.dataset)
        if builtin_model and builtin_data and (self.model in SEQUENCE_MODELS) != (self.dataset in SEQUENCE_DATASETS):
            found.append(f"model = {self.model!r} with dataset {self.dataset!r}: the built-in language model "
                         f"(gpt) reads token sequences (markov_text), and only it does")
        if self.model_args and builtin_model:
            if self.model not in SEQUENCE_MODELS:
                found.append(f"model_args with model {self.model!r}: model_args are for gpt and for your own "
                             "\"package.module:function\" model; the built-in models' settings are parameters")
            else:
                found += gpt_args_problems(self.model_args)
        if self.dataset_args and builtin_data:
            found.append(f"dataset_args with dataset {self.dataset!r}: dataset_args are for your own "
                         "\"package.module:function\" dataset")
        if self.fail_at_epoch is not None and self.fail_at_epoch > self.epochs:
            found.append(f"fail_at_epoch = {self.fail_at_epoch}: must be at most epochs = {self.epochs}")
        late_signals = [spec for spec in self.signal_at if int(spec.split(":")[0]) > self.epochs]
        if late_signals:
            found.append(f"signal_at = {late_signals}: an epoch after the last (epochs = {self.epochs})")
        return found + self.data_size_problems()

    def train_set_size(self) -> int:
        """The data set's training samples; the user's data function is called to count them."""
        if is_import_path(self.dataset):
            return probe_dataset(self.dataset, self.dataset_args).train_samples
        return TRAIN_SET_SIZES[self.dataset]

    def train_samples(self) -> int:
        """How many training samples the run uses, all workers together."""
        if self.train_subset is not None:
            return self.train_subset
        return self.train_set_size()

    def data_size_problems(self) -> list[str]:
        available = self.train_set_size()
        if self.dataset not in GENERATED_DATASETS and self.train_subset is not None and self.train_subset > available:
            return [f"train_subset = {self.train_subset} is more than the {available} training samples of "
                    f"{self.dataset}; use train_subset <= {available}, or null for all of them"]
        samples = self.train_samples()
        share = samples // self.gpus
        if share == 0:
            return [f"gpus = {self.gpus} is more than the {samples} training samples of {self.dataset}: "
                    f"some workers would get no data; use gpus <= {samples}"]
        if self.batch_size > share:
            return [f"batch_size = {self.batch_size} is more than a worker's share of the data ({samples} training "
                    f"samples of {self.dataset} / gpus = {self.gpus} = {share}); use batch_size <= {share}"]
        return []

    def warnings(self) -> list[str]:
        """Settings that run but are most likely not what was meant."""
        found = []
        if self.lr_schedule != "cosine" and self.warmup_epochs > self.epochs:
            found.append(f"warmup_epochs = {self.warmup_epochs} is more than epochs = {self.epochs}: training ends "
                         "during warmup, before the lr reaches its scaled value; use warmup_epochs <= epochs")
        late = [epoch for epoch in self.lr_decay_epochs if epoch >= self.epochs]
        if self.lr_schedule == "step" and late:
            found.append(f"lr_decay_epochs = {self.lr_decay_epochs}: {late} not before the last epoch "
                         f"(epochs = {self.epochs}), so never applied; use epochs < {self.epochs}")
        return found


def gpt_args_problems(args: dict[str, Any]) -> list[str]:
    unknown = sorted(set(args) - set(GPT_MODEL_ARGS))
    if unknown:
        return [f"model_args {unknown[0]!r} is not a setting of gpt; allowed: {', '.join(GPT_MODEL_ARGS)}"]
    values = {**GPT_MODEL_ARGS, **args}
    for key, value in values.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return [f"model_args {key} = {value!r}: gpt's {key} must be a positive integer"]
    if values["n_embd"] % values["n_head"]:
        return [f"model_args n_embd = {values['n_embd']} must be a multiple of n_head = {values['n_head']}"]
    return []


TIME_LIMIT_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def parse_time_limit(text: str) -> int:
    """Minutes in a Slurm time limit (rounded up); ValueError naming the formats otherwise."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(text).strip())
    if not match:
        raise ValueError(f"time limit {text!r} does not parse; use {TIME_LIMIT_FORMATS}")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    elif third is not None:  # HH:MM:SS
        hours, minutes, seconds = int(first), int(second), int(third)
    else:  # MM[:SS]
        hours, minutes, seconds = 0, int(first), int(second or 0)
    total = int(days or 0) * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
    if total < 1:
        raise ValueError(f"time limit {text!r} is shorter than a minute; use {TIME_LIMIT_FORMATS}")
    return total


@dataclass(frozen=True)
class LauncherSettings:
    """How a cell is submitted through submitit: the one place of the launcher's defaults.
    config/config.yaml and profiles/slurm set only what differs (tests/test_grid.py checks)."""

    executor: Literal["local", "slurm"] = "local"
    gpus_per_node: int = 2
    cpus_per_task: int = 1
    # gloo: Horovod's Gloo controller, rendezvous built from submitit's JobEnvironment;
    # mpi: Horovod built with MPI, tasks started by `srun --mpi=pmix` (Slurm only).
    controller: Literal["gloo", "mpi"] = "gloo"
    time_limit: str = "1:00:00"  # per cell, in Slurm's format
    max_requeues: int = 3  # times a cell that reaches its time limit is requeued to resume
    max_gpus: int | None = None  # the most GPUs one cell may ask for (the site's limit)
    poll_interval_s: float = 1.0  # reads the cell's files only: cheap on any scheduler
    # Cells queued or running at once, across every Snakemake job of the workflow.
    max_cells_in_flight: int = 1
    # Slurm: the least seconds between two sacct calls (one for every waiting cell) and
    # between two sbatch calls (one job array of the cells queued meanwhile).
    scheduler_refresh_s: float = 20.0
    # Slurm: how long a waiting cell goes on without any answer from sacct or squeue
    # before it gives up (its job may still run; the next snakemake reattaches to it).
    scheduler_outage_s: float = 3600.0
    # Seconds a result may take to appear on a shared filesystem after its job ended.
    result_grace_s: float = 5.0
    # Where submitit keeps the jobs' scripts and per-task logs (on a filesystem the nodes see).
    # Slurm: the study's job arrays share <submitit_root>/<study>, by default
    # results/<study>/submitit; local: <submitit_root>/<study>/<cell>, by default the cell's
    # own `submitit/` folder.
    submitit_root: str = ""
    # What the tool unpickles or executes (submitit folders, the scheduler directory,
    # checkpoints) is owner-only; true makes it readable by the group, never writable (jobs/private.py).
    share_results_with_group: bool = False
    # Seconds of training between two mid-epoch checkpoints, for sites whose jobs get no warning
    # signal before they are stopped; None: at each epoch's end (and on a signal) only.
    checkpoint_every_s: float | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    # Per Slurm partition: {gpus_per_node, price_per_gpu_hour}; a cell's `partition` picks one, so a
    # study over several partitions answers which hardware is fastest and which is cheapest.
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LauncherSettings:
        return cls(**values)

    def partition_name(self, partition: str | None) -> str | None:
        """The partition a cell runs in: its own, else the profile's (launcher.slurm.partition)."""
        name = partition or self.slurm.get("partition")
        return str(name) if name else None

    def for_partition(self, partition: str | None) -> LauncherSettings:
        """The settings a cell of this partition is submitted with: the partition itself, and its GPUs per node."""
        if partition is None:
            return self
        gpus_per_node = self.partitions.get(partition, {}).get("gpus_per_node", self.gpus_per_node)
        return dataclasses.replace(self, gpus_per_node=int(gpus_per_node), slurm={**self.slurm, "partition": partition})

    def hardware(self) -> dict[str, Any]:
        """Each partition's hardware, resolved here once, for the analysis to look up by a cell's
        partition (analysis/collect.py StudyAnalysis): "default" for a cell that names none (or,
        with no launcher.partitions, one the profile does not list), "partitions" by name."""
        def described(partition: str | None) -> dict[str, Any]:
            on_slurm = self.executor == "slurm"  # GPUs per node place workers on Slurm's nodes only
            return {"partition": self.partition_name(partition),
                    "gpus_per_node": self.for_partition(partition).gpus_per_node if on_slurm else None,
                    "price_per_gpu_hour": self.price_per_gpu_hour(partition)}

        return {"default": described(None), "partitions": {name: described(name) for name in self.partitions}}

    def price_per_gpu_hour(self, partition: str | None) -> float | None:
        name = self.partition_name(partition)
        price = self.partitions.get(name, {}).get("price_per_gpu_hour") if name else None
        return float(price) if price is not None else None

    @property
    def timeout_min(self) -> int:
        return parse_time_limit(self.time_limit)

    def submitit_folder(self, cell_dir: Path, study: str, cell: str) -> Path:
        if self.executor == "slurm":  # cells of one job array share its folder
            return Path(self.submitit_root) / study if self.submitit_root else CellDir(cell_dir).study_submitit_folder
        if not self.submitit_root:
            return CellDir(cell_dir).default_submitit_folder
        return Path(self.submitit_root) / study / cell

    def nodes_for(self, gpus: int) -> int:
        if self.executor == "local":
            return 1  # submitit's local executor runs every task on this machine
        return math.ceil(gpus / self.gpus_per_node)

    def tasks_per_node_for(self, gpus: int) -> int:
        return gpus // self.nodes_for(gpus)

    def memory_per_task_gb(self, gpus: int) -> float | None:
        """The memory a task asks Slurm for: the profile's mem_gb (per node) over the tasks on a node."""
        mem_gb = self.slurm.get("mem_gb") if self.executor == "slurm" else None
        return float(mem_gb) / self.tasks_per_node_for(gpus) if isinstance(mem_gb, (int, float)) else None

    def measured_with(self, gpus: int) -> dict[str, Any]:
        """The settings that change what a cell measures. A result belongs to them as much
        as to its training parameters: changing one runs the cell again (the earlier run
        is kept aside), and Snakemake sees them among the rule's params."""
        return {
            "executor": self.executor,
            "controller": self.controller,
            "threads_per_worker": self.cpus_per_task,
            "nodes": self.nodes_for(gpus),
            "tasks_per_node": self.tasks_per_node_for(gpus),
        }


def same_params(recorded: dict[str, Any] | None, params: TrainParams) -> bool:
    """Whether parameters recorded by an earlier run (a result, a summary, a checkpoint, a
    meta line) are these, once both are normalized: the one test of "the same run"."""
    return isinstance(recorded, dict) and normalized_params(recorded) == params.to_dict()


def normalized_params(values: dict[str, Any]) -> dict[str, Any]:
    """A recorded parameter set with the defaults of fields added since it was written, so a
    run recorded before a new parameter existed still matches the same settings now."""
    try:
        return TrainParams.from_dict(values).to_dict()
    except (TypeError, ValueError):  # a field since removed, or a value no longer valid
        return dict(values)
