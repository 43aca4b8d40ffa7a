"""Versions are pinned once, in pyproject.toml; environment.yml must name the same ones."""

from __future__ import annotations

import re

import tomllib
import yaml
from conftest import REPO


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = {}
    for requirement in requirements:
        name, separator, version = requirement.partition("==")
        assert separator, f"pyproject.toml: {requirement!r} is not pinned with =="
        pins[name.strip().lower()] = version.strip()
    return pins


def environment_pins() -> dict[str, str]:
    text = (REPO / "environment.yml").read_text()
    pip_section = next(d for d in yaml.safe_load(text)["dependencies"] if isinstance(d, dict))["pip"]
    pins = dict(entry.lower().split("==") for entry in pip_section)
    # Horovod is built by setup.sh; environment.yml names its version in a comment.
    built = re.search(r"#\s*horovod==(\S+) is built from source by setup.sh", text)
    assert built, "environment.yml must say which horovod setup.sh builds"
    pins["horovod"] = built.group(1)
    return pins


def test_environment_yml_mirrors_pyproject_pins():
    assert environment_pins() == pyproject_pins()


def test_setup_reads_torch_and_horovod_versions_from_pyproject():
    setup = (REPO / "setup.sh").read_text()
    assert "pin torch" in setup and "pin horovod" in setup
    assert not re.search(r"torch==\d", setup) and not re.search(r"horovod==\d", setup)
