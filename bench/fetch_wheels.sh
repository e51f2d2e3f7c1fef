#!/usr/bin/env bash
# Fetch the wheels the GPU machine lacks into bench/wheels/ (git-ignored), on a machine with network.
#
# The GPU machine has torch, triton, pytest, pytest-benchmark and transformers but no diffusers, and it
# cannot reach a package index. bench/gpu_suite.sh installs whatever lies in bench/wheels/ before it runs.
# Carry the folder with the call (device tool: carry ["bench/wheels"]).
#
# usage: bench/fetch_wheels.sh [DEST]      (PYTHON=/path/to/python to choose the pip; default python3)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
dest=${1:-bench/wheels}
python=${PYTHON:-python3}

# The diffusers version this checkout is developed against, when it is installed here.
diffusers_version=$("$python" -c 'import importlib.metadata as m; print(m.version("diffusers"))' 2>/dev/null || true)
# diffusers alone: the GPU image has its requirements (importlib_metadata, which it lacks, is only
# imported on Python < 3.8; the image runs 3.12).
packages=("diffusers${diffusers_version:+==$diffusers_version}")

# Pure-Python wheels: the tags below only keep pip from reading this machine's own interpreter.
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$dest" "${packages[@]}"
ls -l "$dest"
