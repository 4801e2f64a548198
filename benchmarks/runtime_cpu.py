"""CPU runtime figures, each set measured side by side in one run:

1. **precisions**: the demo's trained network (``--demo DIR``; without it the demo's data and
   train stages run into ``--work``) exported at 512x1024, uint8 BGR in, labels out, end to
   end at batch 1 and 4, interleaved: onnxruntime fp32 (the embedded default) and int8 (the
   CPU form, ``--fallback auto``), OpenVINO fp32, bf16 (where the CPU has it) and int8
   (``export openvino``: the form this CPU runs correctly and fastest, ``--fallback auto``),
   and NNCF's ``nncf.quantize`` on the same fp32 IR (where nncf is installed). Each with its
   label agreement and mIoU against onnxruntime fp32 on 16 street-like frames and 16 of the
   demo's val scenes; the goal of this CPU's kind for the best verified path (AVX2 or AVX-512
   without VNNI: 1.5x, VNNI: 2.5x, AMX: 3.4x onnxruntime fp32 at >= 99.5% of labels) checked;
2. **peak**: the CPU's own limit, a compute-bound convolution through each runtime and
   precision (``cpu_peak.py``), and each path's floor at the network's MACs;
3. **forms**: each OpenVINO int8 form's labels on this CPU and with oneDNN's kernels capped
   to the older kinds this CPU can stand in for (``ONEDNN_MAX_CPU_ISA``), and the forms
   ``export openvino`` tried here (from its sidecar);
4. onnxruntime vs torch eager on the paper's network (random weights), batch 1;
5. the video pipeline (decode -> infer -> overlay + encode on threads) vs pure inference.

    python benchmarks/runtime_cpu.py [--demo DIR] [--work DIR] [--iters 40] [--out FILE]

Writes benchmarks/results/runtime_cpu.json with the machine (the CPU's kind and flags).
About 20 minutes on a 2-core CPU (the int8 exports' sensitivity searches are most of it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssr_deploy import Segmenter, build_model, save_checkpoint  # noqa: E402
from ssr_deploy.data.synthetic import street_frames  # noqa: E402
from ssr_deploy.export.onnx import export_onnx, load_source  # noqa: E402
from ssr_deploy.export.openvino import IROptions, export_openvino  # noqa: E402
from ssr_deploy.export.precision import PrecisionOptions, convert_precision  # noqa: E402
from ssr_deploy.io import atomic_write_text  # noqa: E402
from ssr_deploy.media import find_images, read_image  # noqa: E402
from ssr_deploy.runtime import bench  # noqa: E402
from ssr_deploy.runtime.compare import backend_runner, compare_runners  # noqa: E402
from ssr_deploy.runtime.video import run_video  # noqa: E402
from ssr_deploy.spec import CPU_GATE, RUNTIME_IO, ModelSpec, file_sha256  # noqa: E402

SIZE = (512, 1024)
GATE = CPU_GATE
#: the best verified path's speed over onnxruntime fp32 this CPU's kind should reach
GOALS = {"avx2": 1.5, "avx512": 1.5, "vnni": 2.5, "amx": 3.4, "other": 1.0}
BF16_GOAL = 1.8


def trained_checkpoint(demo: Path | None, work: Path) -> Path:
    """The demo's ``train/best.pt``; without a demo folder, the demo's data and train
    stages run into ``work/demo`` (the network trained as the demo trains it)."""
    if demo is not None:
        return demo / "train" / "best.pt"
    from ssr_deploy.app.demo import Demo

    runner = Demo(work / "demo", progress=print)
    runner.stage("data", runner.data)
    runner.stage("train", runner.train)
    return work / "demo" / "train" / "best.pt"


def models(checkpoint: Path, data: Path, work: Path) -> dict[str, tuple[Path, str]]:
    """name -> (model file, how it was made), each as a user makes it (made once: a rerun
    with the same --work reuses them)."""
    calib, val = data / "leftImg8bit" / "train", data / "leftImg8bit" / "val"
    cache = str(work / "calibration")
    fp32 = work / "model.onnx"
    if not fp32.exists():
        export_onnx(load_source(str(checkpoint)), fp32, size=SIZE, dynamic_batch=True,
                    max_batch=8, io=RUNTIME_IO)
    made = {"onnxruntime fp32": (fp32, "export onnx --input uint8-nhwc-bgr --output labels")}
    int8 = work / "model.int8-cpu.onnx"
    if not int8.exists():
        convert_precision(fp32, int8, PrecisionOptions(
            "int8", calib_dir=str(calib), calib_n=32, calib_cache=cache, int8_target="cpu",
            fallback="auto", min_agreement=GATE, data=str(val)))
    made["onnxruntime int8"] = (int8, f"--precision int8 --int8-target cpu --fallback auto "
                                      f"--min-agreement {GATE}")
    from ssr_deploy.backends.openvino import library

    native_bf16 = library.bf16_support() == "native"
    for precision in ("fp32", "bf16", "int8") if native_bf16 else ("fp32", "int8"):
        ir = work / f"ov-{precision}.xml"
        options = IROptions(precision, data=str(val)) if precision != "int8" else IROptions(
            "int8", calib_dir=str(calib), calib_n=32, calib_cache=cache, fallback="auto",
            min_agreement=GATE, data=str(val))
        if not ir.exists():
            export_openvino(fp32, ir, options)
        how = f"export openvino --precision {precision}" + (
            f" --fallback auto --min-agreement {GATE}" if precision == "int8" else "")
        made[f"openvino {precision}"] = (ir, how)
    made.update(nncf_irs(work / "ov-fp32.xml", calib, val, work))
    return made


def nncf_irs(fp32_ir: Path, calib: Path, val: Path, work: Path) -> dict[str, tuple[Path, str]]:
    """NNCF's post-training int8 of the same fp32 IR (its performance and mixed presets), with
    a sidecar as ours have (so the backend runs them as it runs ours), where nncf is
    installed: the candidates ``export openvino`` was measured against."""
    try:
        import nncf
    except ImportError:
        print("nncf is not installed: its int8 is not measured (pip install nncf)")
        return {}
    import openvino as ov

    from ssr_deploy.backends.openvino import library
    from ssr_deploy.preprocess import resize_frames

    frames = [resize_frames(read_image(p)[None], SIZE) for p in find_images(calib, 32)]
    made = {}
    model = library.read_model(fp32_ir)
    for name, how in (("nncf int8", "nncf.quantize, preset performance, 32 frames"),
                      ("nncf int8 mixed", "nncf.quantize, preset mixed, 32 frames")):
        path = work / f"{name.replace(' ', '-')}.xml"
        if not path.exists():
            start = time.perf_counter()
            preset = (nncf.QuantizationPreset.MIXED if "mixed" in name
                      else nncf.QuantizationPreset.PERFORMANCE)
            quantized = nncf.quantize(model, nncf.Dataset(frames), subset_size=len(frames),
                                      preset=preset)
            ov.save_model(quantized, str(path), compress_to_fp16=False)
            meta = ModelSpec.load(fp32_ir).to_dict()
            meta = {k: v for k, v in meta.items() if k not in ("file", "sha256",
                                                               "precision_check")}
            meta.update(precision="int8", quantization={"method": how, "form": "nncf",
                                                        "seconds": round(
                time.perf_counter() - start, 1)}, openvino={
                **meta["openvino"], "inference_precision": library.float_precision(None),
                "bin_sha256": file_sha256(path.with_suffix(".bin"))})
            atomic_write_text(path.with_name(path.name + ".json"), ModelSpec.sidecar_text(
                path.name, file_sha256(path), meta))
        made[name] = (path, how)
    return made


def agreements(entries: list[tuple[str, Segmenter]], data: Path) -> dict[str, dict]:
    """Each model's labels against onnxruntime fp32's: 16 street-like frames, 16 val scenes."""
    frames = [("street-like", f[None]) for f in street_frames(16, *SIZE, seed=3)]
    frames += [("val scenes", read_image(p)[None])
               for p in find_images(data / "leftImg8bit" / "val", 16)]
    reference = backend_runner(entries[0][1].backend)
    out = {}
    for name, seg in entries:
        r = compare_runners(backend_runner(seg.backend), reference, iter(frames),
                            list(seg.spec.classes))
        out[name] = {"label_agreement": r["label_agreement"],
                     "miou_vs_fp32": r["miou_vs_reference"],
                     "by_source": {s: v["label_agreement"] for s, v in r["sources"].items()}}
    return out


def precisions(args, work: Path) -> dict:
    checkpoint = trained_checkpoint(args.demo, work)
    data = (args.demo or work / "demo") / "data"
    made = models(checkpoint, data, work)
    entries = []
    for name, (path, _) in made.items():
        entries.append((name, Segmenter.load(path)))
    agree = agreements(entries, data)
    results = bench.run(entries, [1, 4], args.iters, args.warmup, progress=True)
    print(bench.format_results(results))
    base = {r.batch: r.fps for r in results if r.backend == "onnxruntime fp32"}
    rows = []
    specs = dict((name, seg.spec) for name, seg in entries)
    for r in results:
        q = specs[r.backend].quantization
        rows.append({"model": r.backend, "precision": r.precision, "batch": r.batch,
                     "latency_ms": r.latency_ms["mean"], "p90_ms": r.latency_ms["p90"],
                     "fps": r.fps, "speed_vs_onnxruntime_fp32": r.fps / base[r.batch],
                     **agree[r.backend], "how": made[r.backend][1],
                     "form": q.form if q else None,
                     "fallback": {k: q.fallback[k] for k in ("kept", "macs_out_of_int8")}
                     if q and q.fallback else None})
    for _, seg in entries:
        seg.close()
    return {"model": {"checkpoint": str(checkpoint), "size": list(SIZE),
                      "io": "uint8 BGR in, uint8 labels out", "trained": "as the demo trains "
                      "it: ssr-cityscapes, 10 epochs on 160 synthetic scenes at 96x192"},
            "gate": GATE, "rows": rows, "goals": goals(rows)}


def goals(rows: list[dict]) -> dict:
    """This CPU kind's goal for the best verified path, and bf16's where the CPU has it."""
    from ssr_deploy.cpu import this_cpu

    kind = this_cpu().kind
    out = {}
    for batch in sorted({r["batch"] for r in rows}):
        mine = [r for r in rows if r["batch"] == batch]
        verified = [r for r in mine if r["label_agreement"] >= GATE]
        best = max(verified, key=lambda r: r["fps"])
        bf16 = next((r for r in mine if r["model"] == "openvino bf16"), None)
        out[f"batch{batch}"] = {
            "kind": kind, "goal": GOALS[kind],
            "best": {"model": best["model"], "speed": best["speed_vs_onnxruntime_fp32"],
                     "agreement": best["label_agreement"],
                     "met": best["speed_vs_onnxruntime_fp32"] >= GOALS[kind]},
            "bf16": None if bf16 is None else {
                "speed": bf16["speed_vs_onnxruntime_fp32"], "agreement": bf16["label_agreement"],
                "met": bf16["speed_vs_onnxruntime_fp32"] >= BF16_GOAL
                and bf16["label_agreement"] >= GATE}}
    return out


def peak_and_floors(doc: dict, work: Path) -> dict:
    """cpu_peak's GMAC/s per path, and each measured path's floor at the network's MACs."""
    from cpu_peak import floor_ms, peaks

    from ssr_deploy.model.checkpoint import load_model
    from ssr_deploy.model.complexity import count_macs

    ir = work / "ov-int8.xml"
    form = ModelSpec.load(ir).quantization.form if ir.exists() else None
    peak = peaks(form)
    net = load_model(doc["precisions"]["model"]["checkpoint"])
    gmacs = count_macs(net.genotype, SIZE)[0] / 1e9
    floors = []
    for row in doc["precisions"]["rows"]:
        if row["batch"] != 1:
            continue
        path = {"openvino int8": "openvino int8", "onnxruntime int8": "onnxruntime int8"}.get(
            row["model"], row["model"] if row["model"] in peak else None)
        share = (row.get("fallback") or {}).get("macs_out_of_int8", 0.0)
        float_path = ("openvino bf16" if "openvino bf16" in peak else "openvino fp32") \
            if row["model"] == "openvino int8" else "onnxruntime fp32"
        floor = floor_ms(gmacs, peak, path, share, float_path) if path else None
        floors.append({"model": row["model"], "latency_ms": row["latency_ms"],
                       "floor_ms": floor, "times_the_floor":
                       row["latency_ms"] / floor if floor else None})
    return {"network_gmacs": gmacs, "conv": "3x3, 128 to 128 channels at 128x256",
            "paths": peak, "floors_batch1": floors}


def forms(work: Path, data: Path) -> dict:
    """Each OpenVINO int8 form's labels (against onnxruntime fp32, 8 street-like frames and
    16 val scenes) on this CPU and under the oneDNN caps of older kinds; and the forms export
    openvino tried here, from its sidecar."""
    import subprocess

    import onnx

    from ssr_deploy.cpu import ISA_CAPS, KINDS, describe, proc_flags, this_cpu
    from ssr_deploy.export.int8 import to_int8
    from ssr_deploy.export.metadata import read_sidecar

    fp32 = work / "model.onnx"
    meta, model = read_sidecar(fp32), onnx.load(str(fp32))
    calib = data / "leftImg8bit" / "train"
    for form in ("s8", "u8", "u8-7bit"):
        path = work / f"form-{form}.onnx"
        if not path.exists():
            graph, _ = to_int8(model, meta, PrecisionOptions(
                "int8", calib_dir=str(calib), calib_n=32, calib_cache=str(work / "calibration"),
                int8_target="openvino", int8_form=form), [])
            onnx.save(graph, str(path))
    here = this_cpu()
    caps = [None] + [c for c in ("AVX512_CORE", "AVX2") if KINDS.index(ISA_CAPS[c][0])
                     < KINDS.index(here.kind) and describe(proc_flags(), "", c).kind
                     != here.kind]
    out = {}
    for cap in caps:
        env = {**__import__("os").environ, **({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})}
        text = subprocess.run([sys.executable, __file__, "--forms-here", str(work),
                               str(data)], env=env, capture_output=True, text=True,
                              check=True).stdout
        kind = describe(proc_flags(), "", cap).kind if cap else here.kind
        out[cap or "native"] = {"kind": kind, "agreement": json.loads(text.splitlines()[-1])}
    ir = work / "ov-int8.xml"
    chosen = ModelSpec.load(ir).quantization if ir.exists() else None
    return {"by_kind": out, "chosen": chosen.form if chosen else None,
            "tried_by_export": list(chosen.candidates) if chosen else []}


def forms_here(work: Path, data: Path) -> None:
    """(run under a cap) each form's label agreement, as one JSON line."""
    import onnx

    from ssr_deploy.backends.openvino import library as ov
    from ssr_deploy.export.precision_check import Fp32Check

    fp32 = onnx.load(str(work / "model.onnx"))
    spec = ModelSpec.load(work / "model.onnx")
    check = Fp32Check(fp32, spec, GATE, 8, str(data / "leftImg8bit" / "val"),
                      ov.graph_runner("fp32"))
    print(json.dumps({form: check(onnx.load(str(work / f"form-{form}.onnx")),
                                  worst=False)["label_agreement"]
                      for form in ("s8", "u8", "u8-7bit")}))


def onnxruntime_vs_torch_and_video(args, work: Path) -> dict:
    net = build_model("ssr-cityscapes").eval()
    ckpt = save_checkpoint(work / "ssr.pt", net, net.genotype)
    onnx_path = export_onnx(net, work / "ssr.onnx", size=SIZE, dynamic_batch=True,
                            io=RUNTIME_IO).path
    ort = Segmenter.load(onnx_path)
    entries = [("onnxruntime", ort),
               ("torch-eager-nchw", Segmenter.load(ckpt, size=SIZE, channels_last=False)),
               ("torch-eager-channels-last", Segmenter.load(ckpt, size=SIZE))]
    results = bench.run(entries, [1], args.iters // 2, args.warmup, progress=True)
    print(bench.format_results(results))
    clip = work / "drive.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 30, SIZE[::-1])
    for frame in street_frames(args.frames, *SIZE, seed=1):
        writer.write(frame)
    writer.release()
    run_video(ort, str(clip), str(work / "warm.mp4"), max_frames=5)  # warm caches
    video = run_video(ort, str(clip), str(work / "out.mp4"))
    pure = bench.run([("onnxruntime", ort)], [1], args.iters // 2, args.warmup)[0]
    fps = {r.backend: r.fps for r in results}
    return {"onnxruntime_vs_torch": {
                "vs_torch_eager_nchw": fps["onnxruntime"] / fps["torch-eager-nchw"],
                "vs_torch_eager_channels_last":
                    fps["onnxruntime"] / fps["torch-eager-channels-last"], "target": 1.6,
                "results": bench.report(results, {})["results"]},
            "video": {"frames": video.frames, "pipeline_fps": video.fps,
                      "pure_inference_fps": pure.fps, "ratio": video.fps / pure.fps,
                      "target": 0.9, "codec": "mp4v",
                      "threads": "decode, infer, overlay+encode"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="a demo folder (its train/best.pt, data/)")
    parser.add_argument("--work", type=Path, help="where the models go (kept; default: a "
                                                  "temp folder, removed)")
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--frames", type=int, default=60, help="video length")
    parser.add_argument("--skip-torch", action="store_true", help="only the precisions")
    parser.add_argument("--out", default="benchmarks/results/runtime_cpu.json")
    parser.add_argument("--forms-here", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.forms_here:
        return forms_here(*args.forms_here)
    work = args.work or Path(tempfile.mkdtemp(prefix="ssr-runtime-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        from ssr_deploy.backends.openvino import library

        doc = {"benchmark": "runtime_cpu", "machine": bench.machine_info()}
        doc["machine"]["openvino_bf16"] = library.bf16_support()
        doc["precisions"] = precisions(args, work)
        data = (args.demo or work / "demo") / "data"
        doc["peak"] = peak_and_floors(doc, work)
        doc["forms"] = forms(work, data)
        if not args.skip_torch:
            doc.update(onnxruntime_vs_torch_and_video(args, work))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    atomic_write_text(args.out, json.dumps(doc, indent=1) + "\n")
    for batch, goal in doc["precisions"]["goals"].items():
        best = goal["best"]
        print(f"{batch}: best verified path {best['model']} {best['speed']:.2f}x at "
              f"{100 * best['agreement']:.2f}% (the {goal['kind']} goal: {goal['goal']}x, "
              f"{'met' if best['met'] else 'not met'})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
