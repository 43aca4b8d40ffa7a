"""Download Fashion-MNIST's four IDX .gz files from Zalando's canonical URLs (login node only).

    python workflow/scripts/download_fashion_mnist.py --out data/fashion_mnist

or as a Snakemake `script:` whose output is the directory (or the four files in it).
Files already present and valid are skipped; each new file is checked (MD5 from the
fashion-mnist README, then parsed as IDX) before it is renamed into place.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.request
from pathlib import Path

try:
    from jobs.train.data import FASHION_MNIST_FILES, GZIP_SIGNATURE, IdxFormatError, idx_magic_for, read_idx
except ImportError:  # run from a checkout without the project installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jobs.train.data import FASHION_MNIST_FILES, GZIP_SIGNATURE, IdxFormatError, idx_magic_for, read_idx

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
EXPECTED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
assert set(EXPECTED_MD5) == set(FASHION_MNIST_FILES.values())
TIMEOUT_SECONDS = 60


# ----------------------------------------------------------------------------- verification (tested offline)

def idx_gzip_problem(path: Path) -> str | None:
    """Why `path` is not a gzipped IDX file of the kind its name says, or None if it is one."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            is_gzip = handle.read(2) == GZIP_SIGNATURE
        if not is_gzip:
            return f"{path}: not a gzip file"
        read_idx(path, idx_magic_for(path.name))
    except (OSError, IdxFormatError) as error:
        return str(error)
    return None


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def downloaded_file_problem(path: Path, file_name: str) -> str | None:
    """Why a freshly downloaded `path` is not Zalando's `file_name`, or None if it is."""
    actual_md5 = md5_of(path)
    if actual_md5 != EXPECTED_MD5[file_name]:
        return f"{file_name}: MD5 {actual_md5}, expected {EXPECTED_MD5[file_name]}"
    return idx_gzip_problem(path)


# ----------------------------------------------------------------------------- network (the only untested part)

def fetch(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(destination, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


# ----------------------------------------------------------------------------- driver

def download_fashion_mnist(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_name in FASHION_MNIST_FILES.values():
        target = out_dir / file_name
        if target.exists() and idx_gzip_problem(target) is None:
            print(f"{target}: present and valid, skipped", flush=True)
            continue
        url = BASE_URL + file_name
        print(f"{url} -> {target}", flush=True)
        partial = target.with_name(f".{file_name}.{os.getpid()}.partial")
        try:
            fetch(url, partial)
            problem = downloaded_file_problem(partial, file_name)
            if problem is not None:
                raise SystemExit(f"download of {url} is not valid: {problem}")
            os.replace(partial, target)  # atomic: readers see no file or the whole file
        finally:
            partial.unlink(missing_ok=True)
        print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, verified", flush=True)
    print(f"Fashion-MNIST ready in {out_dir}", flush=True)


def out_dir_from_snakemake(snakemake_object) -> Path:
    """The rule's output: a directory, or the four files (whose folder is then the directory)."""
    first_output = Path(snakemake_object.output[0])
    return first_output.parent if first_output.name in EXPECTED_MD5 else first_output


def main() -> None:
    if "snakemake" in globals():
        out_dir = out_dir_from_snakemake(snakemake)  # type: ignore[name-defined]  # noqa: F821
        if snakemake.log:  # type: ignore[name-defined]  # noqa: F821
            log_file = open(snakemake.log[0], "w")  # type: ignore[name-defined]  # noqa: F821, SIM115
            sys.stdout = sys.stderr = log_file
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--out", type=Path, required=True, help="directory for the four .gz files")
        out_dir = parser.parse_args().out
    download_fashion_mnist(out_dir)


if __name__ == "__main__" or "snakemake" in globals():
    main()
