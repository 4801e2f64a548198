"""Search speed: step time and memory of the first search epoch vs the last, showing what
progressive shrinking saves (pruned ops are deleted from the supernet); with
``--processes``, seconds per epoch of one search on 1 and N processes (torchrun, the same
global batch and seed) and what each process sends per step.

    python benchmarks/search_speed.py [--size 64x128] [--epochs 40] [--out FILE.json]
    python benchmarks/search_speed.py --processes 1,2 [--epochs 3]
        -> benchmarks/results/search_processes_cpu.json

Memory is the supernet's weights + gradients + Adam moments (bytes of live tensors) on
CPU, torch's peak allocation per epoch on CUDA. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--out")
    parser.add_argument("--processes", help="e.g. 1,2: one search on each number of "
                        "processes, side by side")
    args = parser.parse_args()
    if args.processes:
        return processes(args)
    args.out = args.out or "benchmarks/results/search_speed_cpu.json"
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


def processes(args) -> None:
    """The same search (paper space, global batch 4, seed 0) on each number of processes,
    through the CLI as a user runs it (torchrun beyond one); on the CPU each process gets
    cores / N threads."""
    counts = [int(n) for n in args.processes.split(",")]
    cores = len(os.sched_getaffinity(0))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = Path(tmp) / f"n{n}"
            launcher = ([sys.executable, "-m", "ssr_deploy"] if n == 1 else
                        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                         str(n), "-m", "ssr_deploy"])
            start = time.perf_counter()
            subprocess.run([*launcher, "search", "--data", f"synthetic:{args.images}",
                            "--size", args.size, "--epochs", str(args.epochs), "--batch", "4",
                            "--arch-lr", "0.3", "--shrink-every", "3", "--out", str(out)],
                           check=True, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": str(max(cores // n, 1))})
            wall = time.perf_counter() - start
            rows = [json.loads(r) for r in (out / "search_log.jsonl").read_text().splitlines()]
            state = torch.load(out / "search.pt", weights_only=True)
            genotype = json.loads((out / "genotype.json").read_text())
            weights = sum(v.numel() for k, v in state["net"].items()
                          if not k.endswith(("running_mean", "running_var", "_tracked",
                                             "_valid")) and not k.startswith("masks_"))
            runs.append({"processes": n, "threads_each": max(cores // n, 1),
                         "seconds_per_epoch": [r["seconds"] for r in rows],
                         "wall_seconds": wall,
                         "allreduce_bytes_per_step": [r.get("allreduce_bytes_per_step", 0)
                                                      for r in rows],
                         "weights_at_end": weights,
                         "ce_per_epoch": [r["ce"] for r in rows],
                         "stages": genotype["stages"]})
    base = runs[0]
    for r in runs:
        r["epoch_speedup_vs_first"] = [a / b for a, b in zip(
            base["seconds_per_epoch"], r["seconds_per_epoch"], strict=False)]
        r["genotype_equal_to_first"] = r["stages"] == base["stages"]
    from ssr_deploy.search.supernet import SuperNet

    bn_layers = sum(isinstance(m, torch.nn.BatchNorm2d) for m in SuperNet(SearchSpace(), 19)
                    .modules())
    result = {"benchmark": "search_processes", "size": args.size, "images": args.images,
              "batchnorm_layers_first_epoch": bn_layers,
              "messages_per_step_first_epoch": 4 * bn_layers + 5,
              "messages_per_step_what": "each BatchNorm layer one all-reduce forward and one "
                                        "backward, in the weight step and in the arch step; "
                                        "2 gradient sums, 2 CE denominators, 1 agreement check",
              "epochs": args.epochs, "global_batch": 4, "cores": cores,
              "what_is_sent": "per step: the weight gradients and the architecture gradients "
                              "of the surviving supernet, summed over the ranks in one "
                              "message each, plus each step's CE denominator and every "
                              "BatchNorm layer's statistics (2 x channels each way)",
              "runs": [{k: v for k, v in r.items() if k != "stages"} for r in runs],
              "machine": machine_info()}
    for r in runs:
        print(f"{r['processes']} process(es) x {r['threads_each']} threads: "
              + ", ".join(f"{s:.1f}" for s in r["seconds_per_epoch"]) + " s per epoch; sent "
              + ", ".join(f"{b / 2**20:.1f}" for b in r["allreduce_bytes_per_step"])
              + " MiB per step; genotype equal to the first: " + str(r["genotype_equal_to_first"]))
    out = args.out or "benchmarks/results/search_processes_cpu.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
