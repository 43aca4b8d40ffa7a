"""The documents stay a house a newcomer can enter: a short README, links and paths that lead somewhere,
and a CI that runs the test command README shows."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import REPO

DOCS = [REPO / "README.md", REPO / "config" / "README.md", REPO / "benchmarks" / "README.md",
        REPO / "tests" / "cluster" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"(?<![\w./<>*-])(?:[\w.-]+/)+[\w.-]+\.(?:py|smk|sh|yaml|md)\b")
# Outputs, and the user's example package of docs/your_model.md: paths a user makes.
NOT_IN_REPOSITORY = ("results/", "data/", "code/")


def prose(doc: Path) -> str:
    """The document without its fenced code blocks (commands and sample output, not links)."""
    return FENCE.sub("", doc.read_text())


def relative_links(text: str) -> list[str]:
    """Every link target that is a path in this repository, its anchor dropped."""
    targets = (target.partition("#")[0] for target in LINK.findall(text))
    return [target for target in targets if target and not re.match(r"[a-z]+:", target)]


def repository_paths(text: str) -> list[str]:
    """Backticked paths to files, e.g. `jobs/train/job.py`, leaving out placeholders and outputs."""
    spans = [span for span in CODE.findall(text) if not any(mark in span for mark in "<*{$")]
    return [path for span in spans for path in REPO_PATH.findall(span) if not path.startswith(NOT_IN_REPOSITORY)]


def readme_test_command() -> str:
    """The line of README's "Two commands" block that runs the tests."""
    section = REPO.joinpath("README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert block, "README's 'Two commands' section has no bash block"
    lines = [line for line in block.group(1).splitlines() if "pytest" in line and not line.startswith("#")]
    assert len(lines) == 1, f"README's 'Two commands' should have one test command, found {lines}"
    return lines[0].strip()


def test_readme_is_short():
    lines = len(REPO.joinpath("README.md").read_text().splitlines())
    assert lines <= 150, f"README.md has {lines} lines; move detail into docs/ (at most 150)"


def test_relative_links_lead_to_existing_files():
    broken = [f"{doc.relative_to(REPO)}: {target}" for doc in DOCS for target in relative_links(prose(doc))
              if not (doc.parent / target).exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_backticked_repository_paths_exist():
    missing = [f"{doc.relative_to(REPO)}: {path}" for doc in DOCS for path in repository_paths(prose(doc))
               if not (REPO / path).exists()]
    assert not missing, "paths named in the documents that do not exist:\n" + "\n".join(missing)


def test_ci_runs_the_readme_test_command():
    command = readme_test_command()
    ci = [line.strip() for line in REPO.joinpath(".ci", "run").read_text().splitlines()]
    assert command in ci, f".ci/run must run README's test command {command!r}"


def test_the_checks_catch_what_they_look_for():
    text = "See [the map](docs/nowhere.md#top), [a site](https://example.org) and `jobs/nowhere.py`, " \
           "not `results/<study>/runs.csv`, `workflow/rules/*.smk` or `data/fashion_mnist/x.sh`."
    assert relative_links(text) == ["docs/nowhere.md"]
    assert repository_paths(text) == ["jobs/nowhere.py"]
    assert not (REPO / "docs" / "nowhere.md").exists() and not (REPO / "jobs" / "nowhere.py").exists()


EXAMPLE_FILE = re.compile(r"^`((?:code|config)/[\w./]+)`:\n\n```\w*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_own_model_example_plans_as_written(tmp_path):
    """docs/your_model.md's package and config, written out as the page shows them, make a plan
    that imports the user's functions: the example a user copies is one that works."""
    import yaml

    from jobs.plan.grid import make_plan

    files = EXAMPLE_FILE.findall(REPO.joinpath("docs", "your_model.md").read_text())
    assert {path for path, _ in files} == {"code/mypkg/__init__.py", "code/mypkg/models.py", "code/mypkg/data.py",
                                           "config/config.yaml"}
    for path, text in files:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    plan = make_plan(yaml.safe_load((tmp_path / "config/config.yaml").read_text()), root=tmp_path,
                     warn=lambda message: None)
    assert plan.user_code() == {"mypkg.models:mlp", "mypkg.data:clusters"}
    assert len(plan.studies["mine"].cells) == 6
