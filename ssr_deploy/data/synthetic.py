"""Procedural street scenes labelled with Cityscapes trainIds, deterministic by seed.

Sky, buildings, vegetation, a road in perspective with sidewalks and terrain, poles with
traffic signs, cars and people, drawn far to near (so near things occlude far ones), with
texture noise and a lighting change per scene. Enough structure that a segmentation
network has to learn shapes and context, not only colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssr_deploy.data.classes import TRAIN_ID
from ssr_deploy.imaging import opencv


class _Draw:
    """OpenCV's drawing where it is installed; else the same shapes filled by numpy (their
    edges rasterised a little differently: a lean runtime's synthetic frames, for timing
    and checks)."""

    @staticmethod
    def fill_poly(a: np.ndarray, pts: np.ndarray, value) -> None:
        cv2 = opencv()
        if cv2 is not None:
            cv2.fillPoly(a, [pts], value)
            return
        h = a.shape[0]
        ys = np.arange(max(0, pts[:, 1].min()), min(h - 1, pts[:, 1].max()) + 1)
        for y in ys:
            xs = []
            for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
                if y0 != y1 and min(y0, y1) <= y <= max(y0, y1):
                    xs.append(x0 + (y - y0) * (x1 - x0) / (y1 - y0))
            if xs:
                lo, hi = int(round(min(xs))), int(round(max(xs)))
                a[y, max(lo, 0):max(hi + 1, 0)] = value

    @staticmethod
    def circle(a: np.ndarray, center: tuple[int, int], radius: int, value) -> None:
        cv2 = opencv()
        if cv2 is not None:
            cv2.circle(a, center, radius, value, -1)
            return
        cx, cy = center
        y0, y1 = max(cy - radius, 0), min(cy + radius + 1, a.shape[0])
        x0, x1 = max(cx - radius, 0), min(cx + radius + 1, a.shape[1])
        if y0 >= y1 or x0 >= x1:
            return
        yy, xx = np.ogrid[y0:y1, x0:x1]
        a[y0:y1, x0:x1][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = value

    @classmethod
    def rectangle(cls, a: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], value) -> None:
        (x0, y0), (x1, y1) = p0, p1
        cls.fill_poly(a, np.asarray([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.int32), value)

    @classmethod
    def vertical_line(cls, a: np.ndarray, x: int, y0: int, y1: int, value, thickness: int
                      ) -> None:
        cv2 = opencv()
        if cv2 is not None:
            cv2.line(a, (x, y0), (x, y1), value, thickness)
            return
        half = thickness // 2
        cls.rectangle(a, (x - half, y0), (x + thickness - 1 - half, y1), value)


def _poly(img, lab, pts, color, cls) -> None:
    pts = np.asarray(pts, np.int32)
    _Draw.fill_poly(img, pts, color)
    _Draw.fill_poly(lab, pts, int(TRAIN_ID[cls]))


def _rect(img, lab, x0, y0, x1, y1, color, cls) -> None:
    _poly(img, lab, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], color, cls)


def street_scene(seed: int, height: int = 256, width: int = 512, shift: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (H, W, 3) uint8 BGR image and (H, W) uint8 trainIds. ``shift`` (pixels)
    slides the scene sideways, for video: same seed, growing shift = a moving camera."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    img = np.zeros((h, w, 3), np.uint8)
    lab = np.zeros((h, w), np.uint8)
    horizon = int(h * rng.uniform(0.38, 0.5))
    tint = rng.uniform(0.85, 1.15, 3)

    sky_top, sky_bottom = np.array([200, 150, 90]), np.array([235, 210, 170])
    ramp = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = (sky_top * (1 - ramp) + sky_bottom * ramp).astype(np.uint8)
    lab[:horizon] = TRAIN_ID["sky"]

    x = -shift % 60 - 60  # buildings and trees along the skyline
    while x < w:
        bw = int(rng.uniform(0.08, 0.2) * w)
        top = int(horizon * rng.uniform(0.05, 0.7))
        if rng.random() < 0.3:
            _Draw.circle(img, (int(x + bw / 2), top + bw // 3), bw // 2, (40, 120, 60))
            _Draw.circle(lab, (int(x + bw / 2), top + bw // 3), bw // 2,
                         int(TRAIN_ID["vegetation"]))
            _rect(img, lab, int(x + bw / 2) - 2, top + bw // 3, int(x + bw / 2) + 2, horizon,
                  (30, 60, 90), "vegetation")
        else:
            gray = int(rng.uniform(60, 170))
            _rect(img, lab, int(x), top, int(x + bw), horizon,
                  (gray, gray + int(rng.integers(-15, 15)), gray), "building")
            for wy in range(top + 6, horizon - 6, 14):  # windows: texture, same class
                for wx in range(int(x) + 4, int(x + bw) - 6, 12):
                    _Draw.rectangle(img, (wx, wy), (wx + 5, wy + 7), (gray // 2,) * 3)
        x += bw + rng.integers(0, 10)

    vanish = w / 2 + rng.uniform(-0.1, 0.1) * w
    road_half = w * rng.uniform(0.35, 0.55)
    _rect(img, lab, 0, horizon, w, h, (70, 140, 110), "terrain")
    walk = road_half * 1.35
    _poly(img, lab, [(vanish - 3, horizon), (vanish + 3, horizon), (vanish + walk, h),
                     (vanish - walk, h)], (170, 160, 175), "sidewalk")
    _poly(img, lab, [(vanish - 1, horizon), (vanish + 1, horizon), (vanish + road_half, h),
                     (vanish - road_half, h)], (95, 85, 90), "road")
    for k in range(8):  # lane marks, part of the road
        y0 = horizon + (h - horizon) * (k / 8) ** 1.5
        y1 = horizon + (h - horizon) * ((k + 0.5) / 8) ** 1.5
        _Draw.vertical_line(img, int(vanish), int(y0), int(y1), (220, 220, 220),
                            max(1, int((y1 - horizon) / 40)))

    objects = []  # (depth 0..1, kind); drawn far to near
    for _ in range(rng.integers(2, 6)):
        objects.append((rng.uniform(0.1, 1.0), "car"))
    for _ in range(rng.integers(1, 5)):
        objects.append((rng.uniform(0.1, 1.0), "person"))
    for _ in range(rng.integers(1, 4)):
        objects.append((rng.uniform(0.1, 1.0), "pole"))
    for depth, kind in sorted(objects):
        y = horizon + (h - horizon) * depth
        scale = 0.1 + depth
        side = rng.choice([-1, 1])
        if kind == "car":
            cx = vanish + side * road_half * depth * rng.uniform(0.1, 0.7) - shift * depth
            cw, ch = 0.22 * w * scale / 1.1, 0.1 * h * scale
            color = tuple(int(c) for c in rng.integers(20, 230, 3))
            _rect(img, lab, int(cx - cw / 2), int(y - ch), int(cx + cw / 2), int(y), color, "car")
            _rect(img, lab, int(cx - cw / 3), int(y - 1.5 * ch), int(cx + cw / 3), int(y - ch),
                  tuple(c // 2 for c in color), "car")
        elif kind == "person":
            cx = vanish + side * walk * depth * rng.uniform(0.8, 1.2) - shift * depth
            ph, pw = 0.25 * h * scale, 0.03 * w * scale
            _rect(img, lab, int(cx - pw), int(y - ph * 0.8), int(cx + pw), int(y),
                  tuple(int(c) for c in rng.integers(30, 200, 3)), "person")
            _Draw.circle(img, (int(cx), int(y - ph * 0.88)), max(1, int(pw)), (120, 150, 200))
            _Draw.circle(lab, (int(cx), int(y - ph * 0.88)), max(1, int(pw)),
                         int(TRAIN_ID["person"]))
        else:
            cx = vanish + side * walk * depth * 1.1 - shift * depth
            ph = 0.45 * h * scale
            _rect(img, lab, int(cx - 2 * scale), int(y - ph), int(cx + 2 * scale), int(y),
                  (150, 150, 150), "pole")
            s = max(2, int(0.03 * w * scale))
            _rect(img, lab, int(cx - s), int(y - ph - s), int(cx + s), int(y - ph + s),
                  (0, 200, 220), "traffic sign")

    noise = rng.normal(0, rng.uniform(3, 10), img.shape)
    light = rng.uniform(0.6, 1.3) * tint
    return np.clip((img.astype(np.float32) + noise) * light, 0, 255).astype(np.uint8), lab


def render_video(path: str | Path, frames: int, size: tuple[int, int] = (256, 512),
                 seed: int = 0, fps: float = 30.0) -> Path:
    """A moving street scene (the camera slides sideways) as an mp4/avi, published only once
    it reads back whole."""
    from ssr_deploy.media import VideoOutput

    video = VideoOutput(path, fps)
    try:
        for k in range(frames):
            video.write(street_scene(seed, *size, shift=2.0 * k)[0])
    except BaseException:
        video.close(keep=False)
        raise
    return video.close()


def street_frames(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 BGR synthetic street scenes (``data.synthetic.street_scene``), so
    verification and benchmarks see realistic activations, not only noise."""
    return np.stack([street_scene(seed * 1000 + k, height, width)[0] for k in range(n)])
