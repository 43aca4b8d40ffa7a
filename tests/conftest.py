"""Shared helpers: run the real workflow in a scratch directory with a given config."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def default_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_study(**fixed: Any) -> dict[str, Any]:
    """A study small enough for a test: digits, a narrow CNN, a few epochs."""
    base = {"dataset": "digits", "model": "cnn", "epochs": 3, "lr": 0.02, "target_accuracy": 0.5,
            "patience": 1, "train_subset": 400}
    return {"grid": {"batch_size": [32, 64], "gpus": [1, 2]}, "fixed": {**base, **fixed}}


def write_config(workdir: Path, config: dict[str, Any]) -> None:
    (workdir / "config").mkdir(parents=True, exist_ok=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake_command(workdir: Path, profile: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
            "--profile", str(profile), *args]


def run_snakemake(workdir: Path, *args: str, profile: Path = REPO / "profiles" / "default",
                  env: dict[str, str] | None = None, timeout: float = 900,
                  umask: int = -1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(snakemake_command(workdir, profile, *args),
                          capture_output=True, text=True, timeout=timeout, cwd=workdir, env=env, umask=umask)


GROUP_OR_OTHER_WRITE = 0o022


def private_paths(results: Path) -> list[Path]:
    """What the tool unpickles or executes (jobs/private.py): every path in the scheduler
    directory and the submitit folders, and the checkpoints."""
    roots = [results / ".scheduler", *results.glob("*/submitit"), *results.glob("*/cells/*/submitit")]
    return [path for root in roots if root.exists() for path in [root, *root.rglob("*")]] + \
        list(results.glob("*/cells/*/checkpoint.pt"))


def assert_private(results: Path) -> None:
    """Dirs 0700; checkpoints, pickles and records 0600; nothing writable by group or others."""
    paths = private_paths(results)
    assert paths
    for path in paths:
        mode = path.stat().st_mode & 0o777
        assert not mode & GROUP_OR_OTHER_WRITE, f"{path}: {mode:04o}"
        if path.is_dir():
            assert mode == 0o700, f"{path}: {mode:04o}"
        elif path.suffix in (".pt", ".pkl", ".json"):
            assert mode == 0o600, f"{path}: {mode:04o}"


@pytest.fixture
def config() -> dict[str, Any]:
    return copy.deepcopy(default_config())


# --- the real Slurm test cluster (tests/cluster/up) -----------------------------------

CLUSTER_DIR = Path(os.environ.get("SCALING_STUDY_CLUSTER_DIR", "/tmp/scaling-study-cluster"))


def slurm_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SLURM_CONF", str(CLUSTER_DIR / "etc" / "slurm.conf"))
    return env


def slurm(*command: str) -> str:
    """Run a Slurm client command against the test cluster and return its output."""
    return subprocess.run(command, capture_output=True, text=True, check=True, env=slurm_env(), timeout=60).stdout


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The test cluster's environment; skips (fails under CI) when it is not up."""
    try:
        states = slurm("sinfo", "-h", "-o", "%T").split()
    except (OSError, subprocess.SubprocessError) as error:
        states, problem = [], str(error)
    else:
        problem = f"node states {states}"
    if not states or not all(s.startswith("idle") or s.startswith("mix") or s.startswith("alloc") for s in states):
        message = f"the Slurm test cluster is not up ({problem}): run tests/cluster/up"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return slurm_env()


def slurm_profile(directory: Path, **launcher: Any) -> Path:
    """profiles/slurm with test-sized settings: a copy, so the real one stays as users see it."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["config"]["launcher"].update({"poll_interval_s": 1, "scheduler_refresh_s": 3, "result_grace_s": 3,
                                          **launcher})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile))
    return directory


def data_points(ax: Any) -> int:
    """How many points of data a panel draws: lines, markers, scatter and error bars, and bars,
    in data coordinates (reference lines and bands across the panel do not count)."""
    import numpy as np

    points = sum(int(np.size(line.get_xdata())) for line in ax.get_lines() if line.get_transform() == ax.transData)
    points += sum(len(collection.get_offsets()) for collection in ax.collections
                  if collection.get_offset_transform() == ax.transData)
    points += sum(1 for patch in ax.patches if patch.get_data_transform() == ax.transData)
    return points


def assert_figures_full(study_dir: Path) -> list[str]:
    """Rebuild a study's figures from its tables, as the workflow drew them, and check the figure
    objects: every panel draws data, no line is drawn through a single point, every panel has an x
    label and every figure a y label; the figures drawn are exactly the PNGs on disk. Returns their names."""
    import json

    import numpy as np

    from analysis.answer import answer_study
    from analysis.figures import figure_style, finish_figure
    from analysis.steps import FIGURES_DIR, MANIFEST, StudyTables, StudyTraits, steps_for

    tables = StudyTables.read(study_dir)
    answer = answer_study(tables.runs, study_dir.name)
    drawn = []
    with figure_style():
        for step in steps_for(StudyTraits.of(tables)):
            for name, figure in step.draw(tables, answer).items():
                if finish_figure(figure)[0] is not None:
                    continue
                drawn.append(name)
                panels = [ax for ax in figure.axes if ax.get_label() != "<colorbar>"]
                assert panels, name
                for ax in panels:
                    assert data_points(ax) > 0, f"{name}: panel {ax.get_title()!r} draws nothing"
                    assert ax.get_xlabel(), f"{name}: panel {ax.get_title()!r} has no x label"
                    for line in ax.get_lines():
                        assert not (np.size(line.get_xdata()) == 1 and line.get_linestyle() not in ("None", "")), \
                            f"{name}: a line through one point in panel {ax.get_title()!r}"
                assert any(ax.get_ylabel() for ax in panels), f"{name} has no y label"
    on_disk = sorted(path.stem for path in (study_dir / FIGURES_DIR).glob("*.png"))
    assert on_disk == sorted(drawn)
    manifest = json.loads((study_dir / FIGURES_DIR / MANIFEST).read_text())
    assert sorted(figure["name"] for figure in manifest["figures"] if figure["drawn"]) == sorted(drawn)
    return drawn
