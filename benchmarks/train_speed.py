"""Training speed of ssr-cityscapes: images/s and peak memory at 512x1024, batch 2.

    python benchmarks/train_speed.py [--device cpu|cuda] [--steps 6] [--out FILE.json]

Forward + backward + Adam step on synthetic batches (data loading excluded). Peak memory is
the process's peak RSS on CPU, torch's peak allocation on CUDA. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

from ssr_deploy import build_model
from ssr_deploy.io import atomic_write_text
from ssr_deploy.runtime.bench import machine_info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    device = torch.device(args.device)
    net = build_model("ssr-cityscapes").to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, weight_decay=1e-4)
    x = torch.rand(args.batch, 3, h, w, device=device)
    y = torch.randint(0, 19, (args.batch, h, w), device=device)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def step() -> None:
        with torch.autocast(device.type, enabled=amp):
            loss = F.cross_entropy(net(x).float(), y, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(args.warmup):
        step()
    if amp:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if amp:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    peak_mib = (torch.cuda.max_memory_allocated() / 2**20 if amp
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {"benchmark": "train_speed", "model": "ssr-cityscapes", "size": [h, w],
              "batch": args.batch, "device": str(device), "amp": amp, "steps": args.steps,
              "step_seconds_mean": mean, "images_per_second": args.batch / mean,
              "peak_memory_mib": peak_mib,
              "peak_memory_kind": "cuda max_memory_allocated" if amp else "process peak RSS",
              "machine": machine_info()}
    print(f"{args.device}: {result['images_per_second']:.2f} images/s "
          f"({mean:.2f} s per step of {args.batch}), peak memory {peak_mib:.0f} MiB")
    out = args.out or f"benchmarks/results/train_speed_{device.type}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
