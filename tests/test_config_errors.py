"""Every bad input stops `snakemake -n` with one line naming the key, the value and what
is allowed (a soft one gives one warning line and goes on), never a traceback, and
before anything is written.

Each row of BAD_INPUTS goes through the real `snakemake -n`. Its expected line is
exact, except that `…` stands for any text (long lists of allowed keys, machine sizes).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import default_config, run_snakemake, write_config

from jobs.plan.grid import available_cpus

pytestmark = pytest.mark.workflow

CPUS = available_cpus()


@dataclass(frozen=True)
class Case:
    name: str
    change: Callable[[dict[str, Any]], Any]  # edits a copy of config/config.yaml in place
    line: str  # the one line expected; `…` matches anything
    warning: bool = False
    yaml_text: Callable[[str], str] = lambda text: text  # edits the YAML as written (for YAML's own readings)


def study(config: dict[str, Any]) -> dict[str, Any]:
    return config["studies"]["default"]


def grid(config: dict[str, Any]) -> dict[str, Any]:
    return study(config)["grid"]


def fixed(config: dict[str, Any]) -> dict[str, Any]:
    return study(config)["fixed"]


def launcher(config: dict[str, Any]) -> dict[str, Any]:
    return config.setdefault("launcher", {})


def one_worker(config: dict[str, Any]) -> None:
    """Warning cases run one worker, so a small machine adds no CPU warning of its own."""
    grid(config)["gpus"] = [1]


def replace_line(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, f"{old!r} not in the written config"
        return text.replace(old, new)
    return edit


E = "config error: "
W = "config warning: "
S = "studies.default"

BAD_INPUTS = [
    # --- the gaps of issue 7 ---------------------------------------------------------------
    Case("cell-ids-collide", lambda c: (grid(c).update(lr=[0.1, 0.1000001]), fixed(c).pop("lr")),
         E + f"{S}.grid.lr = [0.1, 0.1000001]: 0.1 and 0.1000001 both give the cell id part 'lr0.1'; "
         "use values that differ within 6 significant digits"),
    Case("results-dir-is-a-file", lambda c: c.update(results_dir="config/config.yaml"),
         E + "results_dir = 'config/config.yaml': config/config.yaml is an existing file, not a directory; "
         "name a directory (it is created if missing)"),
    Case("results-dir-below-a-file", lambda c: c.update(results_dir="config/config.yaml/results"),
         E + "results_dir = 'config/config.yaml/results': config/config.yaml is an existing file, not a directory; "
         "name a directory (it is created if missing)"),
    Case("results-dir-empty", lambda c: c.update(results_dir=""),
         E + "results_dir = '': empty; name a directory, such as 'results'"),
    Case("data-dir-is-a-file", lambda c: c.update(data_dir="config/config.yaml"),
         E + "data_dir = 'config/config.yaml': config/config.yaml is an existing file, not a directory; …"),
    Case("grid-of-a-million-cells",
         lambda c: grid(c).update(batch_size=list(range(1, 1001)), gpus=list(range(1, 1001))),
         E + f"{S}.grid = 1000 batch_size x 1000 gpus = 1000000 cells: too many; a study may have at most 16384 "
         "cells: use fewer values or split it into several studies"),
    Case("slurm-key-typo", lambda c: launcher(c).update(slurm={"partiton": "gpu"}),
         E + "launcher.slurm.partiton = 'gpu': not an sbatch setting submitit knows (did you mean 'partition'?); "
         "allowed: account, …, partition, …"),
    Case("slurm-key-the-launcher-sets", lambda c: launcher(c).update(slurm={"time": 60}),
         E + "launcher.slurm.time = 60: the launcher sets it for every cell; it follows from launcher.time_limit"),
    Case("batch-size-float", lambda c: grid(c).update(batch_size=[16, 64.0]),
         E + f"{S}.grid.batch_size[1] = 64.0 is not an integer; write 64"),
    Case("lr-nan", lambda c: fixed(c).update(lr=float("nan")),
         E + f"{S}.fixed.lr = nan: not a finite number; it must be a number > 0"),
    Case("lr-inf", lambda c: fixed(c).update(lr=float("inf")),
         E + f"{S}.fixed.lr = inf: not a finite number; it must be a number > 0"),
    Case("train-subset-beyond-digits", lambda c: fixed(c).update(train_subset=5000),
         E + f"{S}, cell bs16-gpus1: train_subset = 5000 is more than the 1437 training samples of digits; "
         "use train_subset <= 1437, or null for all of them"),
    Case("train-subset-beyond-fashion-mnist", lambda c: fixed(c).update(dataset="fashion_mnist", train_subset=60001),
         E + f"{S}, cell bs16-gpus1: train_subset = 60001 is more than the 60000 training samples of fashion_mnist; "
         "use train_subset <= 60000, or null for all of them"),
    Case("batch-beyond-a-workers-share", lambda c: grid(c).update(batch_size=[16, 1000]),
         E + f"{S}, cell bs1000-gpus2: batch_size = 1000 is more than a worker's share of the data "
         "(1437 training samples of digits / gpus = 2 = 718); use batch_size <= 718"),
    Case("batch-beyond-linear-data",
         lambda c: (grid(c).update(batch_size=[128]), fixed(c).update(dataset="linear", model="linear")),
         E + f"{S}, cell bs128-gpus1: batch_size = 128 is more than a worker's share of the data "
         "(100 training samples of linear / gpus = 1 = 100); use batch_size <= 100"),
    Case("more-workers-than-samples",
         lambda c: (grid(c).update(batch_size=[1], gpus=[8]), fixed(c).update(train_subset=4)),
         E + f"{S}, cell bs1-gpus8: gpus = 8 is more than the 4 training samples of digits: "
         "some workers would get no data; use gpus <= 4"),
    Case("yaml-reads-1e-1-as-text", lambda c: fixed(c).update(lr=0.25),
         E + f"{S}.fixed.lr = '1e-1' is text, not a number; write 1.0e-1 or 0.1: YAML reads 1e-1 as text",
         yaml_text=replace_line("lr: 0.25", "lr: 1e-1")),
    Case("yaml-reads-1e2-as-text", lambda c: fixed(c).update(epochs=77),
         E + f"{S}.fixed.epochs = '1e2' is text, not an integer; write 100: YAML reads 1e2 as text",
         yaml_text=replace_line("epochs: 77", "epochs: 1e2")),
    # --- out of range ----------------------------------------------------------------------
    Case("negative-batch-size", lambda c: grid(c).update(batch_size=[-8, 64]),
         E + f"{S}.grid.batch_size[0] = -8 is too small; it must be >= 1"),
    Case("zero-gpus", lambda c: grid(c).update(gpus=[0, 1]),
         E + f"{S}.grid.gpus[0] = 0 is too small; it must be >= 1"),
    Case("zero-epochs", lambda c: fixed(c).update(epochs=0),
         E + f"{S}.fixed.epochs = 0 is too small; it must be >= 1"),
    Case("negative-lr", lambda c: fixed(c).update(lr=-0.1),
         E + f"{S}.fixed.lr = -0.1 is too small; it must be > 0"),
    Case("momentum-one", lambda c: fixed(c).update(momentum=1.0),
         E + f"{S}.fixed.momentum = 1.0 is too large; it must be < 1"),
    Case("decay-factor-above-one", lambda c: fixed(c).update(lr_schedule="step", lr_decay_epochs=[4], lr_decay_factor=1.5),
         E + f"{S}.fixed.lr_decay_factor = 1.5 is too large; it must be <= 1"),
    Case("decay-epoch-zero", lambda c: fixed(c).update(lr_schedule="step", lr_decay_epochs=[0, 4]),
         E + f"{S}.fixed.lr_decay_epochs[0] = 0 is too small; it must be > 0"),
    Case("target-accuracy-zero", lambda c: fixed(c).update(target_accuracy=0),
         E + f"{S}.fixed.target_accuracy = 0 is too small; it must be > 0"),
    Case("width-zero", lambda c: fixed(c).update(width=0),
         E + f"{S}.fixed.width = 0 is too small; it must be >= 1"),
    Case("negative-max-requeues", lambda c: launcher(c).update(max_requeues=-1),
         E + "launcher.max_requeues = -1 is too small; it must be >= 0"),
    Case("zero-poll-interval", lambda c: launcher(c).update(poll_interval_s=0),
         E + "launcher.poll_interval_s = 0 is too small; it must be > 0"),
    # --- wrong types -----------------------------------------------------------------------
    Case("batch-size-text", lambda c: grid(c).update(batch_size=["big"]),
         E + f"{S}.grid.batch_size[0] = 'big' has the wrong type; it must be an integer"),
    Case("axis-not-a-list", lambda c: grid(c).update(batch_size=32),
         E + f"{S}.grid.batch_size = 32 has the wrong type; it must be a list"),
    Case("seed-fraction", lambda c: fixed(c).update(seed=1.5),
         E + f"{S}.fixed.seed = 1.5 has the wrong type; it must be an integer"),
    Case("stop-at-target-text", lambda c: fixed(c).update(stop_at_target="maybe"),
         E + f"{S}.fixed.stop_at_target = 'maybe' has the wrong type; it must be true or false"),
    Case("study-is-null", lambda c: c["studies"].update(default=None),
         E + f"{S} = None has the wrong type; it must be a mapping (key: value)"),
    # --- unknown keys, at every level ------------------------------------------------------
    Case("unknown-top-level-key", lambda c: c.update(result_dir="out"),
         E + "(top level): 'result_dir' is not a known key (did you mean 'results_dir'?); "
         "allowed: data_dir, fashion_mnist_mirror, launcher, python_path, results_dir, studies"),
    Case("unknown-launcher-key", lambda c: launcher(c).update(gpu_per_node=4),
         E + "launcher: 'gpu_per_node' is not a known key (did you mean 'gpus_per_node'?); allowed: checkpoint_every_s, controller, …"),
    Case("unknown-study-key", lambda c: study(c).update(descripton="typo"),
         E + f"{S}: 'descripton' is not a known key (did you mean 'description'?); allowed: description, fixed, grid, scaling, time_budget_s"),
    Case("unknown-grid-axis", lambda c: grid(c).update(learning_rate=[0.1]),
         E + f"{S}.grid: 'learning_rate' is not a training parameter; allowed: backend, batch_size, …, width"),
    Case("unknown-fixed-key", lambda c: fixed(c).update(optimiser="adam"),
         E + f"{S}.fixed: 'optimiser' is not a training parameter (did you mean 'optimizer'?); allowed: backend, batch_size, …"),
    Case("unknown-dataset", lambda c: fixed(c).update(dataset="imagenet"),
         E + f"{S}.fixed.dataset = 'imagenet' is not allowed; "
         "use one of 'linear', 'digits', 'fashion_mnist', 'synthetic_images', 'markov_text', or your own as \"package.module:function\""),
    Case("unknown-model", lambda c: fixed(c).update(model="resnet50"),
         E + f"{S}.fixed.model = 'resnet50' is not allowed (did you mean 'wide_resnet'?); use one of 'linear', 'cnn', 'wide_resnet', 'gpt', "
         "or your own as \"package.module:function\""),
    Case("unknown-optimizer", lambda c: fixed(c).update(optimizer="adamm"),
         E + f"{S}.fixed.optimizer = 'adamm' is not allowed (did you mean 'adam'?); use one of 'sgd', 'adam', 'adamw', 'lars', 'larc', 'lamb', 'novograd'"),
    Case("unknown-executor", lambda c: launcher(c).update(executor="kubernetes"),
         E + "launcher.executor = 'kubernetes' is not allowed; use one of 'local', 'slurm'"),
    # --- empty or missing ------------------------------------------------------------------
    Case("empty-axis", lambda c: grid(c).update(batch_size=[]),
         E + f"{S}.grid.batch_size is empty; give at least 1 value(s)"),
    Case("no-studies", lambda c: c.update(studies={}),
         E + "studies is empty; give at least 1 value(s)"),
    Case("missing-batch-size", lambda c: grid(c).pop("batch_size"),
         E + f"{S}.grid: missing 'batch_size'; it needs batch_size, gpus"),
    Case("missing-gpus", lambda c: grid(c).pop("gpus"),
         E + f"{S}.grid: missing 'gpus'; it needs batch_size, gpus"),
    Case("empty-grid", lambda c: study(c).update(grid={}),
         E + f"{S}.grid: missing 'batch_size', 'gpus'; it needs batch_size, gpus"),
    Case("missing-grid", lambda c: study(c).pop("grid"),
         E + f"{S}: missing 'grid'; it needs grid"),
    Case("repeated-value", lambda c: grid(c).update(batch_size=[8, 8]),
         E + f"{S}.grid.batch_size = [8, 8] repeats a value; list each value once"),
    # --- combinations ----------------------------------------------------------------------
    Case("gpus-beyond-max-gpus", lambda c: launcher(c).update(max_gpus=1),
         E + f"{S}, cell bs16-gpus2: gpus = 2 is more than launcher.max_gpus = 1 allows"),
    Case("bad-time-limit", lambda c: launcher(c).update(time_limit="two hours"),
         E + "launcher.time_limit: time limit 'two hours' does not parse; "
         "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
    Case("time-limit-under-a-minute", lambda c: launcher(c).update(time_limit="0:00"),
         E + "launcher.time_limit: time limit '0:00' is shorter than a minute; use MM, …"),
    Case("step-schedule-without-decay-epochs", lambda c: fixed(c).update(lr_schedule="step"),
         E + f"{S}, cell bs16-gpus1: lr_schedule = 'step' needs lr_decay_epochs, the epochs at which the lr is "
         "multiplied by lr_decay_factor (e.g. [30, 60, 80])"),
    Case("cosine-without-epochs-to-decay", lambda c: fixed(c).update(lr_schedule="cosine", warmup_epochs=8),
         E + f"{S}, cell bs16-gpus1: lr_schedule = 'cosine' with warmup_epochs = 8 >= epochs = 8: "
         "no epochs left to decay over"),
    Case("wide-resnet-depth", lambda c: fixed(c).update(model="wide_resnet", depth=15),
         E + f"{S}, cell bs16-gpus1: depth = 15: a Wide ResNet's depth must be 6n+4 (10, 16, 22, 28, ...)"),
    Case("linear-data-cnn-model", lambda c: fixed(c).update(dataset="linear"),
         E + f"{S}, cell bs16-gpus1: model = 'cnn' with dataset 'linear': the linear (regression) dataset "
         "needs model 'linear'"),
    Case("fail-after-last-epoch", lambda c: fixed(c).update(fail_at_epoch=9),
         E + f"{S}, cell bs16-gpus1: fail_at_epoch = 9: must be at most epochs = 8"),
    Case("unknown-backend", lambda c: grid(c).update(backend=["horovod", "torch"]),
         E + f"{S}.grid.backend[1] = 'torch' is not allowed; use one of 'horovod', 'ddp'"),
    Case("bucket-of-zero-mb", lambda c: fixed(c).update(bucket_mb=0),
         E + f"{S}.fixed.bucket_mb = 0 is too small; it must be > 0"),
    Case("axis-also-fixed", lambda c: grid(c).update(lr=[0.1]),
         E + f"{S}: 'lr' is both a grid axis and fixed; keep it in one place"),
    Case("mpi-without-slurm", lambda c: launcher(c).update(controller="mpi"),
         E + "studies.default, cell bs16-gpus1: launcher.controller = 'mpi' needs launcher.executor = 'slurm' "
         "(srun --mpi=pmix starts the ranks)"),
    Case("study-name-with-space", lambda c: c["studies"].update({"my study": c["studies"].pop("default")}),
         E + "studies: 'my study' must match ^[A-Za-z0-9_]+$ (letters, digits, underscores)"),
    Case("record-updates-of-a-cnn", lambda c: fixed(c).update(record_updates=True),
         E + f"{S}, cell bs16-gpus1: record_updates = true with model 'cnn' on dataset 'digits': (w, b) per update "
         "is recorded for Lab 1's linear model only (model and dataset 'linear')"),
    Case("loss-change-beyond-one", lambda c: fixed(c).update(stop_at_loss_change=1.5),
         E + f"{S}.fixed.stop_at_loss_change = 1.5 is too large; it must be < 1"),
    Case("unknown-named-study", lambda c: c.update(study="lab1_gd_vs_sdg"),
         E + "study = 'lab1_gd_vs_sdg' is not a study in …config/studies (did you mean 'lab1_gd_vs_sgd'?); "
         "allowed: …lab1_gd_vs_sgd…"),
    Case("named-study-size", lambda c: c.update(study="lab1_gd_vs_sgd", size="huge"),
         E + "size = 'huge': must be one of small, full"),
    Case("size-without-study", lambda c: c.update(size="full"),
         E + "size = 'full' without study=NAME; size picks the size of a named study (scaling-studies lists them)"),
    Case("strong-batch-not-divided-by-gpus",
         lambda c: (study(c).update(scaling="strong"), fixed(c).update(lr_scaling="none"),
                    grid(c).update(batch_size=[15, 64])),
         E + f"{S}, cell gbs15-gpus2: scaling = 'strong' splits the global batch_size = 15 over gpus = 2, which "
         "does not divide it; use global batches that every gpus value divides (e.g. 14)"),
    Case("unknown-scaling", lambda c: study(c).update(scaling="strnog"),
         E + f"{S}.scaling = 'strnog' is not allowed (did you mean 'strong'?); use one of 'weak', 'strong'"),
    Case("zero-time-budget", lambda c: study(c).update(time_budget_s=0),
         E + f"{S}.time_budget_s = 0 is too small; it must be > 0"),
    # --- soft problems: one warning line, and the dry run goes on -------------------------
    Case("strong-scaling-with-scaled-lr", lambda c: study(c).update(scaling="strong"),
         W + f"{S}: scaling = 'strong' with lr_scaling = 'linear': the global batch does not grow with the "
         "workers, so the lr should not either; use lr_scaling: none", warning=True),
    Case("warmup-beyond-epochs", lambda c: (one_worker(c), fixed(c).update(warmup_epochs=10)),
         W + f"{S}: warmup_epochs = 10 is more than epochs = 8: training ends during warmup, before the lr "
         "reaches its scaled value; use warmup_epochs <= epochs", warning=True),
    Case("decay-epoch-after-the-last",
         lambda c: (one_worker(c), fixed(c).update(lr_schedule="step", lr_decay_epochs=[4, 8])),
         W + f"{S}: lr_decay_epochs = [4.0, 8.0]: [8.0] not before the last epoch (epochs = 8), so never applied; "
         "use epochs < 8", warning=True),
    Case("local-workers-beyond-cpus", lambda c: launcher(c).update(cpus_per_task=CPUS),
         W + f"launcher.cpus_per_task = {CPUS}: studies.default needs gpus x cpus_per_task = 2 x {CPUS} = "
         f"{2 * CPUS} CPUs for its local workers, but this machine has {CPUS}; workers will share cores and "
         f"timings will be skewed: keep gpus x cpus_per_task <= {CPUS}, or use executor slurm", warning=True),
]


def expected_pattern(line: str) -> str:
    return ".*".join(re.escape(part) for part in line.split("…"))


def files_under(directory: Path) -> set[Path]:
    return {path.relative_to(directory) for path in directory.rglob("*")}


@dataclass(frozen=True)
class DryRun:
    returncode: int
    output: str  # stdout and stderr
    new_files: set[Path]  # what the run left in its directory, Snakemake's own .snakemake/ aside


def dry_run(workdir: Path, case: Case) -> DryRun:
    config = copy.deepcopy(default_config())
    case.change(config)
    write_config(workdir, config)
    written = workdir / "config" / "config.yaml"
    written.write_text(case.yaml_text(written.read_text()))
    before = files_under(workdir)
    result = run_snakemake(workdir, "-n", timeout=120)
    new = {path for path in files_under(workdir) - before if path.parts[0] != ".snakemake"}
    return DryRun(result.returncode, result.stdout + result.stderr, new)


@pytest.fixture(scope="module")
def dry_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DryRun]:
    """The selected cases' dry runs, side by side: each spends seconds importing, not computing."""
    cases = [item.callspec.params["case"] for item in request.session.items
             if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)]
    with ThreadPoolExecutor(max_workers=available_cpus()) as pool:
        runs = pool.map(lambda case: dry_run(tmp_path_factory.mktemp(case.name), case), cases)
        return {case.name: run for case, run in zip(cases, runs)}


def test_the_table_is_large_and_its_names_are_unique():
    assert len(BAD_INPUTS) >= 40
    assert len({case.name for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda case: case.name)
def test_bad_input_gives_one_line_before_anything_runs(dry_runs: dict[str, DryRun], case: Case) -> None:
    run = dry_runs[case.name]
    assert "Traceback" not in run.output, run.output[-3000:]
    assert (run.returncode == 0) == case.warning, run.output[-3000:]
    lines = [line for line in run.output.splitlines() if line.startswith(("config error", "config warning"))]
    assert len(lines) == 1, run.output[-3000:]
    assert re.fullmatch(expected_pattern(case.line), lines[0]), f"\n got: {lines[0]}\nwant: {case.line}"
    assert run.new_files == set()


def test_every_case_changes_the_config():
    """A row whose edit did nothing would test the default config, not a bad input."""
    baseline = yaml.safe_dump(default_config())
    for case in BAD_INPUTS:
        config = copy.deepcopy(default_config())
        case.change(config)
        assert case.yaml_text(yaml.safe_dump(config)) != baseline, case.name
