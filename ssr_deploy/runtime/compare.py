"""How far a model (an fp16/int8 engine, say) drifts from a reference (its fp32 ONNX):
label agreement and IoU of its labels against the reference's, on the same frames, each run
through its own backend (a comparator above the backends, as Polygraphy's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import find_images, read_image
from ssr_deploy.metrics import ConfusionMatrix
from ssr_deploy.preprocess import frames_to_input, outputs_to_labels, resize_frames
from ssr_deploy.runtime.backends import Backend, open_backend


def _labels(backend: Backend, frame_bgr: np.ndarray) -> np.ndarray:
    spec = backend.spec
    frames = resize_frames(frame_bgr[None], spec.input.size)
    if spec.fixed_batch:
        frames = np.repeat(frames, spec.fixed_batch, axis=0)
    return outputs_to_labels(backend.infer(frames_to_input(frames, spec.input)),
                             spec.output, len(spec.classes))[0]


def compare(candidate: str | Path, reference: str | Path, data: str | Path | None = None,
            n: int = 32, progress: bool = False) -> dict[str, Any]:
    """Run both models on ``n`` frames (images under ``data``, else street-like frames)."""
    with open_backend(reference) as ref, open_backend(candidate) as cand:
        if ref.spec.genotype_hash != cand.spec.genotype_hash or \
                ref.spec.input.size != cand.spec.input.size:
            raise SsrDeployError(f"{candidate} and {reference} hold different networks or input "
                                 "sizes; compare an engine with the ONNX it was built from")
        classes = list(ref.spec.classes)
        h, w = ref.spec.input.size
        if data:
            paths = find_images(data, n)
            frames, count = (read_image(p) for p in paths), len(paths)
        else:
            frames, count = iter(street_frames(n, h, w, seed=7)), n
        matrix = ConfusionMatrix(len(classes))  # rows: the reference's labels
        for frame in tqdm(frames, total=count, desc="comparing", disable=None if progress
                          else True, leave=False):
            matrix.update(_labels(cand, frame), _labels(ref, frame))
    scores = matrix.compute(classes)
    return {
        "candidate": {"path": str(candidate), "precision": cand.spec.precision,
                      "backend": cand.name},
        "reference": {"path": str(reference), "precision": ref.spec.precision,
                      "backend": ref.name},
        "frames": count, "source": str(data) if data else "street-like synthetic frames",
        "label_agreement": scores["pixel_acc"],
        "miou_vs_reference": scores["miou"],
        "per_class_iou": scores["per_class"],
    }


def format_comparison(r: dict[str, Any]) -> str:
    lines = [f"{r['candidate']['path']} ({r['candidate']['precision']}) vs "
             f"{r['reference']['path']} ({r['reference']['precision']}) on {r['frames']} "
             f"frames ({r['source']})",
             f"label agreement   {100 * r['label_agreement']:.3f}%",
             f"mIoU vs reference {100 * r['miou_vs_reference']:.2f} "
             "(100 = the same labels; the precision loss as a number)"]
    worst = sorted(((v, c) for c, v in r["per_class_iou"].items() if v is not None))[:3]
    if worst:
        lines.append("lowest classes    " + ", ".join(f"{c} {100 * v:.1f}" for v, c in worst))
    return "\n".join(lines)
