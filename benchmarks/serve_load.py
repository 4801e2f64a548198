"""Serving under load: `ssr-deploy serve` (a real Triton server, python backend running the
Segmenter) hit by concurrent gRPC clients, each request one frame, checked against the
Segmenter's own labels.

    python benchmarks/serve_load.py [--model M.onnx] [--clients 8] [--requests 25]
        [--size 64x128] [--frame 256x512] [--out benchmarks/results/serve_cpu.json]

Without --model, the paper's network is exported at --size (random weights: speed does not
depend on them). Reports p50/p90/p99 latency and throughput per client count, through
`serve`'s front door and, alternating with it, straight to Triton's own loopback port (what
the front door costs), and the same frames through the Segmenter in-process (the server's
overhead as a ratio). Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.io import atomic_write_text
from ssr_deploy.runtime.bench import machine_info
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.serving.client import load
from ssr_deploy.serving.triton import TritonServer, free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--frame", default="256x512")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/serve_cpu.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    fh, fw = (int(v) for v in args.frame.split("x"))
    frame = street_frames(1, fh, fw, seed=5)[0]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else _export(Path(tmp) / "m.onnx", size,
                                                             args.max_batch)
        with Segmenter.load(model) as seg:
            expected = seg(frame)
            seg(frame)
            start = time.perf_counter()
            for _ in range(args.requests):
                seg(frame)
            in_process_ms = 1e3 * (time.perf_counter() - start) / args.requests
        runs = []
        with TritonServer(model, http_port=free_port(), grpc_port=free_port(),
                          metrics_port=free_port(), max_batch=args.max_batch) as server:
            load(server.grpc_url, frame, clients=1, requests=3)  # warm up
            direct = f"127.0.0.1:{server.triton_grpc}"  # behind the front door
            for clients in (int(c) for c in args.clients.split(",")):
                for _ in range(2):  # alternating, so drift hits both alike
                    for via, url in (("front door", server.grpc_url), ("direct", direct)):
                        r = load(url, frame, clients=clients, requests=args.requests,
                                 expected=expected)
                        r["errors"], r["via"] = len(r["errors"]), via
                        runs.append(r)
                        print(f"{via:>10}: {clients} clients x {args.requests}: p50 "
                              f"{r['latency_ms']['p50']:.1f} ms, p99 "
                              f"{r['latency_ms']['p99']:.1f} ms, {r['frames_per_s']:.1f} "
                              f"frames/s, {r['errors']} errors", flush=True)
    one = next(r for r in runs if r["clients"] == 1 and r["via"] == "front door")
    door = {}
    for clients in sorted({r["clients"] for r in runs}):
        def median_p50(via: str, clients=clients) -> float:
            values = sorted(r["latency_ms"]["p50"] for r in runs
                            if r["clients"] == clients and r["via"] == via)
            return values[len(values) // 2]
        door[str(clients)] = median_p50("front door") / median_p50("direct")
    result = {"benchmark": "serve_load", "model": str(args.model or f"ssr-cityscapes "
                                                      f"{args.size} (random weights)"),
              "frame": [fh, fw], "max_batch": args.max_batch, "protocol": "grpc",
              "server": "tritonserver 2.51 (PyTriton 0.7.0 wheel), python backend",
              "in_process_ms_per_frame": in_process_ms,
              "served_p50_over_in_process": one["latency_ms"]["p50"] / in_process_ms,
              "front_door_p50_over_direct": door,
              "runs": runs, "machine": machine_info(),
              "command": "python benchmarks/serve_load.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                  if k != "out" and v is not None)}
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"in-process {in_process_ms:.1f} ms/frame; served p50 is "
          f"{result['served_p50_over_in_process']:.2f}x that; the front door's p50 over "
          f"Triton's direct: {door}; wrote {args.out}")


def _export(path: Path, size: tuple[int, int], max_batch: int) -> Path:
    from ssr_deploy import build_model
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.spec import RUNTIME_IO

    export_onnx(build_model("ssr-cityscapes").eval(), path, size=size, dynamic_batch=True,
                max_batch=max_batch, io=RUNTIME_IO)
    return path


if __name__ == "__main__":
    main()
