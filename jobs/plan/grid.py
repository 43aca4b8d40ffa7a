"""Where grid cells are made: a study's axes are crossed into cells, each with a
readable id (`bs64-gpus2`, `bs32-gpus4-warmup5`) and its full TrainParams."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.plan.config import ConfigError, check_directory, check_slurm_settings, short, validate_config
from jobs.plan.params import LauncherSettings, TrainParams, parse_time_limit
from jobs.plan.studies import select_named_study
from jobs.plan.user_code import (
    UserCodeError,
    add_to_python_path,
    check_model,
    is_import_path,
    load_callable,
    probe_dataset,
    source_digest,
)

# Short names for cell ids; any other axis appears under its own name.
AXIS_ABBREVIATIONS = {
    "batch_size": "bs",
    "gpus": "gpus",
    "lr_scaling": "scale",
    "warmup_epochs": "warmup",
    "optimizer": "opt",
    "momentum": "mom",
    "weight_decay": "wd",
    "train_subset": "n",
    "target_accuracy": "target",
    "target_loss": "tloss",
    "model_args": "margs",
    "dataset_args": "dargs",
    "dataset": "data",
    "epochs": "ep",
    "lr_schedule": "sched",
    "lr_decay_epochs": "decay",
    "lr_decay_factor": "gamma",
    "repeat": "rep",
    "precision": "prec",
    "channels_last": "nhwc",
    "compile": "compiled",
    "data_path": "path",
    "loader_workers": "loaders",
    "trust_coefficient": "trust",
    "gradient_compression": "comp",
    "bucket_mb": "bucket",
}
FIRST_AXES = ("batch_size", "gpus")
CELL_ID_PATTERN = r"[A-Za-z0-9_.\-]+"
# 10,000 cells plan and dry-run in seconds (benchmarks/grid_scale.py); the cap keeps a typo
# (1000 x 1000) from building a DAG of a million jobs.
MAX_CELLS_PER_STUDY = 16384


@dataclass(frozen=True)
class Study:
    name: str
    axes: tuple[str, ...]
    cells: dict[str, TrainParams]
    warnings: tuple[str, ...] = ()
    # weak: batch_size is per worker (data-parallel training's usual case); strong: the grid's
    # batch_size is the global batch, split over the workers, and efficiency is T_1 / (N T_N).
    scaling: str = "weak"
    # The course's assessment: a cell passes when it holds its target accuracy (patience
    # epochs) within this many seconds of training wall time.
    time_budget_s: float | None = None


@dataclass(frozen=True)
class Plan:
    """Everything the workflow needs from the config, checked."""

    results_dir: str
    data_dir: str
    launcher: LauncherSettings
    studies: dict[str, Study]
    python_path: tuple[str, ...] = ()  # absolute: where the user's model and data packages are

    def user_code(self) -> frozenset[str]:
        """The import paths the studies name: the only user code a job may run."""
        return frozenset(path for study in self.studies.values() for params in study.cells.values()
                         for path in (params.model, params.dataset, params.loss) if is_import_path(path))


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "_yes" if value else "_no"
    if isinstance(value, float):
        return f"{value:g}".replace("+", "")  # 1e+06 -> 1e06: `+` is not allowed in a cell id
    if isinstance(value, (list, tuple)):
        return "_".join(format_value(item).lstrip("_") for item in value) or "_none"
    if isinstance(value, dict):  # model_args, dataset_args: {n_layer: 4} -> _n_layer4
        return "_" + "_".join(f"{key}{format_value(item).lstrip('_')}" for key, item in sorted(value.items())) \
            if value else "_none"
    text = str(value)
    if is_import_path(text):  # the user's "package.module:function": its function's name
        text = text.rpartition(":")[2]
    return f"_{text}" if text[:1].isalpha() else text


# A strong-scaling study's batch axis is the global batch: its cell ids say so.
STRONG_ABBREVIATIONS = {**AXIS_ABBREVIATIONS, "batch_size": "gbs"}


def cell_id(values: dict[str, Any], scaling: str = "weak") -> str:
    names = STRONG_ABBREVIATIONS if scaling == "strong" else AXIS_ABBREVIATIONS
    return "-".join(names.get(axis, axis) + format_value(v) for axis, v in values.items())


def ordered_axes(grid: dict[str, list[Any]]) -> tuple[str, ...]:
    return FIRST_AXES + tuple(axis for axis in grid if axis not in FIRST_AXES)


def check_grid_size(name: str, grid: dict[str, list[Any]], axes: tuple[str, ...]) -> None:
    """Refuse a huge grid from its axis lengths, before a single cell is made."""
    count = math.prod(len(grid[axis]) for axis in axes)
    if count > MAX_CELLS_PER_STUDY:
        shape = " x ".join(f"{len(grid[axis])} {axis}" for axis in axes)
        raise ConfigError(f"config error: studies.{name}.grid = {shape} = {count} cells: too many; a study may have "
                          f"at most {MAX_CELLS_PER_STUDY} cells: use fewer values or split it into several studies")


def check_distinct_ids(name: str, grid: dict[str, list[Any]], axes: tuple[str, ...]) -> None:
    """Two values of an axis that look the same in a cell id would share one cell."""
    for axis in axes:
        seen: dict[str, Any] = {}
        for value in grid[axis]:
            part = AXIS_ABBREVIATIONS.get(axis, axis) + format_value(value)
            if part in seen:
                raise ConfigError(
                    f"config error: studies.{name}.grid.{axis} = {short(grid[axis])}: {seen[part]!r} and {value!r} "
                    f"both give the cell id part {part!r}; use values that differ within 6 significant digits")
            if not re.fullmatch(CELL_ID_PATTERN, part):
                raise ConfigError(f"config error: studies.{name}.grid.{axis} = {short(grid[axis])}: {value!r} gives "
                                  f"the cell id part {part!r}; cell ids may only hold letters, digits, '_', '.', '-'")
            seen[part] = value


def expand_study(name: str, spec: dict[str, Any], launcher: LauncherSettings, try_user_code: bool = True) -> Study:
    grid = spec["grid"]
    fixed = spec.get("fixed", {}) or {}
    axes = ordered_axes(grid)
    for axis in axes:
        if axis in fixed:
            raise ConfigError(
                f"config error: studies.{name}: {axis!r} is both a grid axis and fixed; keep it in one place"
            )
    check_grid_size(name, grid, axes)
    check_distinct_ids(name, grid, axes)
    scaling = spec.get("scaling", "weak")
    cells: dict[str, TrainParams] = {}
    warnings: dict[str, None] = {}  # ordered and without repeats: one line however many cells share it
    for combination in itertools.product(*(grid[axis] for axis in axes)):
        values = dict(zip(axes, combination))
        cid = cell_id(values, scaling)
        params = TrainParams.from_dict({**fixed, **values, **per_worker_batch(name, cid, values, scaling)})
        if try_user_code:
            try:
                params = with_user_code(params)
            except UserCodeError as error:
                raise ConfigError(f"config error: studies.{name}, cell {cid}: {error}") from None
        elif any(is_import_path(path) for path in (params.model, params.dataset, params.loss)):
            cells[cid] = params  # checked when the workflow was parsed; the data are not loaded again
            continue
        problems = params.problems() + partition_problems(launcher, params.partition) \
            + launcher_problems(launcher.for_partition(params.partition), params.gpus) + device_problems(launcher, params)
        if problems:
            raise ConfigError(f"config error: studies.{name}, cell {cid}: {problems[0]}")
        if cid in cells:  # distinct per axis; this guards the joined id
            raise ConfigError(f"config error: studies.{name}: two cells share the id {cid!r}; "
                              "give the grid values that differ within 6 significant digits")
        cells[cid] = params
        warnings.update(dict.fromkeys(f"studies.{name}: {text}" for text in params.warnings()))
    scaled = sorted({params.lr_scaling for params in cells.values()} - {"none"})
    if scaling == "strong" and scaled:
        warnings[f"studies.{name}: scaling = 'strong' with lr_scaling = {', '.join(map(repr, scaled))}: the "
                 "global batch does not grow with the workers, so the lr should not either; use lr_scaling: none"
                 ] = None
    return Study(name=name, axes=axes, cells=cells, warnings=tuple(warnings), scaling=scaling,
                 time_budget_s=spec.get("time_budget_s"))


def with_user_code(params: TrainParams) -> TrainParams:
    """Imports the study's own model and data functions, tries them (jobs/plan/user_code.py) and
    records a hash of their sources in the params: a changed source file is a changed cell."""
    digests: dict[str, str] = {}
    input_shape, input_dtype = None, "float32"
    if is_import_path(params.dataset):
        probe = probe_dataset(params.dataset, params.dataset_args)
        input_shape, input_dtype = probe.input_shape, probe.input_dtype
        if not probe.tensors and params.data_path == "device":
            raise UserCodeError(f"dataset {params.dataset!r} returns a torch Dataset, which a DataLoader serves: "
                                "set data_path: loader (tensors (inputs, targets) can stay on the device)")
        digests[params.dataset] = source_digest(params.dataset)
    if is_import_path(params.model):
        check_model(params.model, params.model_args, input_shape, input_dtype)
        digests[params.model] = source_digest(params.model)
    if is_import_path(params.loss):
        load_callable(params.loss)
        digests[params.loss] = source_digest(params.loss)
    return dataclasses.replace(params, user_code=digests) if digests else params


def per_worker_batch(study: str, cid: str, values: dict[str, Any], scaling: str) -> dict[str, int]:
    """In a strong-scaling study, the global batch of the grid split over the cell's workers."""
    if scaling != "strong":
        return {}
    global_batch, gpus = values["batch_size"], values["gpus"]
    if global_batch % gpus:
        raise ConfigError(f"config error: studies.{study}, cell {cid}: scaling = 'strong' splits the global "
                          f"batch_size = {global_batch} over gpus = {gpus}, which does not divide it; use global "
                          f"batches that every gpus value divides (e.g. {global_batch - global_batch % gpus or gpus})")
    return {"batch_size": global_batch // gpus}


def partition_problems(launcher: LauncherSettings, partition: str | None) -> list[str]:
    if partition is None or not launcher.partitions or partition in launcher.partitions:
        return []
    return [f"partition = {partition!r} is not in launcher.partitions; allowed: {', '.join(sorted(launcher.partitions))}"]


def launcher_problems(launcher: LauncherSettings, gpus: int) -> list[str]:
    found = []
    if launcher.executor == "slurm" and gpus > launcher.gpus_per_node and gpus % launcher.gpus_per_node:
        found.append(f"gpus = {gpus} spans more than one node but is not a multiple of "
                     f"launcher.gpus_per_node = {launcher.gpus_per_node}")
    if launcher.controller == "mpi" and launcher.executor != "slurm":
        found.append("launcher.controller = 'mpi' needs launcher.executor = 'slurm' (srun --mpi=pmix starts the ranks)")
    if launcher.max_gpus is not None and gpus > launcher.max_gpus:
        found.append(f"gpus = {gpus} is more than launcher.max_gpus = {launcher.max_gpus} allows")
    return found


CUDA_ONLY_PRECISIONS = ("tf32", "fp16")


def machine_has_nvidia_gpu() -> bool:
    """Without importing torch: the NVIDIA driver lists its GPUs under /proc."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def device_problems(launcher: LauncherSettings, params: TrainParams) -> list[str]:
    """Settings the workers' device cannot run: known here only for local workers."""
    if launcher.executor == "local" and params.precision in CUDA_ONLY_PRECISIONS and not machine_has_nvidia_gpu():
        return [f"precision = {params.precision!r} needs an NVIDIA GPU, and this machine's local workers have "
                "none; use fp32 or bf16 here, or executor slurm on GPU nodes"]
    return []


def typed(value: Any) -> Any:
    """Snakemake passes a profile's `config:` values as strings: read them as YAML."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, str):
        # Only numbers, booleans and null: YAML would also read "1:30:00" as 5400.
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
        return {"true": True, "false": False, "null": None}.get(value.lower(), value)
    return value


def available_cpus() -> int:
    """CPUs this process may run on (a container or taskset may allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_cpu_warnings(launcher: LauncherSettings, studies: dict[str, Study]) -> list[str]:
    """Local workers beyond the CPUs share cores: the run works, but its timings mean little."""
    if launcher.executor != "local" or not studies or not any(s.cells for s in studies.values()):
        return []
    study, gpus = max(((s.name, p.gpus) for s in studies.values() for p in s.cells.values()), key=lambda x: x[1])
    needed, cpus = gpus * launcher.cpus_per_task, available_cpus()
    if needed <= cpus:
        return []
    return [f"launcher.cpus_per_task = {launcher.cpus_per_task}: studies.{study} needs gpus x cpus_per_task = "
            f"{gpus} x {launcher.cpus_per_task} = {needed} CPUs for its local workers, but this machine has {cpus}; "
            f"workers will share cores and timings will be skewed: keep gpus x cpus_per_task <= {cpus}, "
            "or use executor slurm"]


def warn_on_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def make_plan(config: dict[str, Any], *, root: Path = Path("."),
              warn: Callable[[str], None] = warn_on_stderr, try_user_code: bool = True) -> Plan:
    """The checked plan of `config`, whose relative paths are relative to `root`.
    ConfigError on the first mistake; each soft problem goes to `warn` as one line.
    try_user_code=False, for a cell's launcher once the workflow has checked the same config:
    the user's functions are not imported or called again (their data not loaded on the
    login node once per cell), and their cells' params carry no source hash."""
    config = select_named_study(config, root)
    if "launcher" in config:
        config = {**config, "launcher": typed(config["launcher"])}
    validate_config(config)
    results_dir, data_dir = config.get("results_dir", "results"), config.get("data_dir", "data")
    check_directory("results_dir", results_dir, root)
    check_directory("data_dir", data_dir, root)
    launcher = LauncherSettings.from_dict(config.get("launcher", {}) or {})
    try:
        parse_time_limit(launcher.time_limit)
    except ValueError as error:
        raise ConfigError(f"config error: launcher.time_limit: {error}") from None
    check_slurm_settings(launcher.slurm)
    python_path = tuple(str((root / directory).resolve()) for directory in config.get("python_path", []))
    for directory in python_path:
        if not Path(directory).is_dir():
            raise ConfigError(f"config error: python_path: {directory} is not a directory")
    add_to_python_path(python_path)
    studies = {name: expand_study(name, spec, launcher, try_user_code) for name, spec in config["studies"].items()}
    for study in studies.values():
        for message in study.warnings:
            warn(f"config warning: {message}")
    for message in local_cpu_warnings(launcher, studies):
        warn(f"config warning: {message}")
    return Plan(results_dir=results_dir, data_dir=data_dir, launcher=launcher, studies=studies,
                python_path=python_path)
