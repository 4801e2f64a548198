"""INT8 calibration data: images from a folder, preprocessed exactly as the runtime does,
in fixed-size batches (``precision.py`` feeds them to onnxruntime's calibrator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.media import find_images, read_image
from ssr_deploy.preprocess import FrameFormat, frames_to_input, resize_frames


class CalibrationBatches:
    """Batches of ``batch`` images at ``size`` = (H, W), in the layout and dtype the model's
    input metadata says. A last partial batch is dropped (TensorRT wants full batches)."""

    def __init__(self, folder: str | Path, input_spec: FrameFormat, size: tuple[int, int],
                 batch: int = 8, limit: int | None = 500) -> None:
        self.paths = find_images(folder, limit)
        if len(self.paths) < batch:
            raise SsrDeployError(f"{len(self.paths)} calibration images under {folder} are fewer "
                                 f"than one batch of {batch}; add images or lower --calib-batch")
        self.spec, self.size, self.batch = input_spec, size, batch

    def __len__(self) -> int:
        return len(self.paths) // self.batch

    @property
    def shape(self) -> tuple[int, ...]:
        h, w = self.size
        return (self.batch, h, w, 3) if self.spec.dtype == "uint8" else (self.batch, 3, h, w)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.spec.dtype).itemsize

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        frames = [read_image(p) for p in self.paths[i * self.batch:(i + 1) * self.batch]]
        return frames_to_input(np.stack([resize_frames(f[None], self.size)[0]
                                         for f in frames]), self.spec)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

