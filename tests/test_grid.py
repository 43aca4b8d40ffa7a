"""Grid expansion and the one-line errors for bad configs."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from jobs.plan.config import ConfigError
from jobs.plan.grid import cell_id, make_plan
from jobs.plan.params import parse_time_limit


def with_study(config: dict[str, Any], study: dict[str, Any]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["studies"] = {"s": study}
    return config


def test_default_config_expands_to_six_readable_cells(config):
    plan = make_plan(config)
    cells = plan.studies["default"].cells
    assert sorted(cells) == sorted(f"bs{b}-gpus{n}" for b in (16, 32, 64) for n in (1, 2))
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
    set_by_the_plan = {"user_code"}  # the hash of the user's sources: never the config's to set
    assert set(schema["$defs"]["params"]["properties"]) == fields - set_by_the_plan
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


def test_a_repeat_axis_repeats_each_cell_with_identical_training(config):
    plan = make_plan(with_study(config, {"grid": {"batch_size": [32], "gpus": [1, 2], "repeat": [0, 1, 2]}}))
    cells = plan.studies["s"].cells
    assert sorted(cells) == [f"bs32-gpus{g}-rep{r}" for g in (1, 2) for r in (0, 1, 2)]
    first, third = cells["bs32-gpus2-rep0"].to_dict(), cells["bs32-gpus2-rep2"].to_dict()
    assert {key for key in first if first[key] != third[key]} == {"repeat"}


# --------------------------------------------------------------------------- issue 7: bad inputs, one line each

def one_line_error(config: dict[str, Any], **plan_args: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        make_plan(config, **plan_args)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("config error: "), message
    return message


def test_values_that_would_share_a_cell_id_are_refused_naming_both(config):
    study = {"grid": {"batch_size": [32], "gpus": [1], "lr": [0.1, 0.1000001]}, "fixed": {}}
    message = one_line_error(with_study(config, study))
    assert "studies.s.grid.lr" in message and "0.1 and 0.1000001 both give the cell id part 'lr0.1'" in message
    study["grid"]["lr"] = [0.1, 0.1001]
    assert sorted(make_plan(with_study(config, study)).studies["s"].cells) == ["bs32-gpus1-lr0.1", "bs32-gpus1-lr0.1001"]


def test_large_floats_give_valid_cell_ids(config):
    study = {"grid": {"batch_size": [32], "gpus": [1], "weight_decay": [1e-5, 1e6]}}
    cells = make_plan(with_study(config, study)).studies["s"].cells
    assert sorted(cells) == ["bs32-gpus1-wd1e-05", "bs32-gpus1-wd1e06"]


def test_a_grid_beyond_the_cell_limit_is_refused_before_any_cell_is_made(config, monkeypatch):
    from jobs.plan import grid as grid_module

    def no_cells(values: dict[str, Any]) -> None:
        raise AssertionError("a cell was made")

    monkeypatch.setattr(grid_module.TrainParams, "from_dict", staticmethod(no_cells))
    study = {"grid": {"batch_size": list(range(1, 1001)), "gpus": list(range(1, 1001))}}
    message = one_line_error(with_study(config, study))
    assert f"1000 batch_size x 1000 gpus = 1000000 cells: too many; a study may have at most " \
           f"{grid_module.MAX_CELLS_PER_STUDY} cells" in message


def test_a_grid_at_the_cell_limit_is_planned(config):
    from jobs.plan.grid import MAX_CELLS_PER_STUDY

    side = int(MAX_CELLS_PER_STUDY ** 0.5)
    study = {"grid": {"batch_size": list(range(1, side + 1)), "gpus": [1], "seed": list(range(side))}}
    assert len(make_plan(with_study(config, study)).studies["s"].cells) == MAX_CELLS_PER_STUDY


def test_the_schema_documents_the_cell_limit():
    from jobs.plan.config import load_schema
    from jobs.plan.grid import MAX_CELLS_PER_STUDY

    grid_schema = load_schema()["$defs"]["study"]["properties"]["grid"]
    assert f"at most {MAX_CELLS_PER_STUDY} cells" in grid_schema["description"]


@pytest.mark.parametrize("results_dir, words", [
    ("", ["results_dir = ''", "empty"]),
    ("   ", ["results_dir = '   '", "empty"]),
    ("taken", ["results_dir = 'taken'", "is an existing file, not a directory"]),
    ("taken/below", ["results_dir = 'taken/below'", "taken is an existing file"]),
])
def test_results_dir_must_be_a_directory(config, tmp_path, results_dir, words):
    (tmp_path / "taken").write_text("a file")
    config["results_dir"] = results_dir
    message = one_line_error(config, root=tmp_path)
    for word in words:
        assert word in message, message


def test_results_dir_may_be_missing_or_an_existing_directory(config, tmp_path):
    config["results_dir"] = "new/results"
    assert make_plan(config, root=tmp_path).results_dir == "new/results"
    (tmp_path / "new" / "results").mkdir(parents=True)
    assert make_plan(config, root=tmp_path).results_dir == "new/results"


def test_slurm_key_typo_is_refused_with_the_close_match(config):
    config["launcher"] = {"executor": "slurm", "slurm": {"partiton": "gpu"}}
    message = one_line_error(config)
    assert "launcher.slurm.partiton = 'gpu': not an sbatch setting submitit knows (did you mean 'partition'?)" in message


def test_slurm_keys_the_profile_suggests_are_accepted(config):
    """profiles/slurm names these (some commented out): submitit takes every one."""
    slurm = {"partition": "debug", "account": "a", "qos": "normal", "constraint": "a100", "mem_gb": 64,
             "setup": ["module load cuda"], "exclusive": True, "gres": "gpu:4"}
    config["launcher"] = {"executor": "slurm", "slurm": slurm}
    assert make_plan(config).launcher.slurm == slurm


def test_slurm_keys_the_launcher_sets_are_refused(config):
    config["launcher"] = {"executor": "slurm", "slurm": {"nodes": 3}}
    assert "launcher.slurm.nodes = 3: the launcher sets it for every cell" in one_line_error(config)


@pytest.mark.parametrize("fixed, words", [
    ({"lr": float("nan")}, ["fixed.lr = nan: not a finite number; it must be a number > 0"]),
    ({"lr": float("inf")}, ["fixed.lr = inf: not a finite number"]),
    ({"epochs": 4.0}, ["fixed.epochs = 4.0 is not an integer; write 4"]),
    ({"epochs": True}, ["fixed.epochs = True has the wrong type; it must be an integer"]),
    ({"train_subset": 1438}, ["train_subset = 1438 is more than the 1437 training samples of digits"]),
    ({"dataset": "fashion_mnist", "train_subset": 60001}, ["more than the 60000 training samples of fashion_mnist"]),
])
def test_numbers_that_would_fail_inside_the_job_are_refused(config, fixed, words):
    config["studies"]["default"]["fixed"].update(fixed)
    message = one_line_error(config)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("line, expected", [
    ("lr: 1e-1", "fixed.lr = '1e-1' is text, not a number; write 1.0e-1 or 0.1: YAML reads 1e-1 as text"),
    ("lr: 5e3", "fixed.lr = '5e3' is text, not a number; write 5.0e+3 or 5000.0: YAML reads 5e3 as text"),
    ("epochs: 1e1", "fixed.epochs = '1e1' is text, not an integer; write 10: YAML reads 1e1 as text"),
    ("epochs: '12'", "fixed.epochs = '12' is text, not an integer; write 12 without quotes"),
])
def test_numbers_yaml_reads_as_text_are_explained(config, line, expected):
    config["studies"]["default"]["fixed"].update(yaml.safe_load(line))
    assert one_line_error(config) == f"config error: studies.default.{expected}"


@pytest.mark.parametrize("batch_size, gpus, ok", [(718, 2, True), (719, 2, False), (1437, 1, True), (1438, 1, False)])
def test_batch_size_is_at_most_a_workers_share_of_the_data(config, batch_size, gpus, ok):
    study = {"grid": {"batch_size": [batch_size], "gpus": [gpus]}, "fixed": {"dataset": "digits"}}
    if ok:
        assert make_plan(with_study(config, study)).studies["s"].cells
    else:
        message = one_line_error(with_study(config, study))
        assert f"batch_size = {batch_size} is more than a worker's share of the data" in message
        assert f"use batch_size <= {1437 // gpus}" in message


def test_generated_data_sets_grow_with_train_subset(config):
    study = {"grid": {"batch_size": [500], "gpus": [2]},
             "fixed": {"dataset": "linear", "model": "linear", "train_subset": 1000}}
    assert make_plan(with_study(config, study)).studies["s"].cells["bs500-gpus2"].train_samples() == 1000


def test_train_set_sizes_match_the_data_sets(tmp_path):
    """The plan checks sizes from constants; the data sets themselves must agree."""
    from jobs.plan.datasets import TRAIN_SET_SIZES
    from jobs.train.data import load_dataset

    for name in ("digits", "linear", "synthetic_images"):
        assert len(load_dataset(name, tmp_path, seed=0).train) == TRAIN_SET_SIZES[name], name


def test_soft_problems_give_one_warning_line_each(config, monkeypatch):
    from jobs.plan import grid as grid_module

    monkeypatch.setattr(grid_module, "available_cpus", lambda: 64)
    config["studies"]["default"]["fixed"].update(warmup_epochs=10, epochs=8)
    warnings: list[str] = []
    make_plan(config, warn=warnings.append)
    assert warnings == ["config warning: studies.default: warmup_epochs = 10 is more than epochs = 8: training ends "
                        "during warmup, before the lr reaches its scaled value; use warmup_epochs <= epochs"]


@pytest.mark.parametrize("cpus, expected", [(2, 0), (1, 1)])
def test_local_workers_beyond_the_cpus_give_a_warning(config, monkeypatch, cpus, expected):
    from jobs.plan import grid as grid_module

    monkeypatch.setattr(grid_module, "available_cpus", lambda: cpus)
    warnings: list[str] = []
    make_plan(config, warn=warnings.append)
    assert len(warnings) == expected
    if expected:
        assert warnings[0].startswith("config warning: launcher.cpus_per_task = 1: studies.default needs "
                                      "gpus x cpus_per_task = 2 x 1 = 2 CPUs for its local workers, but this "
                                      "machine has 1")


# --------------------------------------------------------------------------- scaling-status from anywhere

def test_status_reads_the_study_in_the_given_directory(config, tmp_path, monkeypatch, capsys):
    from conftest import write_config

    from jobs.launch.status import main

    study = tmp_path / "study"
    write_config(study, config)
    cell = study / "results" / "default" / "cells" / "bs16-gpus1"
    cell.mkdir(parents=True)
    (cell / "summary.json").write_text('{"status": "complete", "wall_time_s": 61}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    main(["--directory", str(study)])

    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["study", "cell", "job", "state", "elapsed", "epoch", "val_acc", "cpu_eff", "max_rss_gb",
                       "gpu_util", "gpu_mem_gb"]
    states = {row[1]: row[3] for row in rows[1:]}
    assert states["bs16-gpus1"] == "complete" and len(states) == 6
    assert {state for cell, state in states.items() if cell != "bs16-gpus1"} == {"not"}
    assert rows[1][4] == "00:01:01"


def test_status_without_a_study_says_so_in_one_line(tmp_path, monkeypatch):
    from jobs.launch.status import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as caught:
        main([])
    assert str(caught.value) == ("scaling-status: no config file config/config.yaml; run it in the study's directory "
                                 "(where `snakemake` runs) or pass --directory DIR")
    with pytest.raises(SystemExit, match="--directory nowhere is not a directory"):
        main(["--directory", "nowhere"])


def test_a_gpu_only_precision_is_refused_for_local_workers_without_a_gpu(config, monkeypatch):
    import jobs.plan.grid as grid

    monkeypatch.setattr(grid, "machine_has_nvidia_gpu", lambda: False)
    study = {"grid": {"batch_size": [32], "gpus": [1], "precision": ["bf16", "fp16"]}}
    with pytest.raises(ConfigError, match=r"cell bs32-gpus1-prec_fp16: precision = 'fp16' needs an NVIDIA GPU"):
        make_plan(with_study(config, study))
    study["grid"]["precision"] = ["fp32", "bf16"]
    assert sorted(make_plan(with_study(config, study)).studies["s"].cells) == ["bs32-gpus1-prec_bf16",
                                                                                "bs32-gpus1-prec_fp32"]


def test_a_strong_scaling_study_splits_the_global_batch_over_the_workers(config):
    study = {"scaling": "strong", "grid": {"batch_size": [64, 128], "gpus": [1, 2, 4]},
             "fixed": {"lr_scaling": "none"}}
    plan = make_plan(with_study(config, study))
    cells = plan.studies["s"].cells
    assert plan.studies["s"].scaling == "strong"
    assert sorted(cells) == sorted(f"gbs{b}-gpus{g}" for b in (64, 128) for g in (1, 2, 4))
    for global_batch in (64, 128):
        for gpus in (1, 2, 4):
            cell = cells[f"gbs{global_batch}-gpus{gpus}"]
            assert (cell.batch_size * cell.gpus, cell.gpus) == (global_batch, gpus)
    weak = make_plan(with_study(config, {**study, "scaling": "weak"})).studies["s"].cells
    assert weak["bs64-gpus4"].batch_size == 64


def test_parsing_the_workflow_imports_no_torch():
    """What workflow/rules/*.smk import at every parse (a dry run, a status) stays light:
    the modules they name, imported in a fresh interpreter, leave torch unloaded."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    rules = Path(__file__).resolve().parents[1] / "workflow" / "rules"
    modules = sorted({name for path in rules.glob("*.smk") for line in path.read_text().splitlines()
                      if not line.startswith(" ") and (name := (re.findall(r"^(?:from|import) ([\w.]+)", line) or [""])[0])
                      and name.split(".")[0] in ("jobs", "analysis")})
    assert "jobs.plan.datasets" in modules and "jobs.plan.grid" in modules
    code = "import sys\n" + "".join(f"import {name}\n" for name in modules) + "print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_parameters_added_later_leave_the_rule_param_alone_at_their_defaults():
    """An upgrade must not rerun finished cells: Snakemake compares the rule's params as text,
    so a parameter added later appears there only when a study sets it."""
    from jobs.plan.params import ADDED_LATER, TrainParams

    default = TrainParams()
    assert not set(ADDED_LATER) & set(default.as_rule_param())
    assert list(default.as_rule_param()) == [name for name in default.to_dict() if name not in ADDED_LATER]
    changed = TrainParams(loss="mse", target_loss=1.5)
    assert changed.as_rule_param()["loss"] == "mse" and changed.as_rule_param()["target_loss"] == 1.5
    assert TrainParams.from_dict(changed.as_rule_param()) == changed


def test_a_partition_axis_sends_each_cell_to_its_partition_with_its_gpus_per_node(config, tmp_path):
    from pathlib import Path

    from jobs.launch.launcher import CellLaunch

    config["launcher"] = {"executor": "slurm", "gpus_per_node": 2, "slurm": {"partition": "debug"},
                          "partitions": {"debug": {"gpus_per_node": "2", "price_per_gpu_hour": "1.5"},
                                         "second": {"gpus_per_node": 1, "price_per_gpu_hour": 0.5}}}
    plan = make_plan(with_study(config, {"grid": {"batch_size": [8], "gpus": [2], "partition": ["debug", "second"]}}))
    cells = plan.studies["s"].cells
    assert sorted(cells) == ["bs8-gpus2-partition_debug", "bs8-gpus2-partition_second"]
    placed = {}
    for cell, params in cells.items():
        launch = CellLaunch(tmp_path / cell, "s", cell, plan.studies["s"].axes, params, plan.launcher, Path(tmp_path))
        parameters = launch.executor_parameters()
        placed[params.partition] = (parameters["slurm_partition"], parameters["nodes"], parameters["tasks_per_node"])
        assert launch.measured_with == plan.launcher.for_partition(params.partition).measured_with(2)
    assert placed == {"debug": ("debug", 1, 2), "second": ("second", 2, 1)}
    assert (plan.launcher.price_per_gpu_hour("second"), plan.launcher.price_per_gpu_hour(None)) == (0.5, 1.5)
    message = one_line_error(with_study(config, {"grid": {"batch_size": [8], "gpus": [2], "partition": ["gpu"]}}))
    assert message.endswith("partition = 'gpu' is not in launcher.partitions; allowed: debug, second")
    config["launcher"]["partitions"]["second"]["gpus_per_node"] = 4  # 6 GPUs cannot fill nodes of 4
    message = one_line_error(with_study(config, {"grid": {"batch_size": [8], "gpus": [6], "partition": ["second"]}}))
    assert "gpus = 6 spans more than one node but is not a multiple of launcher.gpus_per_node = 4" in message
    debug = {"partition": "debug", "gpus_per_node": 2, "price_per_gpu_hour": 1.5}
    assert plan.launcher.hardware() == {
        "default": debug,
        "partitions": {"debug": debug, "second": {"partition": "second", "gpus_per_node": 1, "price_per_gpu_hour": 0.5}}}
