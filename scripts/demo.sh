#!/usr/bin/env bash
# Set up and run the demo: a virtual environment in .venv (made if absent, reused
# otherwise), the CPU build of torch and the extras the demo uses; then `ssr-deploy demo`
# (synthetic scenes -> search -> retraining -> verified ONNX, fp16/int8 and OpenVINO IRs ->
# every CPU path timed -> the video segmented -> a TensorRT-RTX engine -> report.md) and
# the report. Minutes on a 2-core CPU (3 to over 8).
#   bash scripts/demo.sh                 into ssr-demo/
#   bash scripts/demo.sh runs/demo --quick
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-ssr-demo}
shift $(( $# > 0 ? 1 : 0 ))

[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip 2>/dev/null
# shellcheck disable=SC2086  # TORCH may carry pip options
python -m pip install --quiet ${TORCH:-torch==2.13.0}
# the project itself, built from this clone (not editable: nothing in the first screen but
# the demo's own progress)
python -m pip install --quiet --disable-pip-version-check '.[train,cpu,video,openvino,rtx]' \
    2> >(grep -v -e '^WARNING: Location' -e '^$' >&2)

ssr-deploy demo --out "$out" "$@"
cat "$out/report.md"
