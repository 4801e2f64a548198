"""Verification of a reduced-precision graph against its fp32 graph, with onnxruntime on
the CPU: label agreement and mIoU of its labels against fp32's on street-like frames and the
user's images; when it falls short, each genotype module's output error, to name the worst."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from ssr_deploy.media import read_image
from ssr_deploy.names import module_of_node
from ssr_deploy.preprocess import frames_to_input, resize_frames
from ssr_deploy.runtime.compare import compare_runners, onnx_session, spec_runner
from ssr_deploy.spec import ModelSpec


def verification_frames(spec: ModelSpec, frames: int, data: str | None = None
                        ) -> list[tuple[str, Any]]:
    """(source, (H, W, 3) uint8 BGR frame) pairs: street-like frames, then ``data`` images."""
    from ssr_deploy.data.synthetic import street_frames
    from ssr_deploy.media import find_images

    h, w = spec.input.size
    pairs = [("street-like", f) for f in street_frames(frames, h, w, seed=5)]
    if data:
        pairs += [(str(data), read_image(p)) for p in find_images(data, 32)]
    return pairs


def _runner(model: onnx.ModelProto, spec: ModelSpec):
    session = onnx_session(model)
    return spec_runner(spec, lambda x: session.run(None, {spec.input.name: x}))


def compare_with_fp32(fp32: onnx.ModelProto, candidate: onnx.ModelProto, spec: ModelSpec,
                      threshold: float, frames: int = 8, data: str | None = None
                      ) -> dict[str, Any]:
    """Label agreement and mIoU of the candidate's labels against the fp32 graph's, per
    frame source; with the worst modules from a per-layer comparison if it fails."""
    result = compare_runners(_runner(candidate, spec), _runner(fp32, spec),
                             ((source, frame[None]) for source, frame
                              in verification_frames(spec, frames, data)), spec.classes)
    sources = {source: {"frames": s["frames"], "label_agreement": s["label_agreement"],
                        "miou_vs_fp32": s["miou_vs_reference"]}
               for source, s in result["sources"].items()}
    report = {"label_agreement": result["label_agreement"],
              "miou_vs_fp32": result["miou_vs_reference"],
              "sources": sources, "min_agreement": threshold,
              "passed": result["label_agreement"] >= threshold}
    if not report["passed"]:
        report["worst_layers"] = layer_errors(fp32, candidate, spec)[:3]
    return report


def layer_errors(fp32: onnx.ModelProto, candidate: onnx.ModelProto, spec: ModelSpec
                 ) -> list[dict[str, Any]]:
    """Relative L2 error of each genotype module's output (the last node of the module),
    candidate vs fp32, on the first verification frame; worst first."""
    last: dict[str, str] = {}
    for node in fp32.graph.node:
        if module_of_node(node.name) != "io" and node.output:
            last[module_of_node(node.name)] = node.output[0]
    wanted = set(last.values())
    probes = []
    for model in (fp32, candidate):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        produced = {out for node in copy.graph.node for out in node.output}
        for tensor in sorted(wanted & produced):
            copy.graph.output.append(onnx.ValueInfoProto(name=tensor))
        probes.append(onnx_session(copy))
    frame = resize_frames(verification_frames(spec, 1)[0][1][None], spec.input.size)
    x = frames_to_input(np.repeat(frame, spec.fixed_batch or 1, axis=0), spec.input)
    outs = []
    for session in probes:
        names = [out.name for out in session.get_outputs()]
        outs.append(dict(zip(names, session.run(None, {spec.input.name: x}),
                             strict=True)))
    rows = []
    for module, tensor in last.items():
        if tensor in outs[0] and tensor in outs[1]:
            a, b = (np.asarray(out[tensor], np.float32) for out in outs)
            error = float(np.linalg.norm(a - b) / (np.linalg.norm(a) + 1e-12))
            rows.append({"module": module, "relative_error": error})
    return sorted(rows, key=lambda r: -r["relative_error"])


def format_check(report: dict[str, Any]) -> str:
    lines = []
    for source, s in report["sources"].items():
        lines.append(f"  vs fp32 on {s['frames']} {source} frames: labels agree "
                     f"{100 * s['label_agreement']:.3f}%, mIoU vs fp32 "
                     f"{100 * s['miou_vs_fp32']:.2f}")
    return "\n".join(lines)
