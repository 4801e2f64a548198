"""The C++ runtime against the Python Segmenter on the same IR and frame, batch 1 at the
model's size (512x1024 by default), in interleaved rounds in one run; each beside OpenVINO's
own infer on the same IR compiled alike (the floor: what the runtime adds is the gap).

    python benchmarks/cpp_runtime.py --ir model-int8.xml [--rounds 5 --iters 10]
    python benchmarks/cpp_runtime.py          # the paper's network, random weights, fp32 IR

Builds cpp/ (Release) into benchmarks/.cpp-build. Goal (issue 46): the C++ Segmenter within
2% of OpenVINO's own infer time; Python's overhead reported. Writes
benchmarks/results/cpp_runtime.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy.data.synthetic import street_frames  # noqa: E402
from ssr_deploy.io import atomic_write_text  # noqa: E402
from ssr_deploy.runtime.bench import machine_info  # noqa: E402
from ssr_deploy.runtime.segmenter import Segmenter  # noqa: E402


def build(folder: Path) -> tuple[Path, float]:
    import openvino.utils

    start = time.perf_counter()
    subprocess.run(["cmake", "-S", str(ROOT / "cpp"), "-B", str(folder),
                    "-DCMAKE_BUILD_TYPE=Release", "-DSSR_DEPLOY_EXAMPLES=OFF",
                    f"-DOpenVINO_DIR={openvino.utils.get_cmake_path()}"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(folder), "-j2"], check=True, stdout=subprocess.DEVNULL)
    return folder / "ssr_deploy_api_test", time.perf_counter() - start


def paper_ir(folder: Path) -> Path:
    from ssr_deploy import build_model
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.export.openvino import IROptions, export_openvino
    from ssr_deploy.spec import RUNTIME_IO

    onnx = export_onnx(build_model("ssr-cityscapes").eval(), folder / "ssr.onnx",
                       size=(512, 1024), io=RUNTIME_IO).path
    return export_openvino(onnx, folder / "ssr.xml", IROptions("fp32")).path


def python_round(seg: Segmenter, request, frame: np.ndarray, iters: int) -> tuple[list, list]:
    ours, raw = [], []
    batch = frame[None]
    for _ in range(iters):
        start = time.perf_counter()
        seg(frame)
        ours.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        request.infer({0: batch})
        raw.append((time.perf_counter() - start) * 1e3)
    return ours, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", help="An IR exported by `ssr-deploy export openvino`.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "cpp_runtime.json"))
    args = parser.parse_args()
    program, build_seconds = build(ROOT / "benchmarks" / ".cpp-build")
    with tempfile.TemporaryDirectory() as tmp:
        ir = Path(args.ir) if args.ir else paper_ir(Path(tmp))
        seg = Segmenter.load(ir)
        h, w = seg.size
        frame = street_frames(1, h, w, seed=0)[0]
        frames = Path(tmp) / "frame.raw"
        frames.write_bytes(frame.tobytes())
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(ir))
        model.reshape([1, h, w, 3])
        precision = seg.backend.float_precision
        compiled = core.compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        python_round(seg, request, frame, 3)  # warm
        times: dict[str, list[float]] = {k: [] for k in ("cpp_segmenter", "cpp_openvino",
                                                         "python_segmenter", "python_openvino")}
        for _ in range(args.rounds):
            done = subprocess.run([str(program), "time", str(ir), str(frames), str(h), str(w),
                                   str(args.iters)], capture_output=True, text=True, check=True)
            for line in done.stdout.splitlines():
                _, ours, _, raw = line.split()
                times["cpp_segmenter"].append(float(ours))
                times["cpp_openvino"].append(float(raw))
            ours, raw = python_round(seg, request, frame, args.iters)
            times["python_segmenter"] += ours
            times["python_openvino"] += raw
        seg.close()
    median = {k: statistics.median(v) for k, v in times.items()}
    doc = {"benchmark": "cpp_runtime", "ir": str(ir), "precision": precision,
           "size": [h, w], "batch": 1, "rounds": args.rounds, "iters": args.iters,
           "median_ms": median,
           "cpp_over_openvino": median["cpp_segmenter"] / median["cpp_openvino"] - 1,
           "python_over_openvino": median["python_segmenter"] / median["python_openvino"] - 1,
           "goal": "C++ Segmenter within 2% of OpenVINO's own infer",
           "library_build_seconds": round(build_seconds, 1), "machine": machine_info(),
           "command": "python benchmarks/cpp_runtime.py" + (f" --ir {args.ir}" if args.ir else "")}
    doc["met"] = doc["cpp_over_openvino"] <= 0.02
    for k, v in median.items():
        print(f"{k:<18} {v:8.2f} ms")
    print(f"C++ over OpenVINO {100 * doc['cpp_over_openvino']:+.1f}%, Python over OpenVINO "
          f"{100 * doc['python_over_openvino']:+.1f}%")
    atomic_write_text(Path(args.out), json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
