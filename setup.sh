#!/usr/bin/env bash
# Create (or refresh) the project's environment in .venv at the repository root.
#
#   bash setup.sh            # idempotent: a second run with nothing changed takes seconds
#
# Versions come from pyproject.toml only. Horovod 0.28.1 is built from its PyPI source
# with PyTorch + Gloo and the C++17 change torch >= 2.1 needs, and with MPI too when
# an MPI compiler (mpicxx) is on PATH (launcher.controller: mpi; HOROVOD_WITH_MPI=0
# builds without). The wheel is cached in $SCALING_STUDY_CACHE (default
# ~/.cache/scaling-study) keyed by Horovod, torch and Python versions and MPI, so the
# ~4-8 minute build happens once per machine.
#
# Run as root on Debian/Ubuntu, it installs what the build needs with apt-get (g++,
# cmake, make, Open MPI). Elsewhere install them, or `module load` them on a cluster.
#
# On a GPU cluster pick a CUDA build of torch before running this script, e.g.
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash setup.sh
# and build Horovod with NCCL by exporting HOROVOD_GPU_OPERATIONS=NCCL.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$repo"
venv="$repo/.venv"
python_bin=${PYTHON:-python3}
cache_root=${SCALING_STUDY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/scaling-study}

log() { printf '[setup] %s\n' "$*" >&2; }

can_apt() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }

missing_build_tools() {  # what Horovod's build needs and this machine lacks
    local tool
    for tool in g++ cmake make; do command -v "$tool" >/dev/null || echo "$tool"; done
    "$python_bin" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || echo python3-dev
}

install_debian_packages() {  # as root on Debian/Ubuntu only; a no-op once all is there
    can_apt || return 0
    local packages
    mapfile -t packages < <(missing_build_tools)
    # Open MPI is optional: without it Horovod has Gloo only.
    if [ "${HOROVOD_WITH_MPI:-}" != 0 ] && ! command -v mpicxx >/dev/null; then
        packages+=(libopenmpi-dev openmpi-bin)
    fi
    [ ${#packages[@]} -gt 0 ] || return 0
    log "installing Debian packages: ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
}

require_build_tools() {
    local missing
    missing=$(missing_build_tools | tr '\n' ' ')
    [ -z "$missing" ] || { log "missing build tools: $missing(install them, or 'module load' them on a cluster)"; exit 1; }
}

with_mpi() { [ "${HOROVOD_WITH_MPI:-}" != 0 ] && command -v mpicxx >/dev/null; }

pin() {  # pin NAME -> the exact version pyproject.toml pins for NAME
    "$python_bin" - "$1" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name, _, version = dep.partition("==")
    if name.strip().lower() == sys.argv[1]:
        print(version.strip())
        break
else:
    sys.exit(f"pyproject.toml pins no {sys.argv[1]}")
PY
}

stamp_of_inputs() {  # a machine that gains or loses MPI gets the matching Horovod
    { cat pyproject.toml setup.sh; if with_mpi; then echo with-mpi; fi; } | sha256sum | cut -d' ' -f1
}

install_debian_packages  # before the stamp: whether Open MPI is there decides the build
stamp_file="$venv/.setup-stamp"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(stamp_of_inputs)" ] \
    && "$venv/bin/python" -c "import horovod.torch, snakemake, submitit" 2>/dev/null; then
    log "environment in .venv is up to date"
    exit 0
fi

require_build_tools
[ -x "$venv/bin/python" ] || { log "creating .venv"; "$python_bin" -m venv "$venv"; }
# Some machines' pip.conf names package folders that do not exist; pip warns once per
# package about each. Keep its real warnings and errors.
pip_quietly() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pip=(pip_quietly "$venv/bin/python" -m pip install --quiet --disable-pip-version-check)

torch_version=$(pin torch)
horovod_version=$(pin horovod)
py_tag=$("$venv/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')

log "installing torch==$torch_version and Horovod's build requirements"
torch_args=()
[ -n "${TORCH_INDEX_URL:-}" ] && torch_args=(--index-url "$TORCH_INDEX_URL")
"${pip[@]}" "${torch_args[@]}" "torch==$torch_version"
"${pip[@]}" setuptools wheel packaging "psutil==$(pin psutil)" "pyyaml==$(pin pyyaml)" "cloudpickle==$(pin cloudpickle)"

if with_mpi; then mpi_flag=HOROVOD_WITH_MPI=1; mpi_tag=-mpi; needed=(PyTorch Gloo MPI)
else mpi_flag=HOROVOD_WITHOUT_MPI=1; mpi_tag=""; needed=(PyTorch Gloo); fi
wheel_dir="$cache_root/wheels/horovod-$horovod_version-torch-$torch_version-$py_tag$mpi_tag"
if ! ls "$wheel_dir"/horovod-*.whl >/dev/null 2>&1; then
    log "building Horovod $horovod_version for torch $torch_version${mpi_tag:+ with MPI} (once per machine, ~4-8 minutes)"
    build_dir=$(mktemp -d)
    trap 'rm -rf "$build_dir"' EXIT
    pip_quietly "$venv/bin/python" -m pip download --quiet --no-deps --no-binary :all: \
        -d "$build_dir" "horovod==$horovod_version"
    tar -xzf "$build_dir"/horovod-*.tar.gz -C "$build_dir"
    src=$(echo "$build_dir"/horovod-"$horovod_version")
    # torch >= 2.1 headers need C++17; Horovod's upstream fix is merged but unreleased.
    sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/' \
        "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
    grep -q 'CMAKE_CXX_STANDARD 17' "$src/horovod/torch/CMakeLists.txt"
    mkdir -p "$wheel_dir.partial"
    env HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 "$mpi_flag" \
        HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
        "$venv/bin/python" -m pip wheel --no-build-isolation --no-deps \
        -w "$wheel_dir.partial" "$src" > "$build_dir/build.log" 2>&1 \
        || { tail -40 "$build_dir/build.log" >&2; log "Horovod build failed"; exit 1; }
    rm -rf "$wheel_dir"
    mv "$wheel_dir.partial" "$wheel_dir"  # the cache holds only finished wheels
    log "cached $(ls "$wheel_dir")"
fi
"${pip[@]}" --no-deps --force-reinstall "$wheel_dir"/horovod-*.whl

log "installing the project and its pinned dependencies"
"${pip[@]}" -e ".[test]"

build_report=$("$venv/bin/horovodrun" --check-build)
printf '%s\n' "$build_report" >&2
for feature in "${needed[@]}"; do
    grep -q "\[X\] $feature" <<< "$build_report" || { log "Horovod was built without $feature support"; exit 1; }
done

stamp_of_inputs > "$stamp_file"
log "done: the environment is in .venv"
