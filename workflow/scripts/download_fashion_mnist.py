"""Download Fashion-MNIST's four IDX .gz files, from Zalando's site or a site mirror (login node only).

    snakemake download_fashion_mnist
    python workflow/scripts/download_fashion_mnist.py --out data/fashion_mnist [--url URL [--md5 FILE=MD5 ...]]

As the Snakemake `script:` of rule download_fashion_mnist, the output is the directory or the
four files in it. Files already present and valid (parsed as IDX) are skipped. Each new file is
checked, its MD5 first, then parsed as IDX, before it is renamed into place: a refused file never
lands in the data directory, and the run stops with one line naming the file and both MD5s.

Where from: Zalando's BASE_URL, unless config/config.yaml names a mirror (or, run by hand,
--url and --md5 do):

    fashion_mnist_mirror:
      url: https://mirror.example.org/fashion-mnist/   # serves <url>/train-images-idx3-ubyte.gz, ...
      md5:                                              # only when its files are not Zalando's bytes
        train-images-idx3-ubyte.gz: 8d4fb7e6c68d591d4c3dfef9ec88bf0d
        ...                                             # all four files, 32 hex digits each

A mirror's files must have Zalando's published MD5s (EXPECTED_MD5, from the fashion-mnist README)
unless `md5` lists the four MD5s of the mirror's own files, e.g. when it recompressed them. Any
URL urllib opens will do: http(s)://, ftp:// or file:// for a copy on a shared filesystem.
"""

import argparse
import hashlib
import os
import re
import sys
import urllib.request
from collections.abc import Mapping
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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
MIRROR_KEY = "fashion_mnist_mirror"
MD5_TEXT = re.compile(r"[0-9a-f]{32}")
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Source:
    """Where the four files come from, and the MD5 each must have."""

    base_url: str
    md5: Mapping[str, str]
    md5_origin: str

    def url(self, file_name: str) -> str:
        return self.base_url.rstrip("/") + "/" + file_name


ZALANDO = Source(BASE_URL, EXPECTED_MD5, "Zalando's published MD5")


def mirror_source(url: str, md5: Mapping[str, str] | None, md5_origin: str) -> Source:
    """A mirror at `url`; without `md5` it must serve Zalando's very files. SystemExit (one line) if the MD5s are bad."""
    if not url.strip():
        raise SystemExit(f"{MIRROR_KEY}.url is empty; give the URL under which the mirror serves the four .gz files")
    if md5 is None:
        return Source(url, EXPECTED_MD5, "Zalando's published MD5; a mirror serving other files must list their MD5s")
    missing, unknown = sorted(set(EXPECTED_MD5) - set(md5)), sorted(set(md5) - set(EXPECTED_MD5))
    if missing or unknown:
        raise SystemExit(f"{md5_origin}: missing {missing}, unknown {unknown}; list the MD5 of each of "
                         f"{', '.join(EXPECTED_MD5)}")
    normalised = {name: str(value).strip().lower() for name, value in md5.items()}
    for name, value in normalised.items():
        if not MD5_TEXT.fullmatch(value):
            raise SystemExit(f"{md5_origin}: {name} = {md5[name]!r} is not an MD5; write its 32 hex digits")
    return Source(url, normalised, md5_origin)


def source_from_config(config: Mapping[str, Any]) -> Source:
    """The source config/config.yaml names (its schema has checked the keys): Zalando unless a mirror is set."""
    mirror = config.get(MIRROR_KEY)
    if not mirror:
        return ZALANDO
    return mirror_source(mirror["url"], mirror.get("md5"), f"{MIRROR_KEY}.md5")


# ----------------------------------------------------------------------------- verification

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


def downloaded_file_problem(path: Path, file_name: str, source: Source = ZALANDO) -> str | None:
    """Why a freshly downloaded `path` is not the `file_name` that `source` promises, or None if it is."""
    actual_md5, expected_md5 = md5_of(path), source.md5[file_name]
    if actual_md5 != expected_md5:
        return f"{file_name}: MD5 {actual_md5}, expected {expected_md5} ({source.md5_origin})"
    return idx_gzip_problem(path)


# ----------------------------------------------------------------------------- network

def fetch(url: str, destination: Path) -> None:
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response, open(destination, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)


# ----------------------------------------------------------------------------- driver

def download_one(source: Source, file_name: str, target: Path) -> None:
    """Fetch next to `target`, verify, then rename: readers see no file or the whole, verified file."""
    url = source.url(file_name)
    print(f"{url} -> {target}", flush=True)
    partial = target.with_name(f".{file_name}.{os.getpid()}.partial")
    try:
        try:
            fetch(url, partial)
        except OSError as error:  # URLError and HTTPError are OSErrors
            raise SystemExit(f"download of {url} failed: {error}") from None
        problem = downloaded_file_problem(partial, file_name, source)
        if problem is not None:
            raise SystemExit(f"download of {url} is not valid, so it was not moved to {target}: {problem}")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, verified", flush=True)


def download_fashion_mnist(out_dir: Path, source: Source = ZALANDO) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for file_name in FASHION_MNIST_FILES.values():
        target = out_dir / file_name
        if target.exists() and idx_gzip_problem(target) is None:
            print(f"{target}: present and valid, skipped", flush=True)
            continue
        download_one(source, file_name, target)
    print(f"Fashion-MNIST ready in {out_dir}", flush=True)


# ----------------------------------------------------------------------------- entry points

def out_dir_from_snakemake(snakemake_object: Any) -> Path:
    """The rule's output: a directory, or the four files (whose folder is then the directory)."""
    first_output = Path(snakemake_object.output[0])
    return first_output.parent if first_output.name in EXPECTED_MD5 else first_output


class Tee:
    """Progress and the error go to the terminal and to the rule's log."""

    def __init__(self, *streams: TextIO) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run_under_snakemake(smk: Any) -> None:
    with open(smk.log[0], "w") as log_file, redirect_stdout(Tee(sys.stderr, log_file)):
        try:
            download_fashion_mnist(out_dir_from_snakemake(smk), source_from_config(smk.config))
        except SystemExit as error:
            print(error, flush=True)
            raise SystemExit(1) from None


def md5_argument(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: write FILE=MD5, e.g. t10k-labels-idx1-ubyte.gz=bb300c...")
    return name.strip(), value


def run_from_command_line() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the four .gz files")
    parser.add_argument("--url", help=f"a mirror serving the four files under this URL (default {BASE_URL})")
    parser.add_argument("--md5", type=md5_argument, action="append", metavar="FILE=MD5",
                        help="the MD5 of one of the mirror's files, given for all four when they are not Zalando's")
    args = parser.parse_args()
    if args.md5 and args.url is None:
        parser.error("--md5 needs --url: Zalando's files have their published MD5s")
    source = ZALANDO if args.url is None else mirror_source(args.url, dict(args.md5) if args.md5 else None, "--md5")
    download_fashion_mnist(args.out, source)


if __name__ == "__main__":
    # Snakemake runs a copy of this file as __main__ too, with `snakemake` defined above it.
    if "snakemake" in globals():
        run_under_snakemake(globals()["snakemake"])
    else:
        run_from_command_line()
