#!/usr/bin/env bash
# The GPU checks, as one script of at most 8 minutes on a lent NVIDIA GPU (the device tool's
# image: PyTorch + CUDA, cuda-python, onnx, onnxruntime CPU; no TensorRT):
#   1. the tests marked `cuda` (cuda-python buffers, streams, events, graphs; torch CUDA FP16);
#   2. torch CUDA fp16 at 512x1024, batch 1 and 8: end to end and compute only (CUDA events)
#      -> benchmarks/results/gpu_check.json, with the device name;
#   3. benchmarks/gpu_perf.py: the torch.profiler device-time profile and the variants side
#      by side -> benchmarks/results/gpu_perf.json (GPU_PERF=0 skips it; ONLY_PERF=1 runs
#      it alone: the three together exceed one 10-minute device command).
# TensorRT is not on that image: the `tensorrt` tests need a machine with TensorRT >= 10.3.
# A step that fails is recorded and the next one still runs: every step's exit status and the
# device go to $OUT/gpu_check_steps.json, and the script exits 1 if any step failed.
#   bash benchmarks/gpu_check.sh            (from the repository root)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
python=${PYTHON:-$(command -v python3 || command -v python)}
"$python" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
    || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
         2>/dev/null | head -1)
device=${device:-none found by nvidia-smi}
echo "$device"
steps=()
failed=0
step() {  # step NAME COMMAND...: run it, keep its status, go on
    local name=$1
    shift
    "$@"
    local rc=$?
    echo "== $name: exit $rc"
    steps+=("\"$name\": $rc")
    [ "$rc" = 0 ] || failed=1
}
cuda_tests() {
    timeout 300 "$python" -m pytest -q -m cuda -p no:cacheprovider tests/runtime 2>&1 \
        | tee "$out/gpu_check_tests.txt" | tail -15
}
torch_bench() {
timeout 180 "$python" - "$out/gpu_check.json" <<'PY'
import json, sys
import torch
from ssr_deploy import build_model, save_checkpoint
from ssr_deploy.runtime import bench
from ssr_deploy.runtime.segmenter import Segmenter
import tempfile, pathlib

size = (512, 1024)
with tempfile.TemporaryDirectory() as tmp:
    net = build_model("ssr-cityscapes").eval()
    ckpt = save_checkpoint(pathlib.Path(tmp) / "m.pt", net, net.genotype)
    entries = [("torch-cuda-fp16", Segmenter.load(ckpt, device="cuda", size=size, fp16=True)),
               ("torch-cuda-fp16-graphs", Segmenter.load(ckpt, device="cuda", size=size,
                                                         fp16=True, cuda_graphs=True))]
    results = bench.run(entries, [1, 8], 100, 20)
    print(bench.format_results(results))
    report = bench.report(results, bench.machine_info())
    report["device"] = torch.cuda.get_device_name(0)
    report["note"] = ("end to end: uint8 frames in, labels out, host<->device copies included; "
                      "compute only: CUDA events around the forward pass")
    json.dump(report, open(sys.argv[1], "w"), indent=1, default=str)
    print("wrote", sys.argv[1])
PY
}
gpu_perf() {
    timeout 480 "$python" benchmarks/gpu_perf.py --out "$out/gpu_perf.json" 2>&1 \
        | grep -v '^USDT' | tail -40
}
if [ "${ONLY_PERF:-0}" != 1 ]; then
    step cuda-tests cuda_tests
    step torch-bench torch_bench
fi
if [ "${GPU_PERF:-1}" != 0 ]; then
    step gpu-perf gpu_perf
fi
summary=$(IFS=,; echo "${steps[*]}")
printf '{"device": "%s", "steps": {%s}}\n' "${device//\"/}" "$summary" \
    > "$out/gpu_check_steps.json"
cat "$out/gpu_check_steps.json"
exit "$failed"
