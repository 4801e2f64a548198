"""Evaluate a checkpoint on a dataset: per-class IoU, mIoU, pixel accuracy; optionally write
predictions as Cityscapes labelId PNGs the official evaluation script reads."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssr_deploy.data.classes import NAMES, TRAIN_TO_LABEL
from ssr_deploy.genotype import InputSpec
from ssr_deploy.media import write_image_in
from ssr_deploy.metrics import ConfusionMatrix
from ssr_deploy.model.net import SSRNet
from ssr_deploy.preprocess import frames_to_input, label_dtype, resize_frames
from ssr_deploy.progress import track
from ssr_deploy.runs import output_folder


def to_input(image_bgr: np.ndarray, spec: InputSpec, size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 normalised as ``spec`` says."""
    frames = resize_frames(image_bgr[None], size)
    return torch.from_numpy(frames_to_input(frames, spec))


@torch.inference_mode()
def predict(net: SSRNet, image_bgr: np.ndarray, size: tuple[int, int], flip: bool = False,
            device: str = "cpu", spec: InputSpec | None = None) -> np.ndarray:
    """(H, W) class ids at the image's own size; ``flip`` averages with the mirror. ``spec``:
    the input normalisation, the genotype's unless given (a SuperNet has none)."""
    x = to_input(image_bgr, spec or net.genotype.input, size).to(device)
    logits = net(x)
    if flip:
        logits = logits + net(x.flip(3)).flip(3)
    logits = F.interpolate(logits, size=image_bgr.shape[:2], mode="bilinear",
                           align_corners=False)
    return logits.argmax(1)[0].cpu().numpy().astype(label_dtype(logits.shape[1]))


def evaluate(net: SSRNet, dataset, size: tuple[int, int], flip: bool = False,
             save_preds: str | Path | None = None, device: str = "cpu",
             progress: bool = False, overwrite: bool = False, spec: InputSpec | None = None
             ) -> dict[str, Any]:
    """Run ``net`` over ``dataset``; labels are compared at their own resolution.

    ``save_preds``: a folder for labelId PNGs, built whole and swapped in at the end (an
    existing non-empty one only with ``overwrite``)."""
    net = net.eval().to(device)
    with (output_folder(save_preds, overwrite, "--save-preds") if save_preds
          else contextlib.nullcontext()) as out:
        matrix = ConfusionMatrix(len(dataset.classes))
        names = dataset.names
        for i in track(range(len(dataset)), "eval", unit="image", enabled=progress):
            image, label = dataset[i]
            pred = predict(net, image, size, flip, device, spec)
            matrix.update(pred, label)
            if out:  # Cityscapes: labelIds for the official script; other data: class ids
                cityscapes = tuple(dataset.classes) == NAMES
                write_image_in(out, f"{names[i]}_pred_{'labelIds' if cityscapes else 'ids'}"
                               ".png", TRAIN_TO_LABEL[pred] if cityscapes else pred)
    result = matrix.compute(dataset.classes)
    result["images"] = len(dataset)
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [f"{'class':<16}{'IoU':>8}"]
    for name, iou in result["per_class"].items():
        lines.append(f"{name:<16}{'-' if iou is None else f'{100 * iou:.2f}':>8}")
    lines.append(f"{'mIoU':<16}{100 * result['miou']:>8.2f}")
    lines.append(f"{'pixel acc':<16}{100 * result['pixel_acc']:>8.2f}   "
                 f"({result['images']} images)")
    return "\n".join(lines)
