"""`snakemake download_fashion_mnist` from a site mirror: a real HTTP server on 127.0.0.1 serving
IDX .gz files, the real rule and script. Files with the MD5 the config promises are put in
data/fashion_mnist/; any other file is refused with one line and never put there."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, default_config, run_snakemake, write_config
from test_data import fake_fashion_mnist

from jobs.train.data import FASHION_MNIST_FILES

NAMES = list(FASHION_MNIST_FILES.values())  # the order the script fetches them in
SCRIPT = REPO / "workflow" / "scripts" / "download_fashion_mnist.py"
ZALANDO_TRAIN_IMAGES_MD5 = "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
# urllib would send 127.0.0.1 through a proxy set in the environment.
LOCAL_ENV = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"}


@dataclass
class Mirror:
    url: str  # no trailing slash: the script must add the one before the file name
    files: Path
    requested: list[str] = field(default_factory=list)

    def md5(self) -> dict[str, str]:
        return {name: hashlib.md5((self.files / name).read_bytes()).hexdigest() for name in NAMES}

    def fetched(self) -> list[str]:
        return [path.rsplit("/", 1)[-1] for path in self.requested]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    """Fake Fashion-MNIST .gz files served under /fashion-mnist/, recording each GET."""
    root = tmp_path / "mirror"
    fake_fashion_mnist(root / "fashion-mnist")
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Mirror(f"http://127.0.0.1:{server.server_port}/fashion-mnist", root / "fashion-mnist", requested)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def workdir_with_mirror(tmp_path: Path, mirror_setting: dict[str, Any]) -> Path:
    workdir = tmp_path / "work"
    config = default_config()
    config["fashion_mnist_mirror"] = mirror_setting
    write_config(workdir, config)
    return workdir


def download_rule(workdir: Path) -> subprocess.CompletedProcess[str]:
    return run_snakemake(workdir, "download_fashion_mnist", env=LOCAL_ENV, timeout=300)


def data_files(workdir: Path) -> list[str]:
    """Everything in data/fashion_mnist/, hidden partial downloads included."""
    directory = workdir / "data" / "fashion_mnist"
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


# ----------------------------------------------------------------------------- through the rule

def test_rule_takes_the_mirrors_files_when_their_md5s_are_configured(tmp_path: Path, mirror: Mirror) -> None:
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url, "md5": mirror.md5()})
    result = download_rule(workdir)
    assert result.returncode == 0, result.stderr
    assert mirror.requested == [f"/fashion-mnist/{name}" for name in NAMES]
    assert data_files(workdir) == sorted(NAMES)
    for name in NAMES:
        assert (workdir / "data" / "fashion_mnist" / name).read_bytes() == (mirror.files / name).read_bytes()
    log = (workdir / "results" / "logs" / "download_fashion_mnist.log").read_text()
    assert len(lines_with(log, "verified")) == 4 and "Fashion-MNIST ready" in log


def test_rule_refuses_mirror_files_that_lack_zalandos_md5(tmp_path: Path, mirror: Mirror) -> None:
    """With only a URL, the mirror must serve Zalando's very files: the fake ones are refused."""
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url})
    result = download_rule(workdir)
    assert result.returncode != 0
    actual = mirror.md5()["train-images-idx3-ubyte.gz"]
    [error] = lines_with(result.stderr, "is not valid")
    assert error == (f"download of {mirror.url}/train-images-idx3-ubyte.gz is not valid, so it was not moved to "
                     f"data/fashion_mnist/train-images-idx3-ubyte.gz: train-images-idx3-ubyte.gz: MD5 {actual}, "
                     f"expected {ZALANDO_TRAIN_IMAGES_MD5} (Zalando's published MD5; a mirror serving other files "
                     "must list their MD5s)")
    assert error in (workdir / "results" / "logs" / "download_fashion_mnist.log").read_text()
    assert mirror.fetched() == ["train-images-idx3-ubyte.gz"]  # it stops at the first refused file
    assert data_files(workdir) == []


def test_rule_refuses_the_one_file_whose_md5_differs_from_the_configured_one(tmp_path: Path, mirror: Mirror) -> None:
    md5 = mirror.md5()
    md5["t10k-images-idx3-ubyte.gz"] = md5["t10k-labels-idx1-ubyte.gz"]
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url, "md5": md5})
    result = download_rule(workdir)
    assert result.returncode != 0
    [error] = lines_with(result.stderr, "is not valid")
    assert f"t10k-images-idx3-ubyte.gz: MD5 {mirror.md5()['t10k-images-idx3-ubyte.gz']}, " in error
    assert f"expected {md5['t10k-labels-idx1-ubyte.gz']} (fashion_mnist_mirror.md5)" in error
    assert mirror.fetched() == NAMES[:3]
    # No partial download left; Snakemake removes the failed job's two verified files too
    # (test_script_puts_only_verified_files_in_place... sees them without Snakemake).
    assert data_files(workdir) == []


def test_rule_keeps_present_valid_files_and_fetches_only_the_missing_one(tmp_path: Path, mirror: Mirror) -> None:
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url, "md5": mirror.md5()})
    present = workdir / "data" / "fashion_mnist"
    present.mkdir(parents=True)
    for name in NAMES[:3]:
        shutil.copy2(mirror.files / name, present / name)
    inodes = {name: (present / name).stat().st_ino for name in NAMES[:3]}
    result = download_rule(workdir)
    assert result.returncode == 0, result.stderr
    assert mirror.fetched() == [NAMES[3]]
    assert {name: (present / name).stat().st_ino for name in NAMES[:3]} == inodes  # kept, not replaced
    assert data_files(workdir) == sorted(NAMES)


def test_md5_that_is_not_hex_is_refused_before_any_download(tmp_path: Path, mirror: Mirror) -> None:
    md5 = {**mirror.md5(), "t10k-labels-idx1-ubyte.gz": "bb300cfd-not-an-md5"}
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url, "md5": md5})
    result = download_rule(workdir)
    assert result.returncode != 0
    assert lines_with(result.stderr, "is not an MD5") == [
        "fashion_mnist_mirror.md5: t10k-labels-idx1-ubyte.gz = 'bb300cfd-not-an-md5' is not an MD5; "
        "write its 32 hex digits"]
    assert mirror.requested == []


def test_md5s_must_name_all_four_files(tmp_path: Path, mirror: Mirror) -> None:
    md5 = mirror.md5()
    del md5["t10k-labels-idx1-ubyte.gz"]
    workdir = workdir_with_mirror(tmp_path, {"url": mirror.url, "md5": md5})
    result = run_snakemake(workdir, "-n", "download_fashion_mnist", timeout=120)
    assert result.returncode != 0
    assert lines_with(result.stderr, "config error") == [
        "config error: fashion_mnist_mirror.md5: missing 't10k-labels-idx1-ubyte.gz'; it needs "
        + ", ".join(NAMES)]


# ----------------------------------------------------------------------------- the script by hand

def run_script(out: Path, mirror: Mirror, md5: dict[str, str]) -> subprocess.CompletedProcess[str]:
    md5_args = [arg for name, value in md5.items() for arg in ("--md5", f"{name}={value}")]
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--url", mirror.url, *md5_args],
                          capture_output=True, text=True, timeout=120, env=LOCAL_ENV)


def test_script_puts_only_verified_files_in_place_then_fetches_just_the_rest(tmp_path: Path, mirror: Mirror) -> None:
    """Outside Snakemake, which would delete a failed job's outputs: what lands in --out is what the script verified."""
    out = tmp_path / "fashion_mnist"
    wrong = {**mirror.md5(), "t10k-images-idx3-ubyte.gz": "0" * 32}
    refused = run_script(out, mirror, wrong)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"download of {mirror.url}/t10k-images-idx3-ubyte.gz is not valid, so it was not moved to "
        f"{out}/t10k-images-idx3-ubyte.gz: t10k-images-idx3-ubyte.gz: MD5 {mirror.md5()['t10k-images-idx3-ubyte.gz']}, "
        f"expected {'0' * 32} (--md5)"]
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES[:2])

    mirror.requested.clear()
    accepted = run_script(out, mirror, mirror.md5())
    assert accepted.returncode == 0, accepted.stderr
    assert mirror.fetched() == NAMES[2:]
    assert len(lines_with(accepted.stdout, "present and valid, skipped")) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES)
