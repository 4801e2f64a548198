"""``report.md``: the demo's figures, each with the command that makes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def report(f: dict[str, Any], out: Path, quick: bool) -> str:
    se, tr, ex, be, vi, en = (f[k] for k in ("search", "train", "export", "bench", "video",
                                             "engine"))
    lines = [
        "# ssr-deploy demo", "",
        f"Everything below ran on this machine{' (--quick sizes)' if quick else ''}; each "
        "figure is followed by the command that makes it.", "",
        "## 1. Synthetic street scenes",
        f"{f['data']['train']} train + {f['data']['val']} val scenes at {f['data']['size']}, "
        f"and a {f['data']['video_frames']}-frame video.", f"`{f['data']['command']}`", "",
        *latency_lines(f.get("latency")),
        "## 2. SSR search (solution space shrinking)",
        f"Options left: op {se['options_first']['op']} -> {se['options_last']['op']}, "
        f"mid width {se['options_first']['mid']} -> {se['options_last']['mid']}, out width "
        f"{se['options_first']['out']} -> {se['options_last']['out']} in "
        f"{plural(se['epochs'], 'epoch')} ({_search_ending(se)}); "
        f"epoch time {se['epoch_seconds_first']:.1f} s -> {se['epoch_seconds_last']:.1f} s. "
        f"Found depth {' + '.join(map(str, se['depth']))}: {_found(se)}. Plot: search.png, "
        "genotype: genotype.json.",
        f"`{se['command']}`", "",
        *train_lines(tr), f"`{tr['command']}`", "",
        "## 4. Verified ONNX (uint8 BGR in, labels out)",
        f"onnxruntime vs PyTorch: max abs diff {ex['max_abs_diff']:.1e}, label agreement "
        f"{100 * ex['label_agreement']:.3f}% at {ex['size']}. File: model.onnx + "
        "model.onnx.json.", f"`{ex['command']}`", "",
        "## 5. Precision in the graph: fp16 and int8 ONNX, verified against fp32 on the CPU",
        *precision_lines(f["precision"]), f"`{f['precision']['command']}`", "",
        "## 6. OpenVINO: bf16 and int8 IRs, verified in OpenVINO against fp32",
        *openvino_lines(f["openvino"]), "",
        "## 7. Speed on this CPU: every verified path, end to end",
        *speed_lines(be), *landing_lines(se, be, f["openvino"]), f"`{be['command']}`", "",
        "## 8. Video",
        f"{vi['frames']} frames segmented by {vi.get('model', 'model.onnx')} "
        f"({vi.get('precision', 'fp32')}) at {vi['fps']:.1f} FPS into overlay.mp4, decode, "
        f"inference and overlay + encode on three threads; {vi['samples']} sample overlays in "
        "samples/.", f"`{vi['command']}`", "",
        "## 9. TensorRT",
        *engine_lines(en, out), "",
    ]
    return "\n".join(lines)


def latency_lines(la: dict[str, Any] | None) -> list[str]:
    """The table the search aims with (none in a demo folder from before it had one)."""
    if not la:
        return []
    fit = la["calibration"]
    return ["## 1b. A latency table of the path the demo ships",
            f"{la['path']} at {la['size']} on this CPU, built in {la['seconds']:.0f} s: the "
            "parts of every network of the space timed, then a few whole networks as the "
            "runtime runs them to calibrate their sum on (fit error "
            f"{100 * fit['mean_rel_error']:.1f}% mean). The space runs from "
            f"{la['fastest_ms']:.1f} ms (its fastest network) to {la['slowest_ms']:.1f} ms "
            "here. File: latency.json (a coarse grid, for the demo's minutes; a full table: "
            "`ssr-deploy lut build` with its defaults).", f"`{la['command']}`", ""]


def _found(se: dict[str, Any]) -> str:
    """What the search found against its target: ms on a table, or MACs (older folders)."""
    if "target_ms" in se:
        return (f"predicted {se['predicted_ms']:.2f} ms on {se['path']} against the target "
                f"{se['target_ms']:.2f} ms ({se['predicted_ms'] / se['target_ms'] - 1:+.1%}); "
                f"{se['gmacs']:.3f} GMACs at the model's size")
    return (f"{se['cost_measure']} cost {se['found_gmacs']:.3f} GMACs against the target "
            f"{se['target_gmacs']:.3f} ({se['found_gmacs'] / se['target_gmacs'] - 1:+.1%}, "
            f"the measure the target is in); the whole network {se['gmacs']:.3f} GMACs")


def landing_lines(se: dict[str, Any], be: dict[str, Any], ov: dict[str, Any]) -> list[str]:
    """Where the search's network landed: the table's prediction beside what bench measured
    on the same path."""
    if "target_ms" not in se or "p50_ms" not in be:
        return []
    if se["path"] not in be["p50_ms"]:
        return ["", f"The search aimed at {se['target_ms']:.2f} ms on {se['path']} (the table "
                f"predicted {se['predicted_ms']:.2f} ms for the network it found), but that "
                "path's file was not written (section 6 says why), so it was not measured."]
    measured = be["p50_ms"][se["path"]]
    kept = ((ov.get("int8") or {}).get("fallback") or {}).get("kept") \
        if se["path"] == "openvino int8" else None
    landed = (f" (the search timed {plural(se['networks_timed'], 'network')} on that path to "
              f"land, the one found at {se['search_measured_ms']:.2f} ms)"
              if "networks_timed" in se else "")
    return ["", f"The search aimed at {se['target_ms']:.2f} ms on {se['path']}{landed}; the "
            f"table predicted {se['predicted_ms']:.2f} ms for the network it found; measured here "
            f"(median, batch 1): {measured:.2f} ms, "
            f"{se['predicted_ms'] / measured - 1:+.1%} predicted vs measured, "
            f"{measured / se['target_ms'] - 1:+.1%} from the target"
            + (f" (--fallback auto kept {', '.join(kept)} in float; the table times plain "
               "int8)" if kept else "") + "."]


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def train_lines(tr: dict[str, Any]) -> list[str]:
    if "genotype" not in tr:  # a demo folder from before the demo retrained its search's
        return ["## 3. Retraining the paper's network (ssr-cityscapes), briefly",
                f"Val mIoU {100 * tr['val_miou']:.1f} after {plural(tr['epochs'], 'epoch')} at "
                f"{tr['size']} (best {100 * tr['best_miou']:.1f})."]
    return ["## 3. Retraining the network the search found, from scratch, briefly",
            f"{tr['genotype']} ({tr['params']:,} parameters), trained as the authors retrain "
            f"a searched network: val mIoU {100 * tr['val_miou']:.1f} after "
            f"{plural(tr['epochs'], 'epoch')} at {tr['size']} (best "
            f"{100 * tr['best_miou']:.1f}). The paper's network (ssr-cityscapes) is kept for "
            "the GPU speed comparison (section 9)."]


def verified_line(file: str, form: str, r: dict[str, Any], how: str = "") -> str:
    """``- model.int8.onnx, <form>: labels agree with fp32 on 99.60% ...`` (or why it was
    not written), with what ``--fallback auto`` kept out of int8."""
    if "failed" in r:
        return f"- {file}, {form}: not written: {r['failed']}"
    line = (f"- {file}, {form}: labels agree with fp32 on {100 * r['label_agreement']:.2f}% of "
            f"pixels{how}, mIoU vs fp32 {100 * r['miou_vs_fp32']:.1f}")
    if "fallback" in r:
        kept = r["fallback"]
        line += (f"; all int8 it agreed on {100 * kept['agreement_all_int8']:.2f}%, kept out of "
                 f"int8: {', '.join(kept['kept']) or 'nothing'} "
                 f"({100 * kept['macs_out_of_int8']:.0f}% of the MACs)")
    return line


def openvino_lines(ov: dict[str, Any]) -> list[str]:
    if "skipped" in ov:
        return [f"Skipped: {ov['skipped']}."]
    lines = [verified_line(f"model.{name}.xml", ov[name].get("precision", name), ov[name],
                           " (run in OpenVINO as the runtime runs it)")
             for name in ("bf16", "int8")]
    return [*lines, "The precision each runs at is in its sidecar and set explicitly at every "
            "load (OpenVINO would otherwise compute an fp32 graph in bf16 on this CPU, "
            "unasked).", f"`{ov['command']}`"]


def speed_lines(be: dict[str, Any]) -> list[str]:
    if "fastest" not in be:  # a demo folder from before the CPU paths were compared
        return [f"onnxruntime {be['fps']['onnxruntime']:.1f} FPS, torch "
                f"{be['fps']['torch']:.1f} FPS at {be['size']}, batch 1."]
    base = be["fps"]["onnxruntime fp32"]
    lines = [f"At {be['size']}, batch 1, frames in and labels out, on {be['device']} "
             "(bench.json, bench.png):", "",
             "| path | precision | labels as fp32 | FPS | vs onnxruntime fp32 |",
             "|---|---|---|---|---|"]
    for label, fps in be["fps"].items():
        mark = " **(fastest verified: the video runs it)**" if label == be["fastest"] else ""
        lines.append(f"| {label}{mark} | {be['precision'][label]} | "
                     f"{100 * be['agreement'][label]:.2f}% | {fps:.1f} | {fps / base:.2f}x |")
    return [*lines, "", "Labels as fp32: each file's verification against the fp32 graph "
            "(onnxruntime fp32 and torch: the reference). The paper's 175 FPS is at 512x1024 "
            "on a GPU, not a peer of these figures."]


def engine_lines(en: dict[str, Any], out: Path) -> list[str]:
    if "skipped" in en:
        return [f"Skipped: {en['skipped']}. Then: `ssr-deploy export engine {out}/model.onnx "
                f"-o {out}/model.engine`."]
    agreement = f", {100 * en['agreement']:.2f}% of labels as fp32" if en["agreement"] else ""
    lines = [f"{en['precision']} engine {en['file']} ({en['size_mb']:.1f} MB{agreement}) "
             f"built by {en['builder']} in {en['build_seconds']:.1f} s, for "
             f"{', '.join('sm_' + cc.replace('.', '') for cc in en['targets'])}."]
    if "fps" in en:
        lines.append(f"{en['fps']:.1f} FPS here (the searched network, batch 1).")
        if "paper_net_fps" in en:
            lines.append(f"The paper's network (ssr-cityscapes) at 512x1024, fp16: "
                         f"{en['paper_net_fps']:.1f} FPS here (paper: {en['paper_fps']:.0f} FPS "
                         "on an RTX 2080Ti); bench_engine.png.")
    else:
        lines.append(f"Not run here: {en['not_run']}.")
        if en["builder"].startswith("TensorRT-RTX"):
            lines.append("To run it, copy model.engine and its .json to a machine with an "
                         "RTX GPU of those compute capabilities, `pip install "
                         "'ssr-deploy[rtx]'` there, then `ssr-deploy bench model.engine` "
                         "(Turing, the paper's 2080Ti: build with --compute-capability 7.5).")
    return lines + [f"`{en['command']}`"]


def precision_lines(p: dict[str, Any]) -> list[str]:
    forms = {
        "fp16": "fp16",
        "int8": "int8, TensorRT form (symmetric int8 Q/DQ on convolution inputs, modules kept "
                "in fp16 by --fallback auto): what an int8 engine is built from",
        "int8-cpu": "int8, CPU form (uint8 activations, Q/DQ around each convolution, which "
                    "onnxruntime fuses into its int8 kernels; modules kept in fp32 by "
                    "--fallback auto): the one to run on a CPU",
    }
    lines = [verified_line(f"model.{name}.onnx", form, p[name]) for name, form in forms.items()]
    lines.append("The TensorRT form is not timed here in onnxruntime, which runs its symmetric "
                 "int8 through separate quantize/dequantize steps (slower than fp32); TensorRT "
                 "fuses them into int8 kernels on the GPU, and OpenVINO on the CPU (section 6: "
                 "the same form is OpenVINO's int8).")
    return lines


def _search_ending(se: dict[str, Any]) -> str:
    """How the demo's search ended, in a few words (older demo.json files lack ``ended``)."""
    ended = se.get("ended", "converged" if se["converged"] else "argmax")
    if ended == "settled":
        f = se["forced"]
        return (f"settled: {f['decisions']} decisions taken by the rising threshold, "
                f"{f['mass']:.2f} of their probability each")
    return {"converged": "converged", "argmax": "stopped; argmax for the rest",
            "in band": "stopped; the most probable network in the band",
            "measured": "the network it measured nearest the target"}[ended]
