#!/usr/bin/env bash
# Set up and run the suite, as CI does (.ci/run calls this): a virtual environment in .venv
# (made if absent, reused otherwise), the CPU build of torch, every extra the tests use and
# Triton's server binary; then ruff, hadolint and the tests. Extra arguments go to pytest.
#   bash scripts/test.sh                       the suite CI runs
#   bash scripts/test.sh tests/runtime -x      a part of it
#   TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128' bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first (the CPU build by default): an unpinned torch would pull a CUDA build
# shellcheck disable=SC2086  # TORCH may carry pip options
python -m pip install --quiet ${TORCH:-torch==2.13.0}
python -m pip install --quiet -e '.[train,cpu,rtx,openvino,dev,serve,qat]'
# Triton's server binary for the serving tests (its Python layer and dependencies unused)
python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0

ruff check .
hadolint docker/Dockerfile docker/Dockerfile.cpu   # no Docker engine needed: lint only
python -m pytest -q -n 2 -m "not cuda and not tensorrt" "$@"
