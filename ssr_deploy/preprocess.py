"""Frames -> model input and model output -> labels, once for the runtime, export
verification, calibration and training alike (it lives below all of them).

A frame is an (H, W, 3) uint8 BGR image as OpenCV reads it; a batch is (N, H, W, 3).
The input's format (``spec.InputTensor``, or a genotype's ``InputSpec`` for the float
network) says the colour order, the dtype (uint8 NHWC with normalisation in the graph, or
float32 NCHW normalised here), mean and std.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ssr_deploy.imaging import resize_linear


def resize_frames(frames_bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, H, W, 3) uint8, bilinear; no copy if already that size."""
    h, w = size
    if frames_bgr.shape[1:3] == (h, w):
        return frames_bgr
    return np.stack([resize_linear(f, (h, w)) for f in frames_bgr])


class FrameFormat(Protocol):
    """What frames_to_input needs to know: a genotype's ``InputSpec`` (float32), a sidecar's
    ``InputTensor``, or a uint8 graph's ``IOFormat`` (its channel order is all a uint8 input
    takes; ``mean`` and ``std`` are read for float32 only). ``dtype`` defaults to float32."""

    color: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def frames_to_input(frames_bgr: np.ndarray, spec: FrameFormat) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR frames at the model's size -> the array its input takes.

    uint8 NHWC inputs get only a channel swap if the graph wants RGB (no float work);
    float32 NCHW inputs get (pixel / 255 - mean) / std in the model's colour order."""
    ordered = frames_bgr if spec.color == "bgr" else frames_bgr[..., ::-1]
    if getattr(spec, "dtype", "float32") == "uint8":
        return np.ascontiguousarray(ordered)
    x = ordered.astype(np.float32) * np.float32(1 / 255)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def label_dtype(num_classes: int) -> type:
    """uint8 class ids for up to 256 classes, uint16 past that (never a wrapped id)."""
    return np.uint8 if num_classes <= 256 else np.uint16


def outputs_to_labels(output: np.ndarray, kind: str, num_classes: int = 256) -> np.ndarray:
    """The model's output -> (N, H, W) labels, uint8 (uint16 past 256 classes; argmax over
    classes for logits)."""
    dtype = label_dtype(num_classes)
    if kind == "logits":
        return output.argmax(1).astype(dtype)
    return output.astype(dtype, copy=False)
