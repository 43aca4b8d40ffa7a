"""A study of the user's own model and data: "package.module:function" in the config."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import default_config, run_snakemake, write_config

from jobs.plan.config import ConfigError
from jobs.plan.grid import make_plan

MODELS = '''
import torch
from torch import nn


def mlp(features=4, hidden=16, classes=3):
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def not_a_module():
    return 42


def raises():
    raise RuntimeError("no GPU here")


def smoothed(outputs, targets):
    return torch.nn.functional.cross_entropy(outputs, targets, label_smoothing=0.1)
'''

DATA = '''
import torch
from torch.utils.data import Dataset


def blobs(n=384, features=4, classes=3, seed=0):
    """Three well-separated Gaussian blobs: a learnable classification problem."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, features, generator=generator) * 4

    def draw(count):
        labels = torch.randint(0, classes, (count,), generator=generator)
        return centers[labels] + torch.randn(count, features, generator=generator), labels

    return draw(n), draw(n // 3)


class Pairs(Dataset):
    def __init__(self, inputs, targets):
        self.inputs, self.targets = inputs, targets

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.inputs[index], self.targets[index]


def blobs_dataset(**args):
    (x, y), (x_val, y_val) = blobs(**args)
    return Pairs(x, y), Pairs(x_val, y_val)


def one_split():
    return blobs()[0][0]


READS = []


class Counted(Pairs):
    """Records every sample read."""
    def __getitem__(self, index):
        READS.append(index)
        return super().__getitem__(index)


class Named(Counted):
    classes = ["a", "b", "c", "d"]


def counted(cls=Counted):
    (x, y), (x_val, y_val) = blobs()
    return cls(x, y), cls(x_val, y_val)


def named():
    return counted(Named)
'''


def write_user_package(root: Path) -> str:
    """A package of the user's own, under a name of its own (this process imports each once)."""
    name = f"userpkg_{uuid.uuid4().hex[:8]}"
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(MODELS))
    (package / "data.py").write_text(textwrap.dedent(DATA))
    return name


def study(package: str, **fixed: Any) -> dict[str, Any]:
    return {"grid": {"batch_size": [16], "gpus": [1, 2]},
            "fixed": {"model": f"{package}.models:mlp", "dataset": f"{package}.data:blobs",
                      "epochs": 2, "lr": 0.05, "target_accuracy": 0.8, "patience": 1, **fixed}}


def plan_of(tmp_path: Path, **fixed: Any) -> Any:
    package = write_user_package(tmp_path / "code")
    config = {"python_path": ["code"], "studies": {"mine": study(package, **fixed)}}
    return package, make_plan(config, root=tmp_path, warn=lambda message: None)


def test_the_plan_imports_the_users_code_and_records_a_hash_of_its_sources(tmp_path: Path) -> None:
    package, plan = plan_of(tmp_path, model_args={"hidden": 8})
    params = plan.studies["mine"].cells["bs16-gpus2"]
    assert plan.user_code() == {f"{package}.models:mlp", f"{package}.data:blobs"}
    assert set(params.user_code) == plan.user_code()
    assert all(len(digest) == 16 for digest in params.user_code.values())
    assert params.model_args == {"hidden": 8}
    assert plan.python_path == (str((tmp_path / "code").resolve()),)


BAD = [
    ("no-module", {"model": "nothere.models:mlp"}, "'nothere.models:mlp' does not import: ModuleNotFoundError"),
    ("no-function", {"model": "{p}.models:missing"}, "module {p}.models has no 'missing'"),
    ("not-a-module", {"model": "{p}.models:not_a_module"}, "must return a torch.nn.Module; it returned a int"),
    ("raises", {"model": "{p}.models:raises"}, "raised RuntimeError: no GPU here when called with {{}}"),
    ("wrong-shape", {"model_args": {"features": 5}}, "does not take inputs shaped (batch, 4)"),
    ("bad-argument", {"model_args": {"depth": 3}}, "raised TypeError: mlp() got an unexpected keyword argument"),
    ("not-a-pair", {"dataset": "{p}.data:one_split"}, "must return (train, val); it returned a Tensor"),
    ("dataset-on-device", {"dataset": "{p}.data:blobs_dataset"}, "returns a torch Dataset, which a DataLoader serves: "
                                                                 "set data_path: loader"),
    ("batch-too-large", {"dataset_args": {"n": 20}}, "batch_size = 16 is more than a worker's share of the data "
                                                     "(20 training samples of {p}.data:blobs / gpus = 2 = 10)"),
    ("no-loss", {"loss": "{p}.models:nothing"}, "module {p}.models has no 'nothing'"),
    ("args-of-a-builtin", {"dataset": "digits", "dataset_args": {"n": 3}}, "dataset_args with dataset 'digits': "
                                                                           "dataset_args are for your own"),
]


@pytest.mark.parametrize("fixed, expected", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_user_code_is_one_line_naming_the_study_before_anything_runs(tmp_path: Path, fixed: dict[str, Any],
                                                                          expected: str) -> None:
    package = write_user_package(tmp_path / "code")
    fixed = {key: value.format(p=package) if isinstance(value, str) else value for key, value in fixed.items()}
    config = {"python_path": ["code"], "studies": {"mine": study(package, **fixed)}}
    with pytest.raises(ConfigError) as caught:
        make_plan(config, root=tmp_path, warn=lambda message: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("config error: studies.mine, cell bs16-gpus"), message
    assert expected.format(p=package) in message, message


def test_a_python_path_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    config = {"python_path": ["nowhere"], "studies": {"mine": study("x")}}
    with pytest.raises(ConfigError, match="config error: python_path: .*nowhere is not a directory"):
        make_plan(config, root=tmp_path, warn=lambda message: None)


def job_ids(cells: Path) -> dict[str, str]:
    return {cell.name: json.loads((cell / "job.json").read_text())["job_id"] for cell in cells.iterdir()}


def test_a_study_of_the_users_model_and_data_trains_like_one_worker_and_reruns_on_a_changed_source(
        tmp_path: Path) -> None:
    """Strong scaling, so the 2-worker cell steps with the 1-worker cell's global batch: data-parallel
    SGD must follow the single-worker run. A Dataset (the loader path) trains like the tensors."""
    package = write_user_package(tmp_path / "code")
    config = default_config()
    config["python_path"] = ["code"]
    mine = study(package, lr_scaling="none")
    mine["scaling"], mine["grid"]["batch_size"] = "strong", [32]
    loader = study(package, dataset=f"{package}.data:blobs_dataset", data_path="loader", loader_workers=0,
                   lr_scaling="none")
    loader["scaling"], loader["grid"] = "strong", {"batch_size": [32], "gpus": [2]}
    config["studies"] = {"mine": mine, "loader": loader}
    write_config(tmp_path, config)

    first = run_snakemake(tmp_path)

    assert first.returncode == 0, first.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "results/mine/runs.csv").set_index("cell")
    assert set(runs["status"]) == {"complete"}
    epochs = pd.read_csv(tmp_path / "results/mine/epochs.csv")
    one, two = (epochs[epochs["cell"] == cell]["train_loss"].to_numpy() for cell in ("gbs32-gpus1", "gbs32-gpus2"))
    assert len(one) == 2 and two == pytest.approx(one, rel=1e-4)
    assert runs["best_val_accuracy"].min() > 0.8  # blobs four standard deviations apart: learnt, not guessed
    through_loader = pd.read_csv(tmp_path / "results/loader/epochs.csv")["train_loss"].to_numpy()
    assert through_loader == pytest.approx(two, rel=1e-4)
    cells = tmp_path / "results/mine/cells"
    meta = json.loads((cells / "gbs32-gpus2" / "metrics.jsonl").read_text().splitlines()[0])
    assert meta["params"]["model"] == f"{package}.models:mlp"
    assert set(meta["params"]["user_code"]) == {f"{package}.models:mlp", f"{package}.data:blobs"}
    assert meta["parameters"] == 4 * 16 + 16 + 16 * 3 + 3  # the user's MLP, counted from its own module
    # Its two matmuls, 2 x in x out operations per sample each, times 3 for forward and backward.
    assert meta["flops_per_sample"] == 3 * (2 * 4 * 16 + 2 * 16 * 3)
    assert runs["flop_rate"].to_numpy() == pytest.approx(runs["throughput"].to_numpy() * meta["flops_per_sample"])

    before = job_ids(cells)
    models = tmp_path / "code" / package / "models.py"
    models.write_text(models.read_text() + "\n# tuned\n")
    second = run_snakemake(tmp_path)

    assert second.returncode == 0, second.stderr[-3000:]
    after = job_ids(cells)
    assert all(after[cell] != before[cell] for cell in before), (before, after)
    kept = list((tmp_path / "results/mine/superseded").glob("gbs32-gpus1*/summary.json"))
    assert len(kept) == 1, list((tmp_path / "results/mine").rglob("superseded/*"))


def test_a_queued_request_may_name_only_the_plans_own_code(tmp_path: Path) -> None:
    """A request in the scheduler directory names the code its job will import and call: one
    naming code the plan does not (os:system, say) is refused, whoever wrote it."""
    from jobs.launch.launcher import CellLaunch, vet_request
    from jobs.plan.params import LauncherSettings, TrainParams

    launcher = LauncherSettings(executor="slurm")
    results, data, code = tmp_path / "results", tmp_path / "data", ("/shared/code",)
    planned = "mypkg.models:mlp"

    def vet(model: str, python_path: tuple[str, ...] = code) -> str | None:
        request = CellLaunch(results / "s" / "cells" / "bs8-gpus1", "s", "bs8-gpus1", ("batch_size", "gpus"),
                             TrainParams(model=model), launcher, data, python_path).request()
        request = dataclasses.replace(request, training=json.loads(json.dumps(request.training)))  # as queued
        return vet_request(request, launcher, data, results, python_path=code, user_code=frozenset({planned}))

    assert vet(planned) is None
    assert vet("cnn") is None
    assert vet("subprocess:run") == "it names code the plan does not ('subprocess:run')"
    assert (vet(planned, python_path=("/elsewhere",)) or "").startswith("its training differ")


BUILT_IN_MISMATCHES = [
    ({"model": "gpt", "dataset": "digits"}, "model = 'gpt' with dataset 'digits': the built-in language model (gpt) "
                                            "reads token sequences (markov_text), and only it does"),
    ({"model": "cnn", "dataset": "markov_text"}, "model = 'cnn' with dataset 'markov_text'"),
    ({"model": "cnn", "model_args": {"n_layer": 2}}, "model_args with model 'cnn': model_args are for gpt"),
    ({"model": "gpt", "dataset": "markov_text", "model_args": {"layers": 2}},
     "model_args 'layers' is not a setting of gpt; allowed: n_layer, n_head, n_embd"),
    ({"model": "gpt", "dataset": "markov_text", "model_args": {"n_embd": 30, "n_head": 4}},
     "model_args n_embd = 30 must be a multiple of n_head = 4"),
    ({"model": "gpt", "dataset": "markov_text", "model_args": {"n_layer": 0}},
     "model_args n_layer = 0: gpt's n_layer must be a positive integer"),
]


@pytest.mark.parametrize("fixed, expected", BUILT_IN_MISMATCHES, ids=[m[1][:30] for m in BUILT_IN_MISMATCHES])
def test_built_in_models_and_data_that_do_not_fit_are_one_line(tmp_path: Path, fixed: dict[str, Any],
                                                               expected: str) -> None:
    config = {"studies": {"s": {"grid": {"batch_size": [8], "gpus": [1]}, "fixed": fixed}}}
    with pytest.raises(ConfigError) as caught:
        make_plan(config, root=tmp_path, warn=lambda message: None)
    assert str(caught.value).startswith(f"config error: studies.s, cell bs8-gpus1: {expected}"), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_loss_of_the_users_own_is_planned_hashed_and_used(tmp_path: Path) -> None:
    import torch

    from jobs.train.job import loss_function

    package = write_user_package(tmp_path / "code")
    path = f"{package}.models:smoothed"
    config = {"python_path": ["code"], "studies": {"mine": study(package, loss=path)}}
    plan = make_plan(config, root=tmp_path, warn=lambda message: None)
    assert path in plan.user_code() and path in plan.studies["mine"].cells["bs16-gpus1"].user_code
    logits, targets = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1)
    assert loss_function(path, classification=True)(logits, targets) == pytest.approx(float(expected))
    assert loss_function("auto", classification=False) is torch.nn.functional.mse_loss


def test_a_grid_over_the_users_models_and_their_arguments_names_each_cell_readably(tmp_path: Path) -> None:
    package = write_user_package(tmp_path / "code")
    config = {"python_path": ["code"], "studies": {"mine": {
        "grid": {"batch_size": [16], "gpus": [1], "model_args": [{"hidden": 8}, {"hidden": 32, "classes": 3}]},
        "fixed": {"model": f"{package}.models:mlp", "dataset": f"{package}.data:blobs"}}}}
    plan = make_plan(config, root=tmp_path, warn=lambda message: None)
    cells = plan.studies["mine"].cells
    assert list(cells) == ["bs16-gpus1-margs_hidden8", "bs16-gpus1-margs_classes3_hidden32"]
    assert cells["bs16-gpus1-margs_classes3_hidden32"].model_args == {"hidden": 32, "classes": 3}

    config["studies"]["mine"]["grid"] = {"batch_size": [16], "gpus": [1],
                                         "model": [f"{package}.models:mlp", f"{package}.data:mlp"]}
    del config["studies"]["mine"]["fixed"]["model"]
    with pytest.raises(ConfigError, match=r"both give the cell id part 'model_mlp'"):
        make_plan(config, root=tmp_path, warn=lambda message: None)


def test_a_cells_launcher_plans_without_importing_or_calling_the_users_code(tmp_path: Path) -> None:
    """The workflow's parse tried the code; each cell's launcher on the login node must not load the
    data again (once per cell), yet knows which import paths its queue may carry."""
    import sys

    package = write_user_package(tmp_path / "code")
    config = {"python_path": ["code"], "studies": {"mine": study(package)}}
    plan = make_plan(config, root=tmp_path, warn=lambda message: None, try_user_code=False)
    assert f"{package}.data" not in sys.modules and f"{package}.models" not in sys.modules
    assert plan.user_code() == {f"{package}.models:mlp", f"{package}.data:blobs"}
    assert list(plan.studies["mine"].cells) == ["bs16-gpus1", "bs16-gpus2"]


def test_a_users_dataset_is_read_whole_only_when_a_built_in_model_needs_its_classes(tmp_path: Path) -> None:
    """Counting classes reads every sample; a job of the user's own model must not pay for it."""
    import importlib
    import sys

    from jobs.train.data import load_user_dataset

    package = write_user_package(tmp_path / "code")
    sys.path.insert(0, str(tmp_path / "code"))
    try:
        reads = importlib.import_module(f"{package}.data").READS
        splits = load_user_dataset(f"{package}.data:counted", {}, train_subset=100)
        assert len(reads) <= 1  # the first sample tells the task
        reads.clear()
        # The reference: every target of both splits, read straight from the tensors.
        train, val = splits.train.dataset, splits.val
        assert splits.num_classes == int(max(train.targets[:100].max(), val.targets.max())) + 1
        assert len(reads) == 100 + len(val)
        reads.clear()
        named = load_user_dataset(f"{package}.data:named", {}, train_subset=100)
        assert named.num_classes == 4 and len(reads) <= 1  # torchvision's `classes`, read nothing more
    finally:
        sys.path.remove(str(tmp_path / "code"))
