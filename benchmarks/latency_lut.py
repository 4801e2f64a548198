"""How well latency tables predict whole networks, on every CPU path we ship.

For each path (``--paths``; default: onnxruntime fp32 and int8, OpenVINO fp32, bf16 where the
CPU has it, and int8):

1. builds (or continues) the table of the paper's space at 512x1024 (``lut build``: parts,
   then 12 whole networks to calibrate on, 20 for int8) and records how long it took;
2. draws 40 networks across the space's range (none a calibration network: other seeds),
   plus the zoo network, and exports each as a user exports it at that precision
   (``export onnx`` fp32; ``export onnx --precision int8 --int8-target cpu`` for onnxruntime
   int8, ``export openvino --precision int8`` in the table's form for OpenVINO int8: plain
   int8, its ranges from 4 street-like frames, random weights; OpenVINO fp32 and bf16 run the
   fp32 ONNX at that precision, as ``bench --backend openvino --precision`` does);
3. measures each end to end as ``bench`` does (the Segmenter: a uint8 frame in, labels out;
   median of ``--runs`` after 2 warm-up runs), ``--passes`` passes in random orders, with
   the table's reference network timed right before and after each: the mean of the two,
   over the reference's best time in the table, is the machine's speed then; each time
   divided by it is the time at the table's speed; a network timed while that speed
   changed (the two reference times more than 5% apart) is timed again until it has
   ``--passes`` steady measurements (at most three times as many), the median over the
   steady ones taken while the machine ran within 5% of its fastest among them kept
   (``*_at_table_speed``; ``raw``: the least raw time; ssr_deploy's
   ``latency/speed.py``, as a search landing measures);
4. compares predicted with measured: the share within +-10%, the median absolute error,
   Spearman's rank correlation (goals: >= 95% within 10%, median <= 5%, Spearman >= 0.95);
5. on int8 paths, three networks exported again with the modules ``--fallback auto`` kept in
   float on the demo's trained network, timed against their plain int8 exports; where that
   keep-set is whole kinds of part (OpenVINO's: the stem), a table built for it
   (``lut build --fp32-layers``) predicts the kept networks;
6. on the ``--search`` paths, searches with ``--target-ms`` at a quarter, half and three
   quarters of the space's range (landing on the target as measured: ``--land auto``, what
   each search timed in ``landing``), exports each found network on the path and measures
   it as above: where it lands against its target (goal: within +-5%).

    python benchmarks/latency_lut.py [--paths onnxruntime-fp32,openvino-int8] [--networks 40]
        [--work DIR] [--out benchmarks/results/latency_lut.json]

Resumable: the tables, exports and measurements stay in --work (a second run recomputes
the figures from them and measures only the searches and the fallback again). About 90
minutes for the five CPU paths on a 2-core CPU with the 41 networks' exports already there
(tables 7.5-11.5 min each, measuring 4-5 min a path, the searches 2 min each), plus about
10 s an export. Run it on a quiet machine. (search_target.py: how a search lands on targets
in the table's own terms.)
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy import build_model  # noqa: E402
from ssr_deploy.data.synthetic import street_frames  # noqa: E402
from ssr_deploy.export.onnx import export_onnx  # noqa: E402
from ssr_deploy.genotype import Genotype  # noqa: E402
from ssr_deploy.io import atomic_write_text  # noqa: E402
from ssr_deploy.latency import LutOptions, build_lut, speed  # noqa: E402
from ssr_deploy.latency.networks import segmenter_ms  # noqa: E402
from ssr_deploy.latency.table import LatencyTable  # noqa: E402
from ssr_deploy.runtime.bench import machine_info  # noqa: E402
from ssr_deploy.search.landing import named  # noqa: E402
from ssr_deploy.space import SearchSpace  # noqa: E402
from ssr_deploy.spec import RUNTIME_IO  # noqa: E402

SIZE = (512, 1024)
PATHS = ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-bf16",
         "openvino-int8")
GOALS = {"within_10": 0.95, "median_abs_error": 0.05, "spearman": 0.95}
SEARCH_PASSES = 5


def networks(space: SearchSpace, n: int) -> list[Genotype]:
    """The zoo network and ``n`` drawn across the space's range (seed 0: never a table's
    calibration network, drawn from 7919 + its seed)."""
    rng = random.Random(0)
    return [Genotype.load("ssr-cityscapes")] + [
        space.sample(rng, name=f"random-{k}", depth=rng.uniform(0.1, 1.0),
                     width=rng.uniform(0.0, 1.0)) for k in range(n)]


def fp32_onnx(genotype: Genotype, folder: Path) -> Path:
    """The network with seeded random weights, exported as a user exports it."""
    path = folder / f"{genotype.name}.onnx"
    if not path.exists():
        import torch

        torch.manual_seed(0)
        export_onnx(build_model(genotype).eval(), path, size=SIZE, io=RUNTIME_IO)
    return path


def model_for(path_name: str, fp32: Path, folder: Path, calib: Path, form: str | None,
              keep: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """(the file the path runs, Segmenter.load keyword arguments); ``keep``: modules kept
    out of int8 (``--fp32-layers``, what ``--fallback auto`` adds to)."""
    backend, precision = path_name.split("-")
    tag = ".keep" if keep else ""
    if precision == "int8" and backend == "onnxruntime":
        from ssr_deploy.export.precision import PrecisionOptions, convert_precision

        out = folder / f"{fp32.stem}.int8-cpu{tag}.onnx"
        if not out.exists():
            convert_precision(fp32, out, PrecisionOptions(
                "int8", int8_target="cpu", calib_dir=str(calib), calib_n=4,
                calib_method="minmax", calib_cache=str(folder / "calibration"),
                min_agreement=0.01, fp32_layers=keep))
        return out, {}
    if precision == "int8":
        from ssr_deploy.export.openvino import IROptions, export_openvino

        out = folder / f"{fp32.stem}.int8-{form}{tag}.xml"
        if not out.exists():
            export_openvino(fp32, out, IROptions(
                "int8", calib_dir=str(calib), calib_n=4, calib_method="minmax",
                calib_cache=str(folder / "calibration"), min_agreement=0.01, int8_form=form,
                fp32_layers=keep))
        return out, {}
    if backend == "openvino":
        return fp32, {"backend": "openvino", "precision": precision}
    return fp32, {}


def measure(path: Path, run: dict, frame: np.ndarray, runs: int) -> float:
    """bench's measure: median ms of ``runs`` Segmenter calls after 2 warm-up calls."""
    return segmenter_ms(path, run, [frame], runs)


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (np.argsort(np.argsort(x)).astype(float) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def evaluate(path_name: str, args, work: Path, space: SearchSpace, frame: np.ndarray,
             calib: Path) -> dict:
    backend, precision = path_name.split("-")
    table_path = work / f"lut-{path_name}.json"
    built = build_lut(space, table_path, LutOptions(
        backend=backend, precision=precision, size=SIZE, check_points=16))
    table = LatencyTable.load(table_path)
    form = (table.meta.get("int8") or {}).get("form")
    print(f"{path_name}: table {len(table.entries)} parts in {built['seconds']:.0f} s, "
          f"calibration {table.meta['calibration']['fit']}", flush=True)
    nets = networks(space, args.networks)
    reference, _ = table.reference()
    files = {}
    for g in [*nets, reference]:
        files[g.name] = model_for(path_name, fp32_onnx(g, work / "nets"), work / "nets",
                                  calib, form)
    saved = work / f"measured-{path_name}.json"
    done = json.loads(saved.read_text()) if saved.exists() else {"passes": []}
    rng = random.Random(2)
    for _ in done["passes"]:
        rng.shuffle([g.name for g in nets])  # the same orders as a run that was not cut
    while len(done["passes"]) < args.passes:
        order = [g.name for g in nets]
        rng.shuffle(order)
        # the reference, then each network followed by the reference: every network has
        # the machine's speed measured right before and right after it
        first = measure(*files[reference.name], frame, args.runs)
        times, refs = {}, {}
        for name in order:
            times[name] = measure(*files[name], frame, args.runs)
            refs[name] = measure(*files[reference.name], frame, args.runs)
        done["passes"].append({"times": times, "reference": refs, "order": order,
                               "reference_first": first})
        atomic_write_text(saved, json.dumps(done))
    # a network timed while the machine's speed changed (the reference before and after it
    # more than speed.STEADY apart) is timed again, until it has --passes steady ones
    again = done.setdefault("again", {})
    for g in nets:
        rows = measured_rows(done, g.name)
        n = len(rows)
        speed.measure(lambda g=g: measure(*files[g.name], frame, args.runs),
                      lambda: measure(*files[reference.name], frame, args.runs),
                      args.passes, rows=rows)
        if len(rows) > n:
            again[g.name] = [list(r) for r in rows[len(done["passes"]):]]
            atomic_write_text(saved, json.dumps(done))
    result = {
        "path": path_name, "table": {"seconds": built["seconds"],
                                     "minutes": round(built["seconds"] / 60, 1),
                                     "parts": len(table.entries),
                                     "interpolation_check": table.meta["check"],
                                     "calibration_fit": table.meta["calibration"]["fit"],
                                     "coefficients": table.coefficients, "int8": form},
        **compare(table, nets, done)}
    result["met"] = (result["within_10"] >= GOALS["within_10"]
                     and result["median_abs_error"] <= GOALS["median_abs_error"]
                     and result["spearman"] >= GOALS["spearman"])
    print(f"{path_name}: {100 * result['within_10']:.0f}% within 10%, median "
          f"{100 * result['median_abs_error']:.1f}%, Spearman {result['spearman']:.3f} "
          f"(plain sum of parts: median {100 * result['plain_sum_median_abs_error']:.1f}%)",
          flush=True)
    return result


def measured_rows(done: dict, name: str) -> list[speed.Row]:
    """A network's measurements (``measured-<path>.json``) as ``speed`` rows: one a pass,
    with the reference right before and after it, then those taken again."""
    rows = []
    for one in done["passes"]:
        k = one["order"].index(name)
        before = one["reference_first"] if k == 0 else one["reference"][one["order"][k - 1]]
        rows.append((one["times"][name], before, one["reference"][name]))
    return rows + [tuple(r) for r in done.get("again", {}).get(name, [])]


def compare(table: LatencyTable, nets: list[Genotype], done: dict) -> dict:
    """The table's predictions against measured passes (``measured-<path>.json``): each
    network's time at the table's speed (``speed.at_table_speed``: the median over its
    steady measurements at the machine's fastest), the shares and errors."""
    _, table_ref = table.reference()
    rows = []
    for g in nets:
        figure = speed.at_table_speed(measured_rows(done, g.name), table_ref)
        scaled, measured = figure["ms"], figure["raw_ms"]
        predicted = table.predict(g)
        rows.append({"name": g.name, "depth": [s.depth for s in g.stages],
                     "predicted_ms": predicted["latency_ms"], "parts_ms": predicted["parts_ms"],
                     "measured_ms": measured, "machine_speed": figure["machine_speed"],
                     "measured_at_table_speed_ms": scaled,
                     "measurements": figure["passes"], "steady": figure["steady"],
                     "error": predicted["latency_ms"] / measured - 1,
                     "error_at_table_speed": predicted["latency_ms"] / scaled - 1,
                     "plain_sum_error": predicted["parts_ms"] / scaled - 1})
    errors = np.abs([r["error_at_table_speed"] for r in rows])
    raw = np.abs([r["error"] for r in rows])
    return {
        "networks": len(rows),
        "within_10": float(np.mean(errors <= 0.10)),
        "median_abs_error": float(np.median(errors)),
        "mean_abs_error": float(np.mean(errors)),
        "max_abs_error": float(np.max(errors)),
        "spearman": spearman([r["predicted_ms"] for r in rows],
                             [r["measured_at_table_speed_ms"] for r in rows]),
        "raw": {"within_10": float(np.mean(raw <= 0.10)),
                "median_abs_error": float(np.median(raw))},
        "plain_sum_median_abs_error": float(np.median(np.abs(
            [r["plain_sum_error"] for r in rows]))),
        "measurements": {"taken": int(sum(r["measurements"] for r in rows)),
                         "steady": int(sum(r["steady"] for r in rows))},
        "rows": rows}


#: what ``--fallback auto --min-agreement 0.995`` kept out of int8 on the demo's trained
#: network, per path (benchmarks/results/runtime_cpu.json, an AVX-512 VNNI EPYC: 15.6% of the
#: MACs for onnxruntime, the stem's 0.4% for OpenVINO's u8 form). Networks with random
#: weights give int8 nothing to lose (their labels agree with fp32 on 99.999%), so the
#: fallback keeps nothing on them: its keep-set on a trained network is exported instead,
#: through the same --fp32-layers the fallback adds to.
FALLBACK_KEPT = {"onnxruntime-int8": ("stem", "head.classifier", "stages.0.layers.0",
                                      "stages.0.down", "stages.0.layers.3"),
                 "openvino-int8": ("stem",)}


def fallback(path_name: str, args, work: Path, space: SearchSpace, frame: np.ndarray,
             calib: Path, rows: list[dict]) -> dict:
    """Three of the measured networks (a quarter, half and three quarters up the measured
    range) exported again with the fallback's typical keep-set in float, timed interleaved
    with their plain int8 exports: what keeping them costs, and the table's error on them."""
    import onnx

    from ssr_deploy.names import module_of_node

    table = LatencyTable.load(work / f"lut-{path_name}.json")
    form = (table.meta.get("int8") or {}).get("form")
    # where the keep-set is made of whole kinds of part (the stem, the head, a stage's
    # downsampler), a table built for it: `lut build --fp32-layers`
    keep_modules = FALLBACK_KEPT[path_name]
    keep_table = keep_built = None
    if all(m in ("stem", "head") or m.endswith(".down") for m in keep_modules):
        backend, precision = path_name.split("-")
        keep_path = work / f"lut-{path_name}.keep.json"
        keep_built = build_lut(space, keep_path, LutOptions(
            backend=backend, precision=precision, size=SIZE, check_points=16,
            fp32_layers=keep_modules))
        keep_table = LatencyTable.load(keep_path)
        print(f"{path_name} table for --fp32-layers {','.join(keep_modules)}: "
              f"{keep_built['seconds']:.0f} s", flush=True)
    ranked = sorted(rows, key=lambda r: r["measured_at_table_speed_ms"])
    picked = [ranked[int(q * (len(ranked) - 1))] for q in (0.25, 0.5, 0.75)]
    by_name = {g.name: g for g in networks(space, args.networks)}
    out = []
    for row in picked:
        genotype = by_name[row["name"]]
        fp32 = fp32_onnx(genotype, work / "nets")
        modules = {module_of_node(n.name) for n in onnx.load(str(fp32)).graph.node}
        keep = tuple(m for m in FALLBACK_KEPT[path_name] if m in modules)
        plain = model_for(path_name, fp32, work / "nets", calib, form)
        kept = model_for(path_name, fp32, work / "nets", calib, form, keep)
        best = {"plain": [], "kept": []}
        for _ in range(args.passes):  # interleaved: plain, kept, plain, kept ...
            best["plain"].append(measure(*plain, frame, args.runs))
            best["kept"].append(measure(*kept, frame, args.runs))
        plain_ms, kept_ms = min(best["plain"]), min(best["kept"])
        cost = kept_ms / plain_ms - 1
        # the table predicts the plain network; on the kept one it is off by this much
        kept_at_speed = row["measured_at_table_speed_ms"] * (1 + cost)
        error = row["predicted_ms"] / kept_at_speed - 1
        out.append({"name": row["name"], "kept": list(keep),
                    "plain_ms": plain_ms, "kept_ms": kept_ms, "kept_over_plain": cost,
                    "table_error_plain": row["error_at_table_speed"],
                    "table_error_kept": error})
        if keep_table is not None:  # the table built for the keep-set, on the kept network
            out[-1]["keep_table_predicted_ms"] = keep_table.predict(genotype)["latency_ms"]
            out[-1]["keep_table_error_kept"] = (out[-1]["keep_table_predicted_ms"]
                                                / kept_at_speed - 1)
        print(f"{path_name} fallback keep-set on {row['name']}: {kept_ms:.1f} ms vs "
              f"{plain_ms:.1f} plain ({100 * cost:+.1f}%); table error {100 * error:+.1f}% "
              f"(plain {100 * row['error_at_table_speed']:+.1f}%)"
              + (f", the keep-set's table {100 * out[-1]['keep_table_error_kept']:+.1f}%"
                 if keep_table is not None else ""), flush=True)
    costs = [r["kept_over_plain"] for r in out]
    result = {"kept_modules": list(FALLBACK_KEPT[path_name]), "networks": out,
              "mean_kept_over_plain": float(np.mean(costs)),
              "max_abs_kept_over_plain": float(np.max(np.abs(costs)))}
    if keep_table is not None:
        result["keep_table"] = {"fp32_layers": list(keep_modules),
                                "seconds": keep_built["seconds"],
                                "mean_abs_error_kept": float(np.mean(np.abs(
                                    [r["keep_table_error_kept"] for r in out])))}
    else:
        result["keep_table"] = ("not built: the keep-set holds single layers, which a table "
                                "times by kind, not by where they sit")
    return result


def searches(path_name: str, args, work: Path, space: SearchSpace, frame: np.ndarray,
             calib: Path) -> list[dict]:
    """``search --lut T --target-ms X`` at a quarter, half and three quarters of the space's
    range on the path's table (the demo's short search: synthetic scenes at 64x128, 40
    epochs, shrinking every 3 steps); each found network exported on the path and measured
    as the others are: how far from X it lands."""
    import subprocess

    from ssr_deploy.search.budget import space_range

    table_path = work / f"lut-{path_name}.json"
    table = LatencyTable.load(table_path)
    fastest, slowest = space_range(table)
    form = (table.meta.get("int8") or {}).get("form")
    reference, best = table.reference()
    ref_file = model_for(path_name, fp32_onnx(reference, work / "nets"), work / "nets", calib,
                         form)
    out = []
    for share in (0.25, 0.5, 0.75):
        target = round(fastest + share * (slowest - fastest), 1)
        run = work / f"search-{path_name}-{share}"
        if (run / "genotype.json").exists() and not (run / "landing.json").exists():
            shutil.rmtree(run)  # a search from before searches landed: searched again
        if not (run / "genotype.json").exists():
            subprocess.run([sys.executable, "-m", "ssr_deploy", "search", "--data",
                            "synthetic:24", "--out", str(run), "--size", "64x128", "--epochs",
                            "40", "--batch", "4", "--shrink-every", "3", "--arch-lr", "0.3",
                            "--lut", str(table_path), "--target-ms", str(target), "--quiet"],
                           check=True, stdout=subprocess.DEVNULL)
        # named by its layers too: an export of the network an earlier search found at
        # this target is not this one's (measured: every search of two rounds was)
        found = named(Genotype.load(run / "genotype.json"))
        found = Genotype.from_dict({**found.to_dict(),
                                    "name": f"searched-{path_name}-{share}-{found.name}"})
        files = model_for(path_name, fp32_onnx(found, work / "nets"), work / "nets", calib,
                          form)
        # the reference on both sides of each measurement; a found network is one
        # figure, not one of 40: five steady passes at least
        rows = speed.measure(lambda files=files: measure(*files, frame, args.runs),
                             lambda: measure(*ref_file, frame, args.runs),
                             max(args.passes, SEARCH_PASSES))
        figure = speed.at_table_speed(rows, best)
        scaled, measured = figure["ms"], figure["raw_ms"]
        predicted = table.predict(found)["latency_ms"]
        landed = json.loads((run / "landing.json").read_text())
        out.append({"target_ms": target, "share_of_range": share,
                    "space_range_ms": [fastest, slowest], "predicted_ms": predicted,
                    "measured_ms": measured, "measured_at_table_speed_ms": scaled,
                    "machine_speed": figure["machine_speed"],
                    "measurements": figure["passes"], "steady": figure["steady"],
                    "rows": [list(r) for r in rows],  # (ms, reference before, after)
                    "error": measured / target - 1,
                    "error_at_table_speed": scaled / target - 1,
                    "depth": [st.depth for st in found.stages],
                    "landing": {"networks_timed": len(landed["rounds"]),
                                "aim_ms": landed["aim_ms"],
                                "search_measured_at_table_speed_ms": landed["ms"],
                                "rounds": landed["rounds"]}})
        print(f"{path_name} search: target {target} ms, predicted {predicted:.1f}, measured "
              f"{measured:.1f}, {scaled:.1f} at table speed "
              f"({100 * out[-1]['error_at_table_speed']:+.1f}%)",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--networks", type=int, default=40)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--search", default="onnxruntime-fp32,openvino-int8,openvino-bf16",
                        help="the paths whose --target-ms searches are measured ('' none)")
    parser.add_argument("--fallback", type=int, default=1,
                        help="int8 paths: time three networks with the fallback's typical "
                             "keep-set in float against their plain int8 (0: not)")
    parser.add_argument("--cross-check", default="",
                        help="PATH=FILE,...: the path's table (as built) against the passes in "
                             "FILE (a measured-<path>.json of another run, in --work), the "
                             "figures under the path's cross_check; nothing is built or timed")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / ".latency_lut"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" /
                                             "latency_lut.json"))
    args = parser.parse_args()
    work = Path(args.work)
    (work / "nets").mkdir(parents=True, exist_ok=True)
    calib = work / "calib"
    if not calib.exists():
        import cv2

        calib.mkdir()
        for i, f in enumerate(street_frames(4, *SIZE, seed=31)):
            cv2.imwrite(str(calib / f"{i}.png"), f)
    from ssr_deploy.backends.openvino import library

    paths = [p for p in args.paths.split(",")
             if p and (p != "openvino-bf16" or library.bf16_support() == "native")]
    space = SearchSpace()
    frame = street_frames(1, *SIZE, seed=0)[0]
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    if doc.get("benchmark") != "latency_lut":
        doc = {"benchmark": "latency_lut", "paths": {}}
    for name in paths:
        start = time.perf_counter()
        before = doc["paths"].get(name, {})
        doc["paths"][name] = {**evaluate(name, args, work, space, frame, calib),
                              "seconds": round(time.perf_counter() - start)}
        for key in ("fallback", "fallback_first_measurement", "searches",
                    "searches_before_landing"):  # what this run does not measure again
            if key in before:
                doc["paths"][name][key] = before[key]
        if name.endswith("int8") and args.fallback:
            doc["paths"][name]["fallback"] = fallback(name, args, work, space, frame, calib,
                                                      doc["paths"][name]["rows"])
        if name in args.search.split(","):
            if "searches" in before and "landing" not in before["searches"][0]:
                doc["paths"][name]["searches_before_landing"] = before["searches"]
            doc["paths"][name]["searches"] = searches(name, args, work, space, frame, calib)
        doc.update(machine=machine_info(), size=list(SIZE), goals=GOALS,
                   command="python benchmarks/latency_lut.py " + " ".join(
                       f"--{k} {v}" for k, v in vars(args).items() if k not in ("out", "work")),
                   method="errors at table speed: each measurement divided by the machine's "
                          "speed then (the mean of the reference network's times right before "
                          "and after it, over its best time in the table's build), the median "
                          "over steady measurements (the two reference times within 5%: "
                          "a network with fewer than --passes steady ones is timed again, at "
                          "most three times as often) taken while the machine ran within 5% "
                          "of its fastest among them (since the fourth session); 'raw': the "
                          "least raw time. (The first run "
                          "took the least over passes of times scaled by the faster "
                          "reference, floored at 1: biased by the reference's noise; this "
                          "estimator was chosen on that run's onnxruntime fp32 data alone)")
        atomic_write_text(out, json.dumps(doc, indent=1, default=str) + "\n")
    for item in filter(None, args.cross_check.split(",")):
        name, _, measured = item.partition("=")
        table = LatencyTable.load(work / f"lut-{name}.json")
        done = json.loads((work / measured).read_text())
        check = compare(table, networks(space, args.networks), done)
        doc["paths"][name]["cross_check"] = {
            "measured": measured, "table_built": table.meta["machine"].get("cpu"),
            **{k: v for k, v in check.items() if k != "rows"}}
        print(f"{name} against {measured}: {100 * check['within_10']:.0f}% within 10%, "
              f"median {100 * check['median_abs_error']:.1f}%, Spearman "
              f"{check['spearman']:.3f}", flush=True)
        atomic_write_text(out, json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
