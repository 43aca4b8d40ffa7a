"""Grid expansion and the one-line errors for bad configs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobs.plan.config import ConfigError
from jobs.plan.grid import cell_id, make_plan
from jobs.plan.params import parse_time_limit


def with_study(config: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["studies"] = {"s": study}
    return config


def test_default_config_expands_to_four_readable_cells(config):
    plan = make_plan(config)
    cells = plan.studies["default"].cells
    assert sorted(cells) == ["bs16-gpus1", "bs16-gpus2", "bs64-gpus1", "bs64-gpus2"]
    assert cells["bs64-gpus2"].batch_size == 64 and cells["bs64-gpus2"].gpus == 2
    assert cells["bs16-gpus1"].dataset == config["studies"]["default"]["fixed"]["dataset"]


def test_any_training_parameter_can_be_an_axis(config):
    study = {"grid": {"gpus": [1, 2], "batch_size": [32], "warmup_epochs": [0, 2.5], "lr_scaling": ["linear", "sqrt"]},
             "fixed": {"epochs": 3}}
    plan = make_plan(with_study(config, study))
    stud = plan.studies["s"]
    assert stud.axes == ("batch_size", "gpus", "warmup_epochs", "lr_scaling")
    assert len(stud.cells) == 8
    assert "bs32-gpus2-warmup2.5-scale_sqrt" in stud.cells
    cell = stud.cells["bs32-gpus2-warmup2.5-scale_sqrt"]
    assert (cell.warmup_epochs, cell.lr_scaling, cell.epochs) == (2.5, "sqrt", 3)


def test_cell_ids_are_distinct_for_distinct_values():
    assert cell_id({"batch_size": 8, "gpus": 1}) != cell_id({"batch_size": 8, "gpus": 11})
    assert cell_id({"lr": 0.1}) == "lr0.1"
    assert cell_id({"optimizer": "adam"}) == "opt_adam"


def test_learning_rate_scaling_rules(config):
    study = {"grid": {"batch_size": [32], "gpus": [4], "lr_scaling": ["none", "linear", "sqrt"]},
             "fixed": {"lr": 0.1}}
    cells = make_plan(with_study(config, study)).studies["s"].cells
    assert cells["bs32-gpus4-scale_none"].scaled_lr() == pytest.approx(0.1)
    assert cells["bs32-gpus4-scale_linear"].scaled_lr() == pytest.approx(0.4)
    assert cells["bs32-gpus4-scale_sqrt"].scaled_lr() == pytest.approx(0.2)


BAD_INPUTS = [
    # (where in the study, value, words the one-line error must contain)
    ({"grid": {"batch_size": [-8], "gpus": [1]}}, ["batch_size[0]", "-8", ">= 1"]),
    ({"grid": {"batch_size": [8], "gpus": [0]}}, ["gpus[0]", "0", ">= 1"]),
    ({"grid": {"batch_size": [8], "gpus": [1]}, "fixed": {"model": "resnet9000"}},
     ["model", "resnet9000", "'cnn'", "'wide_resnet'"]),
    ({"grid": {"batch_size": [8], "gpus": [1]}, "fixed": {"target_accuracy": 1.5}},
     ["target_accuracy", "1.5", "<= 1"]),
    ({"grid": {"batch_size": [8], "gpus": [1], "colour": ["red"]}},
     ["grid", "'colour'", "not a training parameter", "warmup_epochs"]),
    ({"grid": {"batch_size": [8], "gpus": [1]}, "fixed": {"dataset": "imagenet"}},
     ["dataset", "imagenet", "'digits'"]),
    ({"grid": {"batch_size": [8, 8], "gpus": [1]}}, ["batch_size", "repeats"]),
    ({"grid": {"batch_size": [8]}}, ["grid", "missing", "'gpus'"]),
    ({"grid": {"batch_size": ["big"], "gpus": [1]}}, ["batch_size[0]", "'big'", "integer"]),
    ({"grid": {"batch_size": [8], "gpus": [1]}, "fixed": {"model": "wide_resnet", "depth": 15}},
     ["depth = 15", "6n+4"]),
    ({"grid": {"batch_size": [8], "gpus": [1]}, "fixed": {"dataset": "linear", "model": "cnn"}},
     ["dataset 'linear'", "model 'linear'"]),
    ({"grid": {"batch_size": [8], "gpus": [1], "lr": [0.1]}, "fixed": {"lr": 0.2}},
     ["'lr'", "both a grid axis and fixed"]),
]


@pytest.mark.parametrize("study, expected_words", BAD_INPUTS)
def test_bad_input_is_one_clear_line(config, study, expected_words):
    with pytest.raises(ConfigError) as caught:
        make_plan(with_study(config, study))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("config error:")
    for word in expected_words:
        assert word in message, f"{word!r} missing from: {message}"


def test_bad_launcher_and_study_names(config):
    bad_executor = copy.deepcopy(config)
    bad_executor["launcher"]["executor"] = "kubernetes"
    with pytest.raises(ConfigError, match=r"launcher.executor = 'kubernetes' is not allowed; use one of 'local', 'slurm'"):
        make_plan(bad_executor)
    bad_name = copy.deepcopy(config)
    bad_name["studies"]["no spaces"] = bad_name["studies"]["default"]
    with pytest.raises(ConfigError, match="no spaces"):
        make_plan(bad_name)


def test_slurm_multi_node_cells_must_fill_whole_nodes(config):
    config["launcher"].update(executor="slurm", gpus_per_node=4)
    with pytest.raises(ConfigError, match=r"gpus = 6 spans more than one node but is not a multiple of launcher.gpus_per_node = 4"):
        make_plan(with_study(config, {"grid": {"batch_size": [8], "gpus": [1, 6]}}))
    ok = make_plan(with_study(config, {"grid": {"batch_size": [8], "gpus": [3, 8]}}))
    assert ok.launcher.nodes_for(8) == 2 and ok.launcher.tasks_per_node_for(8) == 4
    assert ok.launcher.nodes_for(3) == 1 and ok.launcher.tasks_per_node_for(3) == 3


def test_profile_config_strings_are_read_as_values(config):
    """Snakemake hands a profile's `config:` entries over as strings."""
    config["launcher"] = {"executor": "slurm", "gpus_per_node": "4", "time_limit": "1:30:00",
                          "slurm": {"partition": "gpu"}}
    plan = make_plan(with_study(config, {"grid": {"batch_size": [8], "gpus": [8]}}))
    assert (plan.launcher.gpus_per_node, plan.launcher.timeout_min) == (4, 90)
    assert plan.launcher.nodes_for(8) == 2 and plan.launcher.slurm == {"partition": "gpu"}


@pytest.mark.parametrize("text, minutes", [("30", 30), ("30:30", 31), ("2:00:00", 120), ("1-0", 1440),
                                           ("1-2:30", 1590), ("0-0:0:59", 1)])
def test_time_limits_in_slurm_format(text, minutes):
    assert parse_time_limit(text) == minutes


@pytest.mark.parametrize("launcher, words", [
    ({"time_limit": "two hours"}, ["launcher.time_limit", "'two hours' does not parse", "HH:MM:SS"]),
    ({"time_limit": "0:00"}, ["launcher.time_limit", "shorter than a minute"]),
    ({"max_gpus": 2}, ["cell bs8-gpus4", "gpus = 4 is more than launcher.max_gpus = 2"]),
    ({"controller": "mpi"}, ["launcher.controller = 'mpi' needs launcher.executor = 'slurm'"]),
    ({"controller": "nccl"}, ["launcher.controller = 'nccl' is not allowed; use one of 'gloo', 'mpi'"]),
])
def test_launcher_limits_are_checked_before_submission(config, launcher, words):
    config["launcher"].update(launcher)
    with pytest.raises(ConfigError) as caught:
        make_plan(with_study(config, {"grid": {"batch_size": [8], "gpus": [4]}}))
    assert "\n" not in str(caught.value)
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_schema_and_defaults_name_the_same_training_parameters():
    """config.schema.yaml lists the parameters and jobs/plan/params.py their defaults: no drift."""
    import dataclasses

    from jobs.plan.config import load_schema
    from jobs.plan.params import TrainParams

    schema = load_schema()
    fields = {f.name for f in dataclasses.fields(TrainParams)}
    assert set(schema["$defs"]["params"]["properties"]) == fields
    assert set(schema["$defs"]["study"]["properties"]["grid"]["properties"]) <= fields


def test_launcher_defaults_live_in_one_place():
    """config.yaml and profiles/slurm set only what differs from LauncherSettings' defaults."""
    import dataclasses

    import yaml
    from conftest import REPO, default_config

    from jobs.plan.params import LauncherSettings

    defaults = {f.name: getattr(LauncherSettings(), f.name) for f in dataclasses.fields(LauncherSettings)}
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())["config"]
    for source, launcher in (("config/config.yaml", default_config().get("launcher") or {}),
                             ("profiles/slurm", profile["launcher"])):
        restated = {key: value for key, value in launcher.items() if key in defaults and value == defaults[key]}
        assert not restated, f"{source} restates launcher defaults {restated}"
        assert set(launcher) <= set(defaults), f"{source}: unknown launcher keys {set(launcher) - set(defaults)}"
