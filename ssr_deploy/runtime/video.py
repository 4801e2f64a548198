"""Real-time video: decode -> infer -> overlay + encode, three threads joined by bounded
queues, so throughput is set by the slowest stage and memory stays flat.

Sources: a video file, a camera index ("0") or a folder of images. Sinks: an .mp4/.avi
file (written to a temp name, read back and renamed when closed: Ctrl-C still leaves a
playable file, a full disk leaves the previous file) or a folder of PNGs (built beside its
name and swapped in whole).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import check_input_file
from ssr_deploy.limits import MAX_SIDE
from ssr_deploy.media import (
    IMAGE_SUFFIXES,
    VideoOutput,
    image_size,
    read_image,
    write_image_in,
)
from ssr_deploy.runs import NewFolder
from ssr_deploy.runtime.segmenter import Segmenter

VIDEO_SUFFIXES = tuple(VideoOutput.FOURCC)
_DONE = object()


@dataclass
class VideoStats:
    frames: int
    seconds: float
    fps: float
    interrupted: bool
    output: str
    expected: int | None = None  # the frames the source's header gives, when it does


MAX_CAMERA = 1023


def open_source(source: str, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float,
                                                                       int | None]:
    """(frames, fps, frame count or None) for a file, a camera index or an image folder."""
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SsrDeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        images = images[:max_frames] if max_frames else images
        return (read_image(p) for p in images), 30.0, len(images)
    if source.isdigit():
        if int(source) > MAX_CAMERA:
            raise SsrDeployError(f"camera {source}: a camera index is 0 to {MAX_CAMERA}; give "
                                 "a video file, a folder of images or a camera index")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # we say it in one line
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise SsrDeployError(f"camera {source} does not open (no such device, or in use)")
    else:
        check_input_file(path, "video source")
        size = image_size(path)  # an image given as the source: its header, not its pixels
        if size and max(size) > MAX_SIDE:
            raise SsrDeployError(f"{source} is {size[0]}x{size[1]} pixels; frames are read up "
                                 f"to {MAX_SIDE} a side: resize it first")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # our one line says it
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise SsrDeployError(f"cannot read video {source}: OpenCV cannot decode it (corrupt, "
                                 "or a codec this OpenCV lacks)")
    width, height = (int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH,
                                                    cv2.CAP_PROP_FRAME_HEIGHT))
    if max(width, height) > MAX_SIDE:
        capture.release()
        raise SsrDeployError(f"{source} has {width}x{height} frames; frames are read up to "
                             f"{MAX_SIDE} a side: resize it first")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    if count and max_frames:
        count = min(count, max_frames)

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return frames(), fps if 1 <= fps <= 240 else 30.0, count


class _Sink:
    """An mp4/avi (media.VideoOutput: temp name, read back, then renamed) or a folder of numbered
    PNGs (runs.NewFolder: built beside it, swapped in whole)."""

    def __init__(self, output: str, fps: float, overwrite: bool = False) -> None:
        self.path = Path(output)
        self.count = 0
        self.video = self.folder = None
        if self.path.suffix.lower() in VIDEO_SUFFIXES:
            self.video = VideoOutput(self.path, fps)
        elif self.path.suffix:
            raise SsrDeployError(f"output {output}: give a video file "
                                 f"({', '.join(VIDEO_SUFFIXES)}) or a folder for PNGs")
        else:
            self.folder = NewFolder(self.path, overwrite, "-o")

    def write(self, frame: np.ndarray) -> None:
        if self.video:
            self.video.write(frame)
        else:
            write_image_in(self.folder.building, f"{self.count:06d}.png", frame)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Finish the output; ``keep=False`` (a failed run) removes it instead of publishing."""
        if self.video:
            self.video.close(keep)
        elif keep:
            self.folder.publish()
        else:
            self.folder.discard()


def run_video(segmenter: Segmenter, source: str, output: str, max_frames: int | None = None,
              alpha: float = 0.5, draw_fps: bool = False, show: bool = False,
              queue_size: int = 4, on_frame: Callable[[int, float], None] | None = None,
              overwrite: bool = False) -> VideoStats:
    """Segment every frame of ``source`` into ``output``; returns counts and throughput.

    ``on_frame(done, fps)`` is called after each written frame (for a progress bar)."""
    frames, fps, expected = open_source(source, max_frames)
    sink = _Sink(output, fps, overwrite)
    decoded: queue.Queue = queue.Queue(queue_size)
    inferred: queue.Queue = queue.Queue(queue_size)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for i, frame in enumerate(frames):
                if (max_frames and i >= max_frames) or not put(decoded, frame):
                    break
        except BaseException as e:
            errors.append(e)
        finally:
            put(decoded, _DONE)

    def infer() -> None:
        held: list[np.ndarray] = []

        def source() -> Iterator[np.ndarray]:
            while (frame := decoded.get()) is not _DONE:
                held.append(frame)
                yield frame

        try:
            for labels in segmenter.predict_stream(source()):
                if not put(inferred, (held.pop(0), labels)):
                    break
        except BaseException as e:  # reported by the consumer, which alone sets ``stop``
            errors.append(e)
        finally:
            put(inferred, _DONE)

    workers = [threading.Thread(target=decode, daemon=True, name="decode"),
               threading.Thread(target=infer, daemon=True, name="infer")]
    for w in workers:
        w.start()
    start, interrupted, failed = time.perf_counter(), False, True
    try:
        while (item := inferred.get()) is not _DONE:
            frame, labels = item
            vis = segmenter.overlay(frame, labels, alpha)
            rate = sink.count / max(time.perf_counter() - start, 1e-9)
            if draw_fps:
                cv2.putText(vis, f"{rate:.1f} FPS", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.9,
                            (255, 255, 255), 2, cv2.LINE_AA)
            sink.write(vis)
            if show:
                cv2.imshow("ssr-deploy", vis)
                if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                    break
            if on_frame:
                on_frame(sink.count, sink.count / (time.perf_counter() - start))
        failed = False
    except KeyboardInterrupt:
        interrupted, failed = True, False
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=5)
        sink.close(keep=not errors and not failed and sink.count > 0)
        if show:
            cv2.destroyAllWindows()
    if errors and not isinstance(errors[0], KeyboardInterrupt):
        raise errors[0]
    if sink.count == 0 and not interrupted:
        raise SsrDeployError(f"no frame could be read from {source} (an empty or unreadable "
                             f"video); nothing was written to {output}")
    seconds = time.perf_counter() - start
    return VideoStats(sink.count, seconds, sink.count / max(seconds, 1e-9), interrupted,
                      str(sink.path), expected)
