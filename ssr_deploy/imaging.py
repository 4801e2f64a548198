"""Frames in memory, with or without OpenCV: resizing, colour conversion and blending as the
runtime needs them. With OpenCV (``pip install 'ssr-deploy[video]'``: files, cameras and
streams) its functions run; in a lean install (numpy and a backend only) numpy computes the
same: bilinear resizing with OpenCV's sampling and its fixed-point arithmetic (its vector
path's rounding, so a frame's pixels match OpenCV's but for the last few of a row that
OpenCV's scalar tail rounds otherwise; a 2x downscale is OpenCV's exact 2x2 average), nearest
resizing exactly as OpenCV does, and the overlay's blend rounded as OpenCV rounds.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
ONE = 1 << COEF_BITS


@functools.cache
def opencv() -> Any | None:
    """The cv2 module, or None in a lean install."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def require_opencv(what: str) -> Any:
    """cv2, or one line naming the extra that brings it."""
    cv2 = opencv()
    if cv2 is None:
        raise SsrDeployError(f"{what} needs OpenCV, which a lean runtime install leaves out: "
                             "pip install 'ssr-deploy[video]' (or opencv-python-headless)")
    return cv2


def resize_linear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) uint8 -> (h, w[, C]) as ``cv2.resize(..., INTER_LINEAR)``."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    cv2 = opencv()
    if cv2 is not None:
        out = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
        return out if out.ndim == image.ndim else out[..., None]
    src = image if image.ndim == 3 else image[..., None]
    sh, sw = src.shape[:2]
    if sh == 2 * h and sw == 2 * w:  # OpenCV averages 2x2 blocks here
        s = src.astype(np.int32)
        out = (s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2] + 2) >> 2
    else:
        x0, x1, a0, a1 = _taps(sw, w)
        y0, y1, b0, b1 = _taps(sh, h)
        s = src.astype(np.int32)
        rows = s[:, x0] * a0[None, :, None] + s[:, x1] * a1[None, :, None]  # x 2^11
        top = (rows[y0] >> 4) * b0[:, None, None] >> 16  # OpenCV's vector path
        bottom = (rows[y1] >> 4) * b1[:, None, None] >> 16
        out = (top + bottom + 2) >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out if image.ndim == 3 else out[..., 0]


def _taps(src: int, dst: int) -> tuple[np.ndarray, ...]:
    """Per output pixel along one axis: its two source pixels and their 11-bit weights,
    computed as OpenCV computes them (float32 positions, edges clamped)."""
    scale = src / dst
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    f = f - i.astype(np.float32)
    low = i < 0
    f[low], i[low] = 0, 0
    high = i >= src - 1
    f[high], i[high] = 0, src - 1
    w1 = np.rint(f * np.float32(ONE)).astype(np.int32)
    w0 = np.rint((np.float32(1) - f) * np.float32(ONE)).astype(np.int32)
    return i, np.minimum(i + 1, src - 1), w0, w1


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) -> (h, w) as ``cv2.resize(..., INTER_NEAREST)`` (exactly)."""
    h, w = size
    if labels.shape[:2] == (h, w):
        return labels
    cv2 = opencv()
    if cv2 is not None and labels.dtype in (np.uint8, np.uint16, np.int16, np.int32,
                                            np.float32):
        return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
    sh, sw = labels.shape[:2]
    rows = np.minimum(np.floor(np.arange(h) * (sh / h)).astype(np.int64), sh - 1)
    cols = np.minimum(np.floor(np.arange(w) * (sw / w)).astype(np.int64), sw - 1)
    return labels[rows[:, None], cols[None, :]]


def blend(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """``a * (1 - alpha) + b * alpha`` in uint8, as ``cv2.addWeighted`` rounds it."""
    cv2 = opencv()
    if cv2 is not None:
        return cv2.addWeighted(a, 1 - alpha, b, alpha, 0)
    mixed = a.astype(np.float32) * np.float32(1 - alpha) + b.astype(np.float32) * np.float32(
        alpha)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """A gray (H, W) or (H, W, 1), or BGRA (H, W, 4) frame as (H, W, 3) BGR."""
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.shape[-1] == 1:
        return np.repeat(frame, 3, axis=-1)
    if frame.shape[-1] == 4:
        return np.ascontiguousarray(frame[..., :3])
    return frame
