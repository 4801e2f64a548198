"""ssr-deploy inside an application: frames arrive on a queue (a camera thread, a network
feed ...), a worker thread segments them, results go to a callback, shutdown is clean.

    python examples/embed_app.py --model model.onnx [--video drive.mp4] [--frames 100]
    python examples/embed_app.py --model model.fp16.onnx --backend tensorrt

Without --video it feeds synthetic street frames. Works with .engine, .onnx or .pt. Ship the
ONNX: with --backend tensorrt its engine is built for the user's GPU at the first start and
found in the engine cache afterwards (rebuilt, with a line saying why, when the GPU or the
TensorRT release changes).
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from ssr_deploy import Segmenter

STOP = object()


class SegmentationWorker(threading.Thread):
    """Takes (frame_id, BGR frame) from ``inbox``, calls ``on_result(frame_id, labels)``."""

    def __init__(self, segmenter: Segmenter, inbox: queue.Queue,
                 on_result: Callable[[int, np.ndarray], None]) -> None:
        super().__init__(name="segmentation", daemon=True)
        self.segmenter, self.inbox, self.on_result = segmenter, inbox, on_result
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while (item := self.inbox.get()) is not STOP:
                frame_id, frame = item
                self.on_result(frame_id, self.segmenter(frame))
        except BaseException as e:  # surfaced by stop(); the app decides what to do
            self.error = e

    def stop(self) -> None:
        self.inbox.put(STOP)
        self.join()
        if self.error:
            raise self.error


def frames(video: str | None, count: int):
    if video:
        import cv2

        capture = cv2.VideoCapture(video)
        for _ in range(count):
            ok, frame = capture.read()
            if not ok:
                break
            yield frame
        capture.release()
    else:
        from ssr_deploy.data.synthetic import street_frames

        yield from street_frames(count, 360, 640, seed=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--video")
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--backend", help="tensorrt: build (once) and run the ONNX's engine")
    args = parser.parse_args()

    shares: dict[int, np.ndarray] = {}

    def on_result(frame_id: int, labels: np.ndarray) -> None:  # your app's logic goes here
        shares[frame_id] = np.bincount(labels.ravel(), minlength=256)[:19] / labels.size

    with Segmenter.load(args.model, backend=args.backend) as seg:
        inbox: queue.Queue = queue.Queue(maxsize=8)  # bounded: a slow model slows the feed
        worker = SegmentationWorker(seg, inbox, on_result)
        worker.start()
        start = time.perf_counter()
        for i, frame in enumerate(frames(args.video, args.frames)):
            inbox.put((i, frame))
        worker.stop()
        seconds = time.perf_counter() - start
        mean = np.mean(list(shares.values()), axis=0)
        top = sorted(range(len(mean)), key=lambda c: -mean[c])[:3]
        print(f"{len(shares)} frames in {seconds:.2f} s ({len(shares) / seconds:.1f} FPS); "
              "largest classes: " + ", ".join(f"{seg.classes[c]} {100 * mean[c]:.0f}%"
                                              for c in top))


if __name__ == "__main__":
    main()
