"""Verification of an exported ONNX graph: onnx.checker (full), shape inference, and
onnxruntime (CPU) against PyTorch on random and street-like inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch

from ssr_deploy.backends.onnxruntime import new_session
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.genotype import InputSpec
from ssr_deploy.model.deploy import DeployModel
from ssr_deploy.preprocess import frames_to_input
from ssr_deploy.runtime.compare import Runner, compare_runners
from ssr_deploy.spec import IOFormat

MAX_ABS_DIFF = 1e-4
MIN_LABEL_AGREEMENT = 0.9999


def model_input(frames_bgr: np.ndarray, io: IOFormat, spec: InputSpec) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR frames -> what a graph with ``io`` takes, through the runtime's
    own preprocessing."""
    if io.uint8_input:
        return frames_to_input(frames_bgr, io)  # uint8: only the channel order
    return frames_to_input(frames_bgr, spec)


def with_logits_output(model: onnx.ModelProto, io: IOFormat) -> onnx.ModelProto:
    """A copy of a labels-output graph that also returns the logits feeding its ArgMax."""
    if io.output == "logits":
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    argmax = [node for node in copy.graph.node if node.op_type == "ArgMax"]
    if len(argmax) != 1:
        raise SsrDeployError("exported graph has no single ArgMax to verify labels against")
    copy.graph.output.append(onnx.helper.make_tensor_value_info(
        argmax[0].input[0], onnx.TensorProto.FLOAT, None))
    return copy


def verify_onnx(model: onnx.ModelProto, deploy: DeployModel, cases: list[tuple[int, int, int]],
                max_abs_diff: float = MAX_ABS_DIFF,
                min_label_agreement: float = MIN_LABEL_AGREEMENT) -> dict[str, Any]:
    """Check ``model`` and compare it with ``deploy`` (the PyTorch module it was exported
    from) at each (batch, H, W) in ``cases``, on random and on street-like frames."""
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out_type = inferred.graph.output[0].type.tensor_type
    output_shape = [d.dim_param or d.dim_value for d in out_type.shape.dim]

    io, spec = deploy.io, deploy.net.genotype.input
    classes = deploy.net.genotype.classes

    def prepare(frames: np.ndarray) -> np.ndarray:
        return model_input(frames, io, spec)

    reference = DeployModel(deploy.net, IOFormat(io.input, "logits")).eval()

    def run_torch(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [reference(torch.from_numpy(x)).numpy()]

    session = new_session(with_logits_output(model, io).SerializeToString())
    exported = Runner(prepare, lambda x: session.run(None, {io.input_name: x}), io.output,
                      len(classes), gives_logits=True)
    batches = []
    for batch, h, w in cases:
        rng = np.random.default_rng(h * w + batch)
        batches += [(f"random {batch}x{h}x{w}",
                     rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)),
                    (f"street-like {batch}x{h}x{w}", street_frames(batch, h, w, seed=batch))]
    compared = compare_runners(exported, Runner(prepare, run_torch, "logits",
                                                len(classes)), batches, classes)
    results = [{"input": source, "max_abs_diff": s["max_abs_diff"],
                "label_agreement": s["label_agreement"]}
               for source, s in compared["sources"].items()]
    worst_diff = max(r["max_abs_diff"] for r in results)
    worst_agreement = min(r["label_agreement"] for r in results)
    return {
        "checker": "passed (full check)",
        "output_shape": output_shape,
        "cases": results,
        "max_abs_diff": worst_diff,
        "label_agreement": worst_agreement,
        "limits": {"max_abs_diff": max_abs_diff, "min_label_agreement": min_label_agreement},
        "passed": worst_diff <= max_abs_diff and worst_agreement >= min_label_agreement,
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"onnx.checker: {report['checker']}; output shape {report['output_shape']}"]
    for case in report["cases"]:
        agree = 100 * case["label_agreement"]
        lines.append(f"  onnxruntime vs torch, {case['input']:<26} max|diff| "
                     f"{case['max_abs_diff']:.2e}  labels agree {agree:.4f}%")
    verdict = "PASSED" if report["passed"] else "FAILED"
    limits = report["limits"]
    lines.append(f"verification {verdict} (limits: max|diff| <= {limits['max_abs_diff']:.0e}, "
                 f"agreement >= {100 * limits['min_label_agreement']:.2f}%)")
    return "\n".join(lines)
