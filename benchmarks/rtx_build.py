"""Real TensorRT-RTX engines of the paper's network, built on this machine (no GPU needed):
build time and engine size per precision and compute-capability target, as `ssr-deploy
export engine --builder tensorrt-rtx` builds them; and the engine cache's first (build) and
second (found) call of ``engine_for``.

    python benchmarks/rtx_build.py [--size 512x1024] [--out FILE.json]

The ONNX is the production export (uint8 frames in, labels out, dynamic batch 1-8) of an
untrained ssr-cityscapes whose classifier is scaled up to a trained network's margins (the
build does not depend on the weights' values; the fp16/int8 agreement figures are that
network's, and `benchmarks/precision_cpu.py` has a trained one's). Build time counts the
builder alone; the precision conversion and its verification on the CPU are timed apart.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

from ssr_deploy.backends.tensorrt.library import load_tensorrt
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.export.precision import PrecisionOptions, convert_precision
from ssr_deploy.export.tensorrt import EngineOptions, build_engine, engine_for
from ssr_deploy.io import atomic_write_text, dumps_compact
from ssr_deploy.runtime.bench import machine_info
from ssr_deploy.spec import RUNTIME_IO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.nets
from tests.nets import confident_net  # noqa: E402

CASES = [("fp32", None), ("fp16", None), ("int8", None), ("fp16", "7.5,8.6,8.9,12.0")]


def confident_paper_net():
    return confident_net()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--out", default="benchmarks/results/rtx_build.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    library = load_tensorrt("tensorrt-rtx")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        fp32 = export_onnx(confident_paper_net(), tmp / "model.onnx", size=size,
                           dynamic_batch=True, max_batch=8,
                           io=RUNTIME_IO).path
        export_seconds = time.perf_counter() - start
        calib = tmp / "calib"
        calib.mkdir()
        for i, frame in enumerate(street_frames(16, *size, seed=5)):
            cv2.imwrite(str(calib / f"{i}.png"), frame)
        converted = {"fp32": (fp32, 0.0, None)}
        for precision in ("fp16", "int8"):
            start = time.perf_counter()
            result = convert_precision(fp32, tmp / f"model.{precision}.onnx", PrecisionOptions(
                precision, calib_dir=str(calib), calib_n=16, calib_cache=str(tmp / "cache"),
                min_agreement=0.5))
            converted[precision] = (result.path, time.perf_counter() - start,
                                    result.metadata["precision_check"]["label_agreement"])
        for precision, targets in CASES:
            onnx_path, convert_seconds, agreement = converted[precision]
            engine = tmp / f"{precision}-{(targets or 'default').replace(',', '-')}.engine"
            start = time.perf_counter()
            meta = build_engine(onnx_path, engine, EngineOptions(
                precision=precision, builder="tensorrt-rtx", compute_capabilities=targets))
            rows.append({
                "precision": meta["precision"], "compute_capabilities": meta["tensorrt"][
                    "compute_capabilities"], "targets_default": targets is None,
                "build_seconds": round(time.perf_counter() - start, 2),
                "engine_mb": round(engine.stat().st_size / 1e6, 2),
                "convert_and_verify_seconds": round(convert_seconds, 1),
                "label_agreement_vs_fp32": agreement,
                "io": {"input": read_sidecar(engine)["input"]["shape"],
                       "output": [read_sidecar(engine)["output"]["dtype"],
                                  read_sidecar(engine)["output"]["shape"]]}})
            print(rows[-1])
        cache = {}  # engine_for on the fp16 ONNX: the first call builds, the next finds it
        for call in ("first", "second"):
            start = time.perf_counter()
            engine_for(converted["fp16"][0], "fp16", builder="tensorrt-rtx",
                       compute_capability="8.9", cache_dir=tmp / "engines")
            cache[f"{call}_call_seconds"] = round(time.perf_counter() - start, 3)
        print(cache)
    result = {"builder": library.title, "size": list(size), "machine": machine_info(),
              "export": "uint8-nhwc-bgr in, labels out, dynamic batch 1-8, opset 18",
              "onnx_export_seconds": round(export_seconds, 1), "rows": rows,
              "engine_cache": {**cache, "what": "engine_for(fp16 ONNX, tensorrt-rtx, sm_89): "
                                                "built, then found in the cache"}}
    atomic_write_text(args.out, dumps_compact(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
