"""Search speed: step time and memory of the first search epoch vs the last, showing what
progressive shrinking saves (pruned ops are deleted from the supernet).

    python benchmarks/search_speed.py [--size 64x128] [--epochs 40] [--out FILE.json]

Memory is the supernet's weights + gradients + Adam moments (bytes of live tensors) on
CPU, torch's peak allocation per epoch on CUDA. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ssr_deploy.data import open_dataset
from ssr_deploy.io import atomic_write_text
from ssr_deploy.runtime.bench import machine_info
from ssr_deploy.search.searcher import SearchConfig, Searcher
from ssr_deploy.space import SearchSpace


def state_mib(searcher: Searcher) -> float:
    params = searcher.net.weight_parameters()
    n = sum(p.numel() for p in params)
    moments = sum(t.numel() for s in searcher.weight_opt.state.values() for t in s.values()
                  if torch.is_tensor(t) and t.dim() > 0)
    return (2 * n + moments) * 4 / 2**20  # weights + grads + Adam moments, float32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/search_speed_cpu.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    config = SearchConfig(size=size, epochs=args.epochs, batch=4, arch_lr=0.3, shrink_every=3,
                          device=args.device)
    cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        searcher = Searcher(SearchSpace(), open_dataset(f"synthetic:{args.images}", "train",
                                                        size), tmp, config)
        epochs = []
        while searcher.epoch < config.epochs and not searcher.discrete():
            steps_before = searcher.step
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            searcher.search_one_epoch()
            seconds = time.perf_counter() - start
            searcher.epoch += 1
            epochs.append({"epoch": searcher.epoch, "seconds": seconds,
                           "step_ms": 1e3 * seconds / (searcher.step - steps_before),
                           "memory_mib": (torch.cuda.max_memory_allocated() / 2**20 if cuda
                                          else state_mib(searcher)),
                           "options_left": searcher.options_left()})
    first, last = epochs[0], epochs[-1]
    result = {"benchmark": "search_speed", "size": list(size), "images": args.images,
              "device": args.device, "epochs_run": len(epochs),
              "converged": searcher.discrete(), "first_epoch": first, "last_epoch": last,
              "step_time_ratio_first_over_last": first["step_ms"] / last["step_ms"],
              "memory_ratio_first_over_last": first["memory_mib"] / last["memory_mib"],
              "memory_kind": "cuda peak allocation" if cuda else
              "weights + grads + Adam moments of the surviving supernet",
              "epochs": epochs, "machine": machine_info()}
    print(f"first epoch {first['step_ms']:.0f} ms/step, {first['memory_mib']:.1f} MiB; last "
          f"epoch {last['step_ms']:.0f} ms/step, {last['memory_mib']:.1f} MiB: "
          f"{result['step_time_ratio_first_over_last']:.1f}x faster, "
          f"{result['memory_ratio_first_over_last']:.1f}x smaller")
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
