"""Joint image/label transforms with OpenCV. Geometry moves both (image bilinear, label
nearest, padding 0 / 255 = ignore); colour touches the image only. Each call takes a numpy
Generator, so an item's augmentation is a function of (seed, epoch, index): reproducible,
and identical after ``--resume``."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from ssr_deploy.metrics import IGNORE

Pair = tuple[np.ndarray, np.ndarray]
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], Pair]


def resize(size: tuple[int, int]) -> Transform:
    h, w = size

    def apply(image, label, rng):
        if image.shape[:2] == (h, w):
            return image, label
        return (cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
                cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))
    return apply


def random_scale(low: float, high: float) -> Transform:
    def apply(image, label, rng):
        s = rng.uniform(low, high)
        h, w = max(1, round(image.shape[0] * s)), max(1, round(image.shape[1] * s))
        return resize((h, w))(image, label, rng)
    return apply


def random_crop(size: tuple[int, int]) -> Transform:
    """Crop ``size``, padding first (image 0, label ignore) where the pair is smaller."""
    h, w = size

    def apply(image, label, rng):
        ph, pw = max(h - image.shape[0], 0), max(w - image.shape[1], 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE)
        y = int(rng.integers(0, image.shape[0] - h + 1))
        x = int(rng.integers(0, image.shape[1] - w + 1))
        return image[y:y + h, x:x + w], label[y:y + h, x:x + w]
    return apply


def hflip(p: float = 0.5) -> Transform:
    def apply(image, label, rng):
        if rng.random() < p:
            return image[:, ::-1], label[:, ::-1]
        return image, label
    return apply


def translate(max_px: int = 2) -> Transform:
    """Shift by up to ``max_px`` pixels each way (the paper's 0-2 px translation)."""
    def apply(image, label, rng):
        dx, dy = (int(v) for v in rng.integers(-max_px, max_px + 1, 2))
        if dx == dy == 0:
            return image, label
        m = np.float32([[1, 0, dx], [0, 1, dy]])
        size = (image.shape[1], image.shape[0])
        return (cv2.warpAffine(image, m, size, flags=cv2.INTER_NEAREST, borderValue=0),
                cv2.warpAffine(label, m, size, flags=cv2.INTER_NEAREST, borderValue=IGNORE))
    return apply


def color_jitter(brightness: float = 0.3, contrast: float = 0.3, saturation: float = 0.3
                 ) -> Transform:
    def apply(image, label, rng):
        x = image.astype(np.float32)
        x = x * rng.uniform(1 - brightness, 1 + brightness)
        mean = x.mean()
        x = (x - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
        gray = x.mean(2, keepdims=True)
        x = (x - gray) * rng.uniform(1 - saturation, 1 + saturation) + gray
        return np.clip(x, 0, 255).astype(np.uint8), label
    return apply


def compose(*transforms: Transform) -> Transform:
    def apply(image, label, rng):
        for t in transforms:
            image, label = t(image, label, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
    return apply


def preset(name: str, size: tuple[int, int]) -> Transform:
    """``paper``: resize, flip, 0-2 px translation (Ye et al.); ``modern``: random scale
    0.5-2.0, crop, flip, colour jitter; ``eval``: resize."""
    if name == "paper":
        return compose(resize(size), hflip(), translate(2))
    if name == "modern":
        return compose(resize(size), random_scale(0.5, 2.0), random_crop(size), hflip(),
                       color_jitter())
    if name == "eval":
        return compose(resize(size))
    from ssr_deploy.errors import SsrDeployError

    raise SsrDeployError(f"--preset {name!r} is not known; use paper or modern")
