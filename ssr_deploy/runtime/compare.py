"""The one comparator: how far a model drifts from a reference, as Polygraphy shapes it:
runners (a backend, an in-memory ONNX graph, a PyTorch module) that turn the same BGR frames
into labels (and logits where they give them), and one pass that counts the candidate's
labels against the reference's in a ConfusionMatrix per frame source (label agreement, mIoU
and per-class IoU against the reference) and the largest logit difference.

Every check of one model against another goes through ``compare_runners``: ONNX against
PyTorch at export, fp16/int8 against fp32, ``export check`` (an engine or a graph against
its ONNX)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.backends import open_backend
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.media import find_images, read_image
from ssr_deploy.metrics import ConfusionMatrix
from ssr_deploy.preprocess import frames_to_input, outputs_to_labels, resize_frames
from ssr_deploy.progress import track


@dataclass
class Runner:
    """A model as the comparator sees it: ``prepare`` turns (N, H, W, 3) uint8 BGR frames
    into its input, ``run`` returns its outputs (the first: ``output``, labels or logits;
    the last: logits, where it gives them). ``size``: frames are resized to it (a fixed-size
    model), else taken as they come; ``batch``: a fixed batch, each frame run repeated."""

    prepare: Callable[[np.ndarray], np.ndarray]
    run: Callable[[np.ndarray], list[np.ndarray]]
    output: str
    num_classes: int
    size: tuple[int, int] | None = None
    batch: int | None = None
    gives_logits: bool = False

    def __call__(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels (N, H, W), logits (N, C, H, W) or None) of the frames."""
        if self.size:
            frames = resize_frames(frames, self.size)
        if self.batch and len(frames) != self.batch:
            parts = [self(np.repeat(f[None], self.batch, axis=0)) for f in frames]
            return (np.concatenate([p[0][:1] for p in parts]),
                    None if parts[0][1] is None else np.concatenate([p[1][:1] for p in parts]))
        outputs = self.run(self.prepare(frames))
        labels = outputs_to_labels(outputs[0], self.output, self.num_classes)
        logits = outputs[-1] if self.gives_logits or self.output == "logits" else None
        return labels, logits


def spec_runner(spec, run: Callable[[np.ndarray], list[np.ndarray]]) -> Runner:
    """A model described by its sidecar (a ``ModelSpec``): its input format, size, batch
    and output as the spec says; ``run`` maps its input to its outputs."""
    return Runner(lambda f: frames_to_input(f, spec.input), run, spec.output.kind,
                  len(spec.classes), spec.input.size, spec.fixed_batch)


def backend_runner(backend) -> Runner:
    """A Backend (onnxruntime, TensorRT, torch, OpenVINO) through its own spec."""
    return spec_runner(backend.spec, lambda x: [backend.infer(x)])


def compare_runners(candidate: Runner, reference: Runner,
                    batches: Iterable[tuple[str, np.ndarray]], classes: list[str] | tuple,
                    progress: bool = False, total: int | None = None) -> dict[str, Any]:
    """Run both on each (source, frames) batch: per source the frames, label agreement,
    mIoU and per-class IoU of the candidate against the reference, and the largest logit
    difference where both give logits; overall the worst of each."""
    matrices: dict[str, ConfusionMatrix] = {}
    counts: dict[str, int] = {}
    diffs: dict[str, float] = {}
    n = len(classes)
    for source, frames in track(batches, "comparing", total, "batch", enabled=progress):
        (a, a_logits), (b, b_logits) = reference(frames), candidate(frames)
        matrix = matrices.setdefault(source, ConfusionMatrix(n))
        for pred, target in zip(b, a, strict=True):
            matrix.update(pred, target)
        counts[source] = counts.get(source, 0) + len(frames)
        if a_logits is not None and b_logits is not None:
            diff = float(np.abs(np.asarray(b_logits, np.float32)
                                - np.asarray(a_logits, np.float32)).max())
            diffs[source] = max(diffs.get(source, 0.0), diff)
    if not matrices:
        raise SsrDeployError("nothing to compare: no frames")
    sources = {}
    for source, matrix in matrices.items():
        scores = matrix.compute(classes)
        sources[source] = {"frames": counts[source], "label_agreement": scores["pixel_acc"],
                           "miou_vs_reference": scores["miou"],
                           "per_class_iou": scores["per_class"]}
        if source in diffs:
            sources[source]["max_abs_diff"] = diffs[source]
    total_matrix = ConfusionMatrix(n)
    for matrix in matrices.values():
        total_matrix.merge(matrix)
    overall = total_matrix.compute(classes)
    return {"sources": sources, "frames": sum(counts.values()),
            "label_agreement": min(s["label_agreement"] for s in sources.values()),
            "miou_vs_reference": min(s["miou_vs_reference"] for s in sources.values()),
            "per_class_iou": overall["per_class"],
            "max_abs_diff": max(diffs.values()) if diffs else None}


def compare(candidate: str | Path, reference: str | Path, data: str | Path | None = None,
            n: int = 32, progress: bool = False) -> dict[str, Any]:
    """``export check``: both models (engines, graphs, checkpoints), each through its own
    backend, on ``n`` frames (images under ``data``, else street-like frames)."""
    with open_backend(reference) as ref, open_backend(candidate) as cand:
        if ref.spec.genotype_hash != cand.spec.genotype_hash or \
                ref.spec.input.size != cand.spec.input.size:
            raise SsrDeployError(f"{candidate} and {reference} hold different networks or input "
                                 "sizes; compare an engine with the ONNX it was built from")
        h, w = ref.spec.input.size
        if data:
            paths = find_images(data, n)
            frames, count, source = (read_image(p) for p in paths), len(paths), str(data)
        else:
            frames, count = iter(street_frames(n, h, w, seed=7)), n
            source = "street-like synthetic frames"
        r = compare_runners(backend_runner(cand), backend_runner(ref),
                            ((source, f[None]) for f in frames), list(ref.spec.classes),
                            progress, count)
    return {
        "candidate": {"path": str(candidate), "precision": cand.spec.precision,
                      "backend": cand.name},
        "reference": {"path": str(reference), "precision": ref.spec.precision,
                      "backend": ref.name},
        "frames": r["frames"], "source": source,
        "label_agreement": r["label_agreement"],
        "miou_vs_reference": r["miou_vs_reference"],
        "per_class_iou": r["per_class_iou"],
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
