"""``Segmenter``: frames in, label maps out, whatever runs underneath.

    seg = Segmenter.load("model.engine")     # or .onnx / .pt
    labels = seg(frame_bgr)                  # (H, W) uint8 class ids at the frame's size
    vis = seg.overlay(frame_bgr, labels)

Pre- and post-processing live here once; backends only move arrays.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.backends import Backend, open_backend
from ssr_deploy.errors import UsageError, UsageTypeError
from ssr_deploy.imaging import blend, resize_linear, resize_nearest, to_bgr
from ssr_deploy.preprocess import frames_to_input, label_dtype, outputs_to_labels


def as_bgr(frame: Any) -> np.ndarray:
    """Any common image array -> (H, W, 3) uint8 BGR; a clear error for what is not one.

    Grayscale and BGRA are converted; 16-bit images are scaled to 8 bits (>> 8)."""
    if not isinstance(frame, np.ndarray):
        raise UsageTypeError(f"a frame is a numpy array (H, W, 3) uint8 BGR as cv2.imread returns "
                             f"it, not {type(frame).__name__}")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise UsageError(f"frames of dtype {frame.dtype} are ambiguous (0-1 or 0-255?); "
                             "convert to uint8 first, e.g. (frame * 255).clip(0, 255)"
                             ".astype(np.uint8)")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 4)):
        frame = to_bgr(frame)
    elif not (frame.ndim == 3 and frame.shape[2] == 3):
        raise UsageError(f"frame shape {frame.shape} is not an image; expected (H, W), "
                             "(H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA")
    if 0 in frame.shape[:2]:
        raise UsageError(f"frame of shape {frame.shape} is empty")
    return frame


class Segmenter:
    """A loaded model plus the pre/post-processing its metadata asks for.

    ``letterbox`` keeps the frame's aspect ratio (pads instead of stretching)."""

    def __init__(self, backend: Backend, letterbox: bool = False) -> None:
        self.backend = backend
        self.closed = False
        self._calls = 0  # inferences running now; close() waits for them
        self._idle = threading.Condition()
        self.spec = backend.spec
        self.size = self.spec.input.size
        self.classes = list(self.spec.classes)
        self.palette_bgr = np.asarray(self.spec.palette, np.uint8)[:, ::-1].copy()
        # class id -> BGR for every id the label dtype holds; ids past the palette: black
        self._lut = np.zeros((np.iinfo(label_dtype(len(self.classes))).max + 1, 3), np.uint8)
        self._lut[:len(self.palette_bgr)] = self.palette_bgr
        self.letterbox = letterbox
        self.max_batch = self.spec.batch_range[1]
        self.fixed_batch = self.spec.fixed_batch

    @property
    def metadata(self) -> dict[str, Any]:
        """The model's sidecar as written (``spec`` is the typed view)."""
        return self.spec.to_dict()

    @classmethod
    def load(cls, path: str | Path, backend: str | None = None, device: str | None = None,
             letterbox: bool = False, **options: Any) -> Segmenter:
        """Open ``path`` (.engine/.plan TensorRT, .onnx onnxruntime, .pt PyTorch) on ``device``
        (cpu, cuda, cuda:N); ``backend`` overrides the choice; ``options`` are the backend's
        (OnnxRuntimeOptions: threads, io_binding, tensorrt, profile; TensorRTOptions:
        cuda_graph; TorchOptions: size, fp16, channels_last, cuda_graphs, compile)."""
        return cls(open_backend(path, backend, device, **options), letterbox=letterbox)

    # ---- inference ----------------------------------------------------------------
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.predict_batch([frame])[0]

    def predict_batch(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Frames of any sizes -> one (H, W) label map per frame, at its own size: uint8 class
        ids (uint16 for a model of more than 256 classes)."""
        frames = [as_bgr(f) for f in frames]
        labels: list[np.ndarray] = []
        with self._running():
            for start in range(0, len(frames), self.max_batch):
                chunk = frames[start:start + self.max_batch]
                batch, boxes = self._prepare(chunk)
                out = outputs_to_labels(self.backend.infer(batch), self.spec.output.kind,
                                        len(self.classes))[:len(chunk)]  # less the padding
                labels += [self._unfit(lab, box, f.shape[:2])
                           for lab, box, f in zip(out, boxes, chunk, strict=True)]
        return labels

    def predict_stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Labels for a stream of frames, in order, one frame per inference. On TensorRT the
        copy of frame i+1 overlaps the compute of frame i (double buffering)."""
        self._check_open()
        pending: deque = deque()

        def inputs() -> Iterator[np.ndarray]:
            for frame in frames:
                frame = as_bgr(frame)
                batch, boxes = self._prepare([frame])
                pending.append((boxes[0], frame.shape[:2]))
                yield batch

        outputs = self.backend.infer_stream(inputs())
        while True:
            with self._running():  # a close() between two frames ends the stream cleanly
                out = next(outputs, None)
            if out is None:
                return
            box, size = pending.popleft()
            labels = outputs_to_labels(out, self.spec.output.kind, len(self.classes))[0]
            yield self._unfit(labels, box, size)

    def _prepare(self, frames: list[np.ndarray]) -> tuple[np.ndarray, list[tuple]]:
        """BGR frames -> the model's input batch and each frame's content box."""
        fitted, boxes = zip(*(self._fit(f) for f in frames), strict=True)
        fitted = list(fitted)
        if self.fixed_batch:  # a static-batch model: pad with the last frame
            fitted += fitted[-1:] * (self.fixed_batch - len(fitted))
        return frames_to_input(np.stack(fitted), self.spec.input), list(boxes)

    def _fit(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
        """Resize (or letterbox) to the model size; return the image and the content box."""
        h, w = self.size
        fh, fw = frame.shape[:2]
        if (fh, fw) == (h, w):
            return frame, (0, 0, h, w)
        if not self.letterbox:
            return resize_linear(frame, (h, w)), (0, 0, h, w)
        scale = min(h / fh, w / fw)
        nh, nw = max(1, round(fh * scale)), max(1, round(fw * scale))
        top, left = (h - nh) // 2, (w - nw) // 2
        canvas = np.zeros((h, w, 3), np.uint8)
        canvas[top:top + nh, left:left + nw] = resize_linear(frame, (nh, nw))
        return canvas, (top, left, nh, nw)

    @staticmethod
    def _unfit(labels: np.ndarray, box: tuple[int, int, int, int],
               frame_size: tuple[int, int]) -> np.ndarray:
        top, left, nh, nw = box
        labels = labels[top:top + nh, left:left + nw]
        if labels.shape == tuple(frame_size):
            return np.ascontiguousarray(labels)
        return resize_nearest(labels, tuple(frame_size))

    # ---- visualisation ------------------------------------------------------------
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) class ids -> (H, W, 3) uint8 BGR colours from the palette (ids past it: black)."""
        return self._lut[self._check_labels(labels)]

    def _check_labels(self, labels: Any) -> np.ndarray:
        """Class ids as this model gives them: integers from 0 to the label dtype's largest."""
        if not isinstance(labels, np.ndarray) or not np.issubdtype(labels.dtype, np.integer):
            raise UsageTypeError(f"labels are class ids, an integer numpy array (as the "
                                 f"Segmenter returns them), not "
                                 f"{getattr(labels, 'dtype', type(labels).__name__)}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(self._lut)):
            raise UsageError(f"labels hold {int(labels.min())} to {int(labels.max())}; class ids "
                             f"of this model are 0 to {len(self.classes) - 1}")
        return labels

    def overlay(self, frame: np.ndarray, labels: np.ndarray | None = None,
                alpha: float = 0.5) -> np.ndarray:
        """The frame blended with its colourised labels (computed if not given)."""
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha={alpha}: the overlay's weight is between 0 and 1")
        frame = as_bgr(frame)
        labels = self(frame) if labels is None else self._check_labels(labels)
        if labels.shape != frame.shape[:2]:
            raise UsageError(f"labels {labels.shape} do not match the frame "
                                 f"{frame.shape[:2]}")
        return blend(frame, self.colorize(labels), alpha)

    # ---- resources ----------------------------------------------------------------
    def close(self) -> None:
        """Free the model once the inferences running on other threads have finished; calls
        after it raise a one-line UsageError."""
        with self._idle:
            if self.closed:
                return
            self.closed = True
            self._idle.wait_for(lambda: self._calls == 0)
        self.backend.close()

    def _check_open(self) -> None:
        if self.closed:
            raise UsageError("this Segmenter was closed; load the model again with "
                             "Segmenter.load(...) (or use it inside its `with` block)")

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        with self._idle:
            self._check_open()
            self._calls += 1
        try:
            yield
        finally:
            with self._idle:
                self._calls -= 1
                self._idle.notify_all()

    def __copy__(self) -> Segmenter:
        raise UsageTypeError("a Segmenter holds a loaded model and is not copied: share it "
                             "(it is safe across threads), or load another with "
                             "Segmenter.load(...)")

    def __deepcopy__(self, memo: dict) -> Segmenter:
        return self.__copy__()

    def __reduce__(self):
        raise UsageTypeError("a Segmenter holds a loaded model and cannot be pickled: send the "
                             "model's path and call Segmenter.load(...) where it is used")

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

