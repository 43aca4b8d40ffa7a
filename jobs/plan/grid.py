"""Where grid cells are made: a study's axes are crossed into cells, each with a
readable id (`bs64-gpus2`, `bs32-gpus4-warmup5`) and its full TrainParams."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from jobs.plan.config import ConfigError, validate_config
from jobs.plan.params import LauncherSettings, TrainParams, parse_time_limit

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
    "dataset": "data",
    "epochs": "ep",
    "lr_schedule": "sched",
    "lr_decay_epochs": "decay",
    "lr_decay_factor": "gamma",
}
FIRST_AXES = ("batch_size", "gpus")
CELL_ID_PATTERN = r"[A-Za-z0-9_.\-]+"


@dataclass(frozen=True)
class Study:
    name: str
    axes: tuple[str, ...]
    cells: dict[str, TrainParams]


@dataclass(frozen=True)
class Plan:
    """Everything the workflow needs from the config, checked."""

    results_dir: str
    data_dir: str
    launcher: LauncherSettings
    studies: dict[str, Study]


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "_yes" if value else "_no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "_".join(format_value(item).lstrip("_") for item in value) or "_none"
    text = str(value)
    return f"_{text}" if text[:1].isalpha() else text


def cell_id(values: dict[str, Any]) -> str:
    return "-".join(AXIS_ABBREVIATIONS.get(axis, axis) + format_value(v) for axis, v in values.items())


def ordered_axes(grid: dict[str, list[Any]]) -> tuple[str, ...]:
    return FIRST_AXES + tuple(axis for axis in grid if axis not in FIRST_AXES)


def expand_study(name: str, spec: dict[str, Any], launcher: LauncherSettings) -> Study:
    grid = spec["grid"]
    fixed = spec.get("fixed", {}) or {}
    axes = ordered_axes(grid)
    for axis in axes:
        if axis in fixed:
            raise ConfigError(
                f"config error: studies.{name}: {axis!r} is both a grid axis and fixed; keep it in one place"
            )
    cells: dict[str, TrainParams] = {}
    for combination in itertools.product(*(grid[axis] for axis in axes)):
        values = dict(zip(axes, combination))
        params = TrainParams.from_dict({**fixed, **values})
        cid = cell_id(values)
        problems = params.problems() + launcher_problems(launcher, params.gpus)
        if problems:
            raise ConfigError(f"config error: studies.{name}, cell {cid}: {problems[0]}")
        cells[cid] = params
    return Study(name=name, axes=axes, cells=cells)


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


def make_plan(config: dict[str, Any]) -> Plan:
    if "launcher" in config:
        config = {**config, "launcher": typed(config["launcher"])}
    validate_config(config)
    launcher = LauncherSettings.from_dict(config.get("launcher", {}) or {})
    try:
        parse_time_limit(launcher.time_limit)
    except ValueError as error:
        raise ConfigError(f"config error: launcher.time_limit: {error}") from None
    studies = {name: expand_study(name, spec, launcher) for name, spec in config["studies"].items()}
    return Plan(
        results_dir=config.get("results_dir", "results"),
        data_dir=config.get("data_dir", "data"),
        launcher=launcher,
        studies=studies,
    )
