"""Verification of a reduced-precision graph against its fp32 graph, with onnxruntime on
the CPU: label agreement and mIoU of its labels against fp32's on street-like frames and the
user's images; when it falls short, each genotype module's output error, to name the worst."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from ssr_deploy.backends.onnxruntime import new_session
from ssr_deploy.media import read_image
from ssr_deploy.names import module_of_node
from ssr_deploy.preprocess import frames_to_input, resize_frames
from ssr_deploy.runtime.compare import compare_runners, spec_runner
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


#: how a candidate graph is run for its check: ONNX graph -> (model input -> outputs)
GraphRunner = Callable[[onnx.ModelProto], Callable[[np.ndarray], list[np.ndarray]]]


def onnxruntime_graph(model: onnx.ModelProto) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The graph in an onnxruntime CPU session (how fp16 and int8 ONNX are verified)."""
    session = new_session(model.SerializeToString())
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})


def _runner(model: onnx.ModelProto, spec: ModelSpec, run: GraphRunner = onnxruntime_graph):
    return spec_runner(spec, run(model))


class Fp32Check:
    """Candidates (fp16, int8, int8 with modules kept out) against one fp32 graph on the
    same frames: the fp32 labels (onnxruntime's) are computed once, however many candidates
    are checked (the automatic int8 fallback checks dozens). ``run``: how a candidate runs
    (onnxruntime; OpenVINO at its precision for ``export openvino``)."""

    def __init__(self, fp32: onnx.ModelProto, spec: ModelSpec, threshold: float,
                 frames: int = 8, data: str | None = None,
                 run: GraphRunner = onnxruntime_graph) -> None:
        self.fp32, self.spec, self.threshold, self.run = fp32, spec, threshold, run
        self.frames = verification_frames(spec, frames, data)
        reference = _runner(fp32, spec)
        self._labels = [reference(frame[None]) for _, frame in self.frames]

    def __call__(self, candidate: onnx.ModelProto, worst: bool = True) -> dict[str, Any]:
        """Label agreement and mIoU of the candidate's labels against fp32's, per frame
        source; below the threshold (and ``worst``) the worst modules by output error."""
        recorded = iter(self._labels)
        result = compare_runners(_runner(candidate, self.spec, self.run),
                                 lambda frames: next(recorded),
                                 ((source, frame[None]) for source, frame in self.frames),
                                 self.spec.classes)
        sources = {source: {"frames": s["frames"], "label_agreement": s["label_agreement"],
                            "miou_vs_fp32": s["miou_vs_reference"]}
                   for source, s in result["sources"].items()}
        report = {"label_agreement": result["label_agreement"],
                  "miou_vs_fp32": result["miou_vs_reference"],
                  "sources": sources, "min_agreement": self.threshold,
                  "passed": result["label_agreement"] >= self.threshold}
        if not report["passed"] and worst:
            report["worst_layers"] = layer_errors(self.fp32, candidate, self.spec)[:3]
        return report


def _probe(model: onnx.ModelProto, tensors: set[str], spec: ModelSpec
           ) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (those the graph computes) on the first verification
    frame, at the spec's size and batch."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    produced = {out for node in copy.graph.node for out in node.output}
    for tensor in sorted(tensors & produced):
        copy.graph.output.append(onnx.ValueInfoProto(name=tensor))
    session = new_session(copy.SerializeToString())
    frame = resize_frames(verification_frames(spec, 1)[0][1][None], spec.input.size)
    x = frames_to_input(np.repeat(frame, spec.fixed_batch or 1, axis=0), spec.input)
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(None, {spec.input.name: x}), strict=True))


def module_macs(model: onnx.ModelProto, spec: ModelSpec) -> dict[str, int]:
    """Multiply-accumulates of each genotype module's convolutions at the spec's size, per
    frame, from the output shapes of one run: the share of the work a module is."""
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in weights]
    outputs = _probe(model, {n.output[0] for n in convs}, spec)
    macs: dict[str, int] = {}
    for node in convs:
        _, cin_per_group, *kernel = weights[node.input[1]]
        out = outputs[node.output[0]]
        per_frame = int(np.prod(out.shape[1:])) * cin_per_group * int(np.prod(kernel))
        module = module_of_node(node.name)
        macs[module] = macs.get(module, 0) + per_frame
    return macs


def layer_errors(fp32: onnx.ModelProto, candidate: onnx.ModelProto, spec: ModelSpec
                 ) -> list[dict[str, Any]]:
    """Relative L2 error of each genotype module's output (the last node of the module),
    candidate vs fp32, on the first verification frame; worst first."""
    last: dict[str, str] = {}
    for node in fp32.graph.node:
        if module_of_node(node.name) != "io" and node.output:
            last[module_of_node(node.name)] = node.output[0]
    wanted = set(last.values())
    outs = [_probe(model, wanted, spec) for model in (fp32, candidate)]
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
