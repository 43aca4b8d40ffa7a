"""Ready-made studies, one YAML file each in config/studies/, run by name.

    snakemake --config study=lab1_gd_vs_sgd              # its small size: minutes on 2 cores
    snakemake --config study=lab1_gd_vs_sgd size=full    # the course's size, for a cluster
    scaling-studies                                      # lists them with their descriptions

A study file holds what a study under `studies:` in config/config.yaml holds
(`description`, `grid`, `fixed`, `scaling`, `time_budget_s`), at its small size, plus
`full:` with what differs at the course's full size: `grid` axes and `fixed` values
replace the small size's one by one, any other key replaces it whole. Naming a study replaces the
studies of config/config.yaml for that run: exactly the named study runs, and its results go
to results/<name>/ (results/<name>_full/ at the full size, so neither size overwrites
the other). Files in the working directory's config/studies/ come before the shipped ones
of the same name.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.plan.config import ConfigError, closest

SHIPPED_STUDIES_DIR = Path(__file__).resolve().parents[2] / "config" / "studies"
STUDIES_SUBDIR = Path("config") / "studies"
SIZES = ("small", "full")
STUDY_KEY, SIZE_KEY = "study", "size"


@dataclass(frozen=True)
class NamedStudy:
    name: str
    path: Path
    spec: dict[str, Any]

    @property
    def description(self) -> str:
        return " ".join(str(self.spec.get("description", "")).split())

    def at_size(self, size: str) -> dict[str, Any]:
        """The study as config/config.yaml would hold it, at `size` (small, or full with its overrides)."""
        study = {key: value for key, value in self.spec.items() if key != "full"}
        if size == "full":
            full = self.spec.get("full") or {}
            study.update({key: value for key, value in full.items() if key not in ("grid", "fixed")})
            full_grid, full_fixed = full.get("grid") or {}, full.get("fixed") or {}
            # A parameter the full size moves between grid and fixed leaves the other.
            study["grid"] = {**{key: value for key, value in study.get("grid", {}).items() if key not in full_fixed},
                             **full_grid}
            study["fixed"] = {**{key: value for key, value in study.get("fixed", {}).items() if key not in full_grid},
                              **full_fixed}
        return study

    def result_name(self, size: str) -> str:
        return self.name if size == "small" else f"{self.name}_{size}"


def study_dirs(root: Path) -> list[Path]:
    """Where studies are looked up: the working directory's config/studies/, then the shipped one."""
    own = root / STUDIES_SUBDIR
    dirs = [own] if own.resolve() == SHIPPED_STUDIES_DIR else [own, SHIPPED_STUDIES_DIR]
    return [directory for directory in dirs if directory.is_dir()]


def available_studies(root: Path = Path(".")) -> dict[str, NamedStudy]:
    found: dict[str, NamedStudy] = {}
    for directory in study_dirs(root):
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in found:
                continue
            try:
                spec = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ConfigError(f"config error: {path}: not valid YAML ({str(error).splitlines()[0]})") from None
            if not isinstance(spec, dict):
                raise ConfigError(f"config error: {path}: a study file holds a mapping with description, grid, "
                                  "fixed and full")
            found[path.stem] = NamedStudy(path.stem, path, spec)
    return found


def select_named_study(config: dict[str, Any], root: Path = Path(".")) -> dict[str, Any]:
    """`config` with its studies replaced by the one named by `study=` (at `size=`), if any.
    ConfigError, in one line, for an unknown name or size."""
    name, size = config.get(STUDY_KEY), config.get(SIZE_KEY)
    rest = {key: value for key, value in config.items() if key not in (STUDY_KEY, SIZE_KEY)}
    if name is None:
        if size is not None:
            raise ConfigError(f"config error: size = {size!r} without study=NAME; size picks the size of a "
                              "named study (scaling-studies lists them)")
        return config
    size = "small" if size is None else str(size)
    if size not in SIZES:
        raise ConfigError(f"config error: size = {size!r}: must be one of {', '.join(SIZES)}")
    studies = available_studies(root)
    if str(name) not in studies:
        raise ConfigError(f"config error: study = {name!r} is not a study in {' or '.join(map(str, study_dirs(root)))}"
                          f"{closest(str(name), studies)}; allowed: {', '.join(sorted(studies)) or 'none'}")
    study = studies[str(name)]
    return {**rest, "studies": {study.result_name(size): study.at_size(size)}}


def cells_at(study: NamedStudy, size: str) -> int:
    return math.prod(len(values) if isinstance(values, list) else 1  # not yet checked by the schema
                     for values in study.at_size(size).get("grid", {}).values())


def main(argv: list[str] | None = None) -> None:
    """`scaling-studies`: the ready-made studies, with their sizes and how to run each."""
    parser = argparse.ArgumentParser(description="List the studies that `snakemake --config study=NAME` runs.")
    parser.add_argument("--root", type=Path, default=Path("."), help="the working directory (default: .)")
    args = parser.parse_args(argv)
    try:
        studies = available_studies(args.root)
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    for study in studies.values():
        print(f"{study.name}  ({cells_at(study, 'small')} cells; full size: {cells_at(study, 'full')} cells)")
        print(f"    {study.description}")
        print(f"    snakemake --config study={study.name}        # full size: add size=full\n")
