"""How well a latency table predicts real networks, and whether a latency-target search lands.

1. builds (or continues) a table of the paper's space at 512x1024 through onnxruntime on this
   CPU (``ssr-deploy lut build``);
2. draws 20 random networks across the space's range (each with a random share of blocks and
   width level), adds the zoo network, exports each as a user would
   (``export onnx --input uint8-nhwc-bgr --output labels``) and measures it end to end with the
   Segmenter (frames in, labels out), one session at a time, three passes in random orders
   (the least median kept, as the table keeps for its parts);
3. compares predicted with measured: Spearman's rank correlation and the mean absolute
   relative error;
4. runs a short search with ``--target-ms`` on synthetic data, exports the network it found and
   measures it: ``target_error`` = |measured - target| / target.

    python benchmarks/latency_lut.py [--work DIR] [--networks 20] [--skip-search]
    python benchmarks/latency_lut.py --backend openvino --precision bf16 \
        --out benchmarks/results/latency_lut_openvino.json      (this CPU, OpenVINO bf16)
    python benchmarks/latency_lut.py --backend torch --device cuda --precision fp16 \
        --out benchmarks/results/latency_lut_gpu.json           (on an NVIDIA GPU)
    python benchmarks/latency_lut.py --backend tensorrt --device cuda --precision fp16 \
        --out benchmarks/results/latency_lut_tensorrt.json      (with TensorRT >= 10.3)

Writes benchmarks/results/latency_lut.json. Run it on a quiet machine: the figures are
latencies. About 20 minutes on a 2-core CPU (the table 5, exporting the networks 9).
With ``--backend torch`` the networks run as checkpoints in the torch backend (eager; fp16
autocast with ``--precision fp16``), the way the table times their parts.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy import build_model  # noqa: E402
from ssr_deploy.export.onnx import export_onnx  # noqa: E402
from ssr_deploy.genotype import Genotype  # noqa: E402
from ssr_deploy.io import atomic_write_text  # noqa: E402
from ssr_deploy.latency import LutOptions, build_lut  # noqa: E402
from ssr_deploy.latency.table import LatencyTable  # noqa: E402
from ssr_deploy.runtime.bench import machine_info  # noqa: E402
from ssr_deploy.space import SearchSpace  # noqa: E402
from ssr_deploy.spec import RUNTIME_IO  # noqa: E402
from tests.nets import smallest_ms  # noqa: E402

SIZE = (512, 1024)
IO = RUNTIME_IO


def export(genotype: Genotype, path: Path, precision: str = "fp32") -> Path:
    """The network with seeded random weights: an ONNX as a user exports it, a checkpoint
    (``.pt``) for the torch backend, or an engine (``.engine``: from that ONNX, strongly
    typed, in ``precision``)."""
    if not path.exists():
        import torch

        torch.manual_seed(0)
        net = build_model(genotype).eval()
        if path.suffix == ".pt":
            from ssr_deploy.model.checkpoint import save_checkpoint

            save_checkpoint(path, net, genotype)
        elif path.suffix == ".engine":
            from ssr_deploy.export.tensorrt import EngineOptions, build_engine

            onnx_path = export(genotype, path.with_suffix(".onnx"))
            build_engine(onnx_path, path, EngineOptions(precision=precision))
        else:
            export_onnx(net, path, size=SIZE, io=IO)
    return path


#: how the networks run: Segmenter.load keyword arguments (set in main)
RUN: dict = {}


def measure(path: Path, frame: np.ndarray, runs: int) -> float:
    """Median ms of ``runs`` Segmenter calls after 2 warm-up calls; one session alive."""
    from ssr_deploy.runtime.segmenter import Segmenter

    seg = Segmenter.load(path, **RUN)
    try:
        for _ in range(2):
            seg(frame)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            seg(frame)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)
    finally:
        seg.close()


def measure_all(paths: list[Path], frame: np.ndarray, runs: int, passes: int,
                probe) -> tuple[list[float], list[float]]:
    """``passes`` passes, each in its own random order, each network's least median kept: the
    estimator the table uses for its parts (a burst of other work during one pass does not
    count). After each network, ``probe()`` re-times one of the table's parts, so the
    machine's speed now can be compared with its speed when the table was measured."""
    times: list[list[float]] = [[] for _ in paths]
    drift: list[float] = []
    rng = random.Random(2)
    for _ in range(passes):
        order = list(range(len(paths)))
        rng.shuffle(order)  # no network always measured at the same point of a pass
        for i in order:
            times[i].append(measure(paths[i], frame, runs))
            drift.append(probe())
    return [min(t) for t in times], drift


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / ".latency_lut"),
                        help="where the table, the exported networks and the search go")
    parser.add_argument("--networks", type=int, default=20)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--backend", choices=("onnxruntime", "openvino", "tensorrt", "torch"),
                        default="onnxruntime")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "latency_lut.json"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    suffix = {"torch": ".pt", "tensorrt": ".engine"}.get(args.backend, ".onnx")
    if args.backend == "tensorrt":
        RUN.update(device=args.device)
    elif args.backend == "torch":
        RUN.update(backend="torch", device=args.device, size=SIZE,
                   fp16=args.precision == "fp16")
    elif args.backend == "openvino":  # the fp32 ONNX, computed at the table's precision
        RUN.update(backend="openvino", precision=args.precision)
    elif args.device != "cpu":
        RUN.update(device=args.device)
    tag = "" if (args.backend, args.device) == ("onnxruntime", "cpu") else \
        f"-{args.backend}-{args.device.replace(':', '')}-{args.precision}"
    space = SearchSpace()
    from ssr_deploy.data.synthetic import street_frames

    frame = street_frames(1, *SIZE, seed=0)[0]

    start = time.perf_counter()
    lut_path = work / f"lut{tag}.json"
    table_json = build_lut(space, lut_path, LutOptions(
        backend=args.backend, device=args.device, precision=args.precision, size=SIZE,
        check_points=16))
    lut_seconds = table_json["seconds"]
    table = LatencyTable.load(lut_path)
    print(f"table: {len(table.entries)} parts in {lut_seconds:.0f} s; interpolation check "
          f"{table.meta['check']}", flush=True)

    rng = random.Random(0)
    # drawn across the space's range (uniform draws all cost about the same): each network's
    # share of blocks and its width level at random, its ops and widths at random around them
    genotypes = [Genotype.load("ssr-cityscapes")] + [
        space.sample(rng, name=f"random-{k}", depth=rng.uniform(0.1, 1.0),
                     width=rng.uniform(0.0, 1.0)) for k in range(args.networks)]
    paths = [export(g, work / f"{g.name}{suffix}", args.precision) for g in genotypes]
    print(f"exported {len(paths)} networks", flush=True)
    search = None
    if not args.skip_search:  # searched first, measured with the others in the same passes
        search = target_search(work, table, lut_path, "cpu" if args.device == "cpu"
                               else args.device)
        paths.append(export(search.pop("genotype"), work / f"searched-{lut_path.stem}{suffix}",
                            args.precision))
    probe = drift_probe(space, table, LutOptions(backend=args.backend, device=args.device,
                                                 precision=args.precision, size=SIZE))
    measured, ratios = measure_all(paths, frame, args.runs, args.passes, probe)
    drift = float(np.median(ratios))
    print(f"the machine now vs when the table was measured: {drift:.3f}x the time "
          f"({len(ratios)} of its parts re-timed)", flush=True)
    if search:
        search["measured_ms"] = measured.pop()
        target = search["target_ms"]
        search["target_error"] = abs(search["measured_ms"] - target) / target
        search["target_error_at_table_speed"] = abs(search["measured_ms"] / drift - target) \
            / target
    predicted = [table.predict(g)["latency_ms"] for g in genotypes]
    errors = [abs(p - m) / m for p, m in zip(predicted, measured, strict=True)]
    corrected = [abs(p * drift - m) / m for p, m in zip(predicted, measured, strict=True)]
    rows = [{"name": g.name, "depth": [s.depth for s in g.stages], "predicted_ms": p,
             "measured_ms": m, "error": (p - m) / m}
            for g, p, m in zip(genotypes, predicted, measured, strict=True)]
    for r in rows:
        print(f"{r['name']:<16} predicted {r['predicted_ms']:7.1f} ms  measured "
              f"{r['measured_ms']:7.1f} ms  {100 * r['error']:+6.1f}%", flush=True)
    result = {
        "machine": machine_info(), "size": list(SIZE), "backend": args.backend,
        "device": args.device, "precision": args.precision, "io": IO.__dict__,
        "lut_seconds": lut_seconds, "lut_parts": len(table.entries),
        "interpolation_check": table.meta["check"],
        "spearman": spearman(predicted, measured), "mean_abs_error": float(np.mean(errors)),
        "max_abs_error": float(np.max(errors)), "passes": args.passes,
        "drift": drift, "drift_samples": len(ratios),
        "mean_abs_error_at_table_speed": float(np.mean(corrected)),
        "note": "drift: the median ratio of re-timed table parts (one after each network "
                "measured) to their table values; *_at_table_speed compare with the "
                "predictions scaled by it (the shared machine's speed moves by up to 20% "
                "within an hour)",
        "networks": rows,
    }
    print(f"spearman {result['spearman']:.3f}, mean abs error "
          f"{100 * result['mean_abs_error']:.1f}% ({100 * np.mean(corrected):.1f}% at the "
          "table's machine speed)", flush=True)
    if search:
        result["search"] = search
        result["target_error"] = search["target_error"]
        print(f"search: target {search['target_ms']} ms, found network predicted "
              f"{search['predicted_ms']:.1f} ms, measured {search['measured_ms']:.1f} ms: "
              f"{100 * search['target_error']:.1f}% off ("
              f"{100 * search['target_error_at_table_speed']:.1f}% at the table's machine "
              "speed)", flush=True)
    result["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    print("wrote", out)


def drift_probe(space: SearchSpace, table: LatencyTable, options: LutOptions):
    """A function that re-times the next of 24 of the table's parts (seeded) and returns
    its time over the table's."""
    from ssr_deploy import latency as lut

    rng = random.Random(1)
    parts = {p.key: p for p in lut.probes(space, options)}
    keys = rng.sample(sorted(k for k in table.entries if k in parts and k != lut.IO_KEY), 24)
    clock = lut.Clock(options)
    state = {"next": 0}

    def probe() -> float:
        key = keys[state["next"] % len(keys)]
        state["next"] += 1
        return clock.time(parts[key]) / table.entries[key]

    return probe


def target_search(work: Path, table: LatencyTable, lut_path: Path, device: str) -> dict:
    """A short search on synthetic scenes (the README's tiny search: 40 epochs, shrinking
    every 3 steps) with a latency target between the space's fastest and slowest network;
    the found network is measured with the others."""
    import subprocess

    from ssr_deploy.search.supernet import SuperNet

    net = SuperNet(table.space, table.num_classes)
    full = float(table.expected_ms(net, full=True))
    smallest = smallest_ms(table, net)
    target = round(smallest + 0.4 * (full - smallest), 1)
    out = work / f"search-{lut_path.stem}"
    if not (out / "genotype.json").exists():
        if out.exists():
            import shutil

            shutil.rmtree(out)
        subprocess.run([sys.executable, "-m", "ssr_deploy", "search", "--data",
                        "synthetic:24", "--out", str(out), "--size", "64x128", "--epochs",
                        "40", "--batch", "4", "--shrink-every", "3", "--arch-lr", "0.3",
                        "--lut", str(lut_path), "--target-ms",
                        str(target), "--device", device], check=True)
    genotype = Genotype.load(out / "genotype.json")
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines()]
    return {"genotype": genotype, "target_ms": target, "space_ms": [smallest, full],
            "predicted_ms": table.predict(genotype)["latency_ms"], "epochs": len(log),
            "mean_max_prob": log[-1]["mean_max_prob"],
            "depth": [s.depth for s in genotype.stages]}


if __name__ == "__main__":
    main()
