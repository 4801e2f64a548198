#!/usr/bin/env bash
# Everything a lent NVIDIA GPU can check, as one command that ends within 8 minutes (the device
# tool's image: PyTorch + CUDA, cuda-python, onnx, onnxruntime CPU; no TensorRT):
#
#   step         limit on a GPU  what
#   cuda-tests   150 s           the `cuda` tests: cuda-python buffers, streams, events, graphs;
#                                the TensorRT backend's CUDA runner with a stand-in engine doing
#                                real device work (tests/runtime/test_cuda_runner.py); torch CUDA
#   torch-bench  120 s           torch CUDA fp16 at 512x1024, batch 1 and 8, end to end, eager
#                                and CUDA graphs -> gpu_check.json
#   gpu-perf     180 s           benchmarks/gpu_perf.py: the device-time profile and the variants
#                                side by side -> gpu_perf.json (written after each variant);
#                                torch.compile variants only with GPU_COMPILE=1 (slow to compile)
#
# Each step runs under its own limit, and when it ends (passed, failed or killed) its exit
# status, seconds and limit are written to $OUT/gpu_check_steps.json at once, so a run killed
# at any point returns what it measured. The script exits 1 if a step failed.
#
#   bash benchmarks/gpu_check.sh              on the GPU, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run    any machine, no GPU: every step's code path at a
#                                             tiny size on the CPU, same JSON (CI runs it)
# OUT: where results go (default benchmarks/results; a temporary folder for --dry-run).
set -uo pipefail
cd "$(dirname "$0")/.."
dry=0
[ "${1:-}" = "--dry-run" ] && dry=1
if [ "$dry" = 1 ]; then
    out=${OUT:-$(mktemp -d)}
else
    out=${OUT:-benchmarks/results}
fi
mkdir -p "$out"
python=${PYTHON:-$(command -v python3 || command -v python)}
if ! "$python" -c "import ssr_deploy" 2>/dev/null; then
    "$python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
        || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
         2>/dev/null | head -1)
device=${device:-none found by nvidia-smi}
echo "device: $device (dry run: $dry)"
steps_json="$out/gpu_check_steps.json"
failed=0

record() {  # record NAME RC SECONDS LIMIT: add the step to the JSON, now
    "$python" - "$steps_json" "$device" "$dry" "$@" <<'PY'
import json, os, sys
path, device, dry, name, rc, seconds, limit = sys.argv[1:]
try:
    doc = json.load(open(path))
except (OSError, ValueError):
    doc = {}
if not isinstance(doc.get("steps"), list):
    doc = {"device": device, "dry_run": dry == "1", "steps": []}
doc["steps"] = [s for s in doc["steps"] if s["name"] != name] + [
    {"name": name, "rc": int(rc), "seconds": int(seconds), "limit_s": int(limit),
     "timed_out": int(rc) in (124, 137)}]
tmp = path + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
os.replace(tmp, path)
PY
}

step() {  # step NAME LIMIT_ON_GPU COMMAND...: run it under its limit, record it, go on
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    local budget=$limit
    [ "$dry" = 1 ] && budget=$((limit * 3))  # a 2-core CPU at a tiny size: slower, not longer
    timeout --kill-after=10 "$budget" bash -c "$*"
    local rc=$?
    echo "== $name: exit $rc in $((SECONDS - started)) s (limit $limit s on a GPU)"
    record "$name" "$rc" "$((SECONDS - started))" "$limit"
    [ "$rc" = 0 ] || failed=1
}

cuda_tests() {
    if [ "$dry" = 1 ]; then  # no GPU: the tests collect, and the stand-in engine is checked
        "$python" -m pytest -q -p no:cacheprovider --collect-only -m cuda tests/runtime \
            tests/backends >"$out/gpu_check_tests.txt" 2>&1 || return 1
        "$python" -m pytest -q -p no:cacheprovider \
            tests/runtime/test_cuda_runner.py::test_the_standin_matches_its_sidecar \
            2>&1 | tee -a "$out/gpu_check_tests.txt" | tail -3
        return "${PIPESTATUS[0]}"
    fi
    "$python" -m pytest -q -p no:cacheprovider -m cuda tests/runtime tests/backends 2>&1 \
        | tee "$out/gpu_check_tests.txt" | tail -15
    return "${PIPESTATUS[0]}"
}

torch_bench() {
    DRY=$dry "$python" - "$out/gpu_check.json" <<'PY'
import json, os, pathlib, sys, tempfile

import torch

from ssr_deploy import build_model, save_checkpoint
from ssr_deploy.io import atomic_write_text
from ssr_deploy.runtime import bench
from ssr_deploy.runtime.segmenter import Segmenter

dry = os.environ["DRY"] == "1"
cuda = torch.cuda.is_available() and not dry
size, batches, iters = ((64, 128), [1], 3) if dry else ((512, 1024), [1, 8], 100)
device = "cuda" if cuda else "cpu"
with tempfile.TemporaryDirectory() as tmp:
    net = build_model("ssr-cityscapes").eval()
    ckpt = save_checkpoint(pathlib.Path(tmp) / "m.pt", net, net.genotype)
    entries = [("torch-cuda-fp16", Segmenter.load(ckpt, device=device, size=size, fp16=cuda))]
    if cuda:
        entries.append(("torch-cuda-fp16-graphs", Segmenter.load(
            ckpt, device=device, size=size, fp16=True, cuda_graphs=True)))
    results = bench.run(entries, batches, iters, 2 if dry else 20)
    print(bench.format_results(results))
    report = bench.report(results, bench.machine_info())
    report["device"] = torch.cuda.get_device_name(0) if cuda else "cpu (dry run)"
    report["dry_run"] = dry
    report["note"] = ("end to end: uint8 frames in, labels out, host<->device copies included")
    atomic_write_text(sys.argv[1], json.dumps(report, indent=1, default=str) + "\n")
    print("wrote", sys.argv[1])
PY
}

gpu_perf() {
    local args=(--out "$out/gpu_perf.json" --budget 160)
    [ "${GPU_COMPILE:-0}" = 1 ] || args+=(--no-compile)
    [ "$dry" = 1 ] && args+=(--dry-run)
    "$python" benchmarks/gpu_perf.py "${args[@]}" 2>&1 | grep -v '^USDT' | tail -40
    return "${PIPESTATUS[0]}"
}

export python out dry
export -f cuda_tests torch_bench gpu_perf
rm -f "$steps_json"
step cuda-tests 150 cuda_tests
step torch-bench 120 torch_bench
step gpu-perf 180 gpu_perf
"$python" - "$steps_json" <<'PY'
import json, os, sys
doc = json.load(open(sys.argv[1]))
doc["ended"] = True
json.dump(doc, open(sys.argv[1] + ".tmp", "w"), indent=1)
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
print(json.dumps(doc))
PY
exit "$failed"
