"""Real-time video: decode -> infer -> overlay + encode, three threads joined by bounded
queues, so throughput is set by the slowest stage and memory stays flat.

Sources (``sources.py``): a video file, a folder of images, a camera index ("0") or a network
stream (rtsp://, http(s):// ...); a live one is read newest-frame-first, dropping what
inference cannot keep up with. Sinks: an .mp4/.avi file (written to a temp name, read back
and renamed when closed: Ctrl-C still leaves a playable file, a full disk leaves the previous
file) or a folder of PNGs named as the source's images were (built beside its name and
swapped in whole).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.imaging import require_opencv
from ssr_deploy.media import (
    VideoOutput,
    write_image_in,
)
from ssr_deploy.runs import NewFolder
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.runtime.sources import Source, open_source

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
    dropped: int = 0  # a live source's frames inference could not keep up with
    reconnects: int = 0


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

    def write(self, frame: np.ndarray, name: str | None = None) -> None:
        """A frame; into a folder as ``name`` (a source image's, as .png) or numbered."""
        if self.video:
            self.video.write(frame)
        else:
            stem = Path(name).stem if name else f"{self.count:06d}"
            write_image_in(self.folder.building, f"{stem}.png", frame)
        self.count += 1

    def close(self, keep: bool = True) -> None:
        """Finish the output; ``keep=False`` (a failed run) removes it instead of publishing."""
        if self.video:
            self.video.close(keep)
        elif keep:
            self.folder.publish()
        else:
            self.folder.discard()


def run_video(segmenter: Segmenter, source: str | Source, output: str,
              max_frames: int | None = None, alpha: float = 0.5, draw_fps: bool = False,
              show: bool = False, queue_size: int = 4,
              on_frame: Callable[[int, float], None] | None = None,
              overwrite: bool = False) -> VideoStats:
    """Segment every frame of ``source`` (a path, camera index or URL, or an opened
    ``Source``) into ``output``; returns counts and throughput. A live source's frames that
    inference cannot keep up with are dropped (counted), never queued.

    ``on_frame(done, fps)`` is called after each written frame (for a progress bar)."""
    src = source if isinstance(source, Source) else open_source(source, max_frames)
    try:
        return _run(segmenter, src, output, max_frames, alpha, draw_fps, show, queue_size,
                    on_frame, overwrite)
    finally:
        src.close()


def _run(segmenter: Segmenter, src: Source, output: str, max_frames: int | None,
         alpha: float, draw_fps: bool, show: bool, queue_size: int,
         on_frame: Callable[[int, float], None] | None, overwrite: bool) -> VideoStats:
    cv2 = require_opencv("video")
    frames, fps, expected = src.frames, src.fps, src.expected
    names = iter(src.names or ())
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
            if src.live:  # straight from the newest-frame reader: nothing waits in a queue
                for i, frame in enumerate(frames):
                    if (max_frames and i >= max_frames) or stop.is_set():
                        return
                    held.append(frame)
                    yield frame
                return
            while not stop.is_set():  # a consumer that failed stops the decoder: no _DONE
                try:
                    frame = decoded.get(timeout=0.1)
                except queue.Empty:
                    continue
                if frame is _DONE:
                    return
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

    workers = [threading.Thread(target=infer, daemon=True, name="infer")]
    if not src.live:
        workers.append(threading.Thread(target=decode, daemon=True, name="decode"))
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
            sink.write(vis, next(names, None))
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
        raise SsrDeployError(f"no frame could be read from {src.given} (an empty or unreadable "
                             f"video, or a stream that sent none); nothing was written to "
                             f"{output}")
    seconds = time.perf_counter() - start
    return VideoStats(sink.count, seconds, sink.count / max(seconds, 1e-9), interrupted,
                      str(sink.path), expected, src.counts["dropped"], src.counts["reconnects"])
