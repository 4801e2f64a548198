"""The paper's central claim in miniature: the SSR loss closes the gap between the supernet
and the network discretised from it.

    python benchmarks/ssr_ablation.py [--seeds 3] [--epochs 40] [--size 64x128]
        [--images 24] [--out benchmarks/results/ssr_ablation.json]

For each seed, two searches of the paper's space on synthetic scenes, identical but for the
loss weights: the defaults (100 CE + 30 SSR op + 15 + 15 SSR widths + 1 cost) and the SSR
terms at 0 (100,0,0,0,1). Both stop after the same number of epochs (or earlier, once every
decision has one option). For every run: the supernet's val mIoU under its soft
architecture, the extracted network's val mIoU with the inherited weights before any
retraining, their gap, the mean over decisions of the largest probability, and the options
left. Resumable: finished runs are kept in the output file and skipped. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ssr_deploy.data import open_dataset
from ssr_deploy.io import atomic_write_text
from ssr_deploy.runtime.bench import machine_info
from ssr_deploy.search.searcher import SearchConfig, Searcher
from ssr_deploy.space import SearchSpace


def run(ssr: bool, seed: int, args, size: tuple[int, int]) -> dict:
    torch.manual_seed(seed)
    config = SearchConfig(size=size, epochs=args.epochs, batch=4, arch_lr=0.3, shrink_every=3,
                          seed=seed, data=f"synthetic:{args.images}",
                          **({} if ssr else {"w_ssr_op": 0.0, "w_ssr_out": 0.0,
                                             "w_ssr_mid": 0.0}))
    train = open_dataset(f"synthetic:{args.images}", "train", size)
    val = open_dataset(f"synthetic:{args.val_images}", "val", size)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        searcher = Searcher(SearchSpace(), train, tmp, config)
        searcher.run()
        gap = searcher.discretisation_gap(val)
        with torch.no_grad():
            mean_max_prob = searcher.mean_max_prob()
        left = searcher.options_left()
    return {"ssr": ssr, "seed": seed, **gap, "mean_max_prob": mean_max_prob,
            "options_left": sum(left.values()), "options_left_by_level": left,
            "epochs": searcher.epoch, "converged": searcher.discrete(),
            "seconds": time.perf_counter() - start}


def summary(runs: list[dict]) -> dict:
    out = {}
    for ssr in (True, False):
        rows = [r for r in runs if r["ssr"] == ssr]
        if rows:
            out["ssr" if ssr else "no_ssr"] = {
                key: statistics.mean(r[key] for r in rows) for key in
                ("supernet_miou", "discrete_miou", "gap", "mean_max_prob", "options_left")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--size", default="64x128")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--val-images", type=int, default=24)
    parser.add_argument("--out", default="benchmarks/results/ssr_ablation.json")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    settings = {"epochs": args.epochs, "size": list(size), "images": args.images,
                "val_images": args.val_images, "space": "paper", "batch": 4,
                "arch_lr": 0.3, "shrink_every": 3, "loss_weights_ssr": "100,30,15,15,1",
                "loss_weights_no_ssr": "100,0,0,0,1"}
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    runs = previous.get("runs", []) if previous.get("settings") == settings else []
    for seed in range(args.seeds):
        for ssr in (True, False):
            if any(r["seed"] == seed and r["ssr"] == ssr for r in runs):
                continue
            row = run(ssr, seed, args, size)
            runs.append(row)
            print(f"seed {seed} ssr {'on ' if ssr else 'off'}: supernet "
                  f"{100 * row['supernet_miou']:.2f}, discrete {100 * row['discrete_miou']:.2f}"
                  f", gap {100 * row['gap']:+.2f} mIoU points, mean max prob "
                  f"{row['mean_max_prob']:.3f}, {row['options_left']} options left "
                  f"({row['seconds']:.0f} s)", flush=True)
            result = {"benchmark": "ssr_ablation", "settings": settings, "runs": runs,
                      "summary": summary(runs), "machine": machine_info(),
                      "command": "python benchmarks/ssr_ablation.py " + " ".join(
                          f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                          if k != "out")}
            atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    for name, s in summary(runs).items():
        print(f"{name}: supernet {100 * s['supernet_miou']:.2f}, discrete "
              f"{100 * s['discrete_miou']:.2f}, gap {100 * s['gap']:+.2f}, mean max prob "
              f"{s['mean_max_prob']:.3f}, options left {s['options_left']:.0f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
