#!/usr/bin/env bash
# Set up and run the suite, as CI does (.ci/run calls this): a virtual environment in .venv
# (made if absent, reused otherwise), the CPU build of torch, every extra the tests use and
# Triton's server binary, the C++ build tools where missing; then ruff, hadolint, the
# documentation site (mkdocs --strict) and the tests. Extra arguments go to pytest.
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
python -m pip install --quiet -e '.[train,cpu,video,rtx,openvino,dev,serve,qat,docs]'
# Triton's server binary for the serving tests (its Python layer and dependencies unused)
python -m pip install --quiet --no-deps nvidia-pytriton==0.7.0

# the C++ runtime's build (tests/cpp): cmake, g++, OpenSSL and nlohmann-json, installed with
# the system's package manager where missing (as root, with apt-get; else its tests say why)
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
[ -f /usr/include/nlohmann/json.hpp ] || missing+=(nlohmann-json3-dev)
[ -f /usr/include/openssl/evp.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 \
             && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; } \
        || echo "note: could not install ${missing[*]}: the C++ tests will say why they skip"
fi

ruff check .
hadolint docker/Dockerfile docker/Dockerfile.cpu   # no Docker engine needed: lint only
# the documentation site: every page built, every internal link and anchor resolved
python -m mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
python -m pytest -q -n 2 -m "not cuda and not tensorrt" "$@"
