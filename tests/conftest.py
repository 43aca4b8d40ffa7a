"""Shared helpers: run the real workflow in a scratch directory with a given config."""

from __future__ import annotations

import copy
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


def run_snakemake(workdir: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
         "--profile", str(REPO / "profiles" / "default"), *args],
        capture_output=True, text=True, timeout=timeout, cwd=workdir,
    )


@pytest.fixture
def config() -> dict[str, Any]:
    return copy.deepcopy(default_config())
