"""CPU runtime figures for ssr-cityscapes at 512x1024, measured side by side in one run:

1. onnxruntime vs torch eager, end to end (uint8 BGR frames in, labels out), batch 1;
   torch is timed both in plain NCHW eager mode and with channels_last (our default);
2. the video pipeline (decode -> infer -> overlay + encode on threads) vs pure inference.

    python benchmarks/runtime_cpu.py [--iters 30] [--frames 60] [--out FILE.json]

Weights are random (speed does not depend on them); the JSON records the machine.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2

from ssr_deploy import build_model, save_checkpoint
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.runtime import bench
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.runtime.video import run_video
from ssr_deploy.spec import RUNTIME_IO

SIZE = (512, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60, help="video length")
    parser.add_argument("--out", default="benchmarks/results/runtime_cpu.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net = build_model("ssr-cityscapes").eval()
        ckpt = save_checkpoint(tmp / "ssr.pt", net, net.genotype)
        onnx_path = export_onnx(net, tmp / "ssr.onnx", size=SIZE, dynamic_batch=True,
                                io=RUNTIME_IO).path
        ort = Segmenter.load(onnx_path)
        entries = [("onnxruntime", ort),
                   ("torch-eager-nchw", Segmenter.load(ckpt, size=SIZE, channels_last=False)),
                   ("torch-eager-channels-last", Segmenter.load(ckpt, size=SIZE))]
        results = bench.run(entries, [1], args.iters, args.warmup, progress=True)
        print(bench.format_results(results))

        clip = tmp / "drive.mp4"
        writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, SIZE[::-1])
        for frame in street_frames(args.frames, *SIZE, seed=1):
            writer.write(frame)
        writer.release()
        run_video(ort, str(clip), str(tmp / "warm.mp4"), max_frames=5)  # warm caches
        video = run_video(ort, str(clip), str(tmp / "out.mp4"))
        # pure inference, measured right after on the same frames, for the ratio
        pure = bench.run([("onnxruntime", ort)], [1], args.iters, args.warmup)[0]

    fps = {r.backend: r.fps for r in results}
    doc = bench.report(results, bench.machine_info())
    doc["benchmark"] = "runtime_cpu"
    doc["model"] = {"genotype": "ssr-cityscapes", "size": list(SIZE), "weights": "random",
                    "onnx_io": "uint8-nhwc-bgr in, uint8 labels out"}
    doc["onnxruntime_vs_torch"] = {
        "vs_torch_eager_nchw": fps["onnxruntime"] / fps["torch-eager-nchw"],
        "vs_torch_eager_channels_last": fps["onnxruntime"] / fps["torch-eager-channels-last"],
        "target": 1.6}
    doc["video"] = {"frames": video.frames, "pipeline_fps": video.fps,
                    "pure_inference_fps": pure.fps, "ratio": video.fps / pure.fps,
                    "target": 0.9, "codec": "mp4v", "threads": "decode, infer, overlay+encode"}
    bench.write_json(doc, args.out)
    ratios = doc["onnxruntime_vs_torch"]
    print(f"onnxruntime / torch eager: {ratios['vs_torch_eager_nchw']:.2f}x (NCHW), "
          f"{ratios['vs_torch_eager_channels_last']:.2f}x (channels_last)")
    print(f"video pipeline {video.fps:.1f} FPS vs pure inference {pure.fps:.1f} FPS: "
          f"{100 * doc['video']['ratio']:.0f}%")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
