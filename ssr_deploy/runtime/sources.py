"""Where `video` frames come from: a video file, a folder of images, a camera index, or a
network stream (``rtsp://``, ``http(s)://``, ``rtmp://``, ``udp://``, ``srt://`` ...) that
OpenCV's FFmpeg opens.

A live source (a camera, a stream without a known length) is read on a thread of its own
that keeps only the newest frame: when inference is slower than the source, older frames are
dropped (and counted), never queued, so the output stays live. A stream that drops is opened
again with a growing pause (0.5, 1, 2, 4 ... s; each said in one line), up to ``reconnects``
times in a row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.imaging import require_opencv
from ssr_deploy.io import check_input_file
from ssr_deploy.limits import MAX_SIDE
from ssr_deploy.media import IMAGE_SUFFIXES, image_size, read_image

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
MAX_CAMERA = 1023
OPEN_TIMEOUT_MS = 10_000


@dataclass
class Source:
    """Frames and what is known of them. ``names``: a folder's file names, in frame order;
    ``live``: newest frames only (see the module); ``dropped``/``reconnects`` count as it runs."""

    given: str
    frames: Iterator[np.ndarray]
    fps: float
    expected: int | None
    live: bool = False
    names: list[str] | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"dropped": 0, "reconnects": 0})
    close: Callable[[], None] = lambda: None


def is_stream(source: str) -> bool:
    return urlsplit(source).scheme.lower() in STREAM_SCHEMES and "://" in source


def open_source(source: str, max_frames: int | None = None, reconnects: int = 5,
                note: Callable[[str], None] = lambda line: None) -> Source:
    """The frames of ``source`` (see the module); one line when it cannot be opened."""
    if is_stream(source):
        return _capture_source(source, source, max_frames, reconnects, note)
    path = Path(source)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SsrDeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {source}")
        images = images[:max_frames] if max_frames else images
        for image in images:
            check_input_file(image, "image")
        return Source(source, (read_image(p) for p in images), 30.0, len(images),
                      names=[p.name for p in images])
    if source.isdigit():
        if int(source) > MAX_CAMERA:
            raise SsrDeployError(f"camera {source}: a camera index is 0 to {MAX_CAMERA}; give "
                                 "a video file, a folder of images, a stream URL or a camera "
                                 "index")
        return _capture_source(source, int(source), max_frames, 0, note)
    if "://" in source:
        scheme = urlsplit(source).scheme
        raise SsrDeployError(f"{source}: {scheme}:// is not a stream OpenCV opens here; give "
                             f"one of {', '.join(s + '://' for s in STREAM_SCHEMES)}, a file, "
                             "a folder or a camera index")
    check_input_file(path, "video source")
    size = image_size(path)  # an image given as the source: its header, not its pixels
    if size and max(size) > MAX_SIDE:
        raise SsrDeployError(f"{source} is {size[0]}x{size[1]} pixels; frames are read up "
                             f"to {MAX_SIDE} a side: resize it first")
    return _capture_source(source, str(path), max_frames, 0, note)


def _open(target: str | int, given: str):
    """A cv2.VideoCapture of ``target``, opened, or one line saying why not."""
    cv2 = require_opencv(f"reading {given}")

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if isinstance(target, int):
        capture = cv2.VideoCapture(target)
        if not capture.isOpened():
            raise SsrDeployError(f"camera {given} does not open (no such device, or in use)")
        return capture
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS]
    capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    if not capture.isOpened():
        if is_stream(given):
            raise SsrDeployError(f"cannot open the stream {given}: OpenCV (FFmpeg) could not "
                                 f"connect to it or decode it within {OPEN_TIMEOUT_MS // 1000} s "
                                 "(check the URL and that the stream is up)")
        raise SsrDeployError(f"cannot read video {given}: OpenCV cannot decode it (corrupt, "
                             "or a codec this OpenCV lacks)")
    return capture


def _capture_source(given: str, target: str | int, max_frames: int | None, reconnects: int,
                    note: Callable[[str], None]) -> Source:
    cv2 = require_opencv(f"reading {given}")

    capture = _open(target, given)
    width, height = (int(capture.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH,
                                                    cv2.CAP_PROP_FRAME_HEIGHT))
    if max(width, height) > MAX_SIDE:
        capture.release()
        raise SsrDeployError(f"{given} has {width}x{height} frames; frames are read up to "
                             f"{MAX_SIDE} a side: resize it first")
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 1 <= fps <= 240 else 30.0
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    count = count if count > 0 else None
    if count and max_frames:
        count = min(count, max_frames)
    if isinstance(target, int) or (is_stream(given) and count is None):
        reader = LiveReader(capture, lambda: _open(target, given), given,
                            reconnects if is_stream(given) else 0, note)
        return Source(given, reader.frames(), fps, None, live=True, counts=reader.counts,
                      close=reader.stop)

    def frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()

    return Source(given, frames(), fps, count, close=capture.release)


class LiveReader:
    """Reads a live capture on its own thread, keeping the newest frame only (the rest are
    counted as dropped); reopens a stream that ends or fails, with a growing pause."""

    def __init__(self, capture, reopen: Callable[[], object], given: str, reconnects: int,
                 note: Callable[[str], None]) -> None:
        self.capture, self.reopen, self.given = capture, reopen, given
        self.reconnects, self.note = reconnects, note
        self.counts = {"dropped": 0, "reconnects": 0}
        self.latest: np.ndarray | None = None
        self.ended = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True, name="live-source")
        self.thread.start()

    def _read(self) -> None:
        failures = 0
        try:
            while not self.stopping.is_set():
                ok, frame = self.capture.read()
                if ok:
                    failures = 0
                    with self.changed:
                        self.counts["dropped"] += self.latest is not None
                        self.latest = frame
                        self.changed.notify_all()
                    continue
                self.capture.release()
                if failures >= self.reconnects:
                    if self.reconnects:
                        self.note(f"the stream {self.given} is gone after {failures} "
                                  "reconnection attempts; stopping")
                    return
                pause = 0.5 * 2 ** failures
                failures += 1
                self.note(f"the stream {self.given} dropped; reconnecting in {pause:g} s "
                          f"(attempt {failures} of {self.reconnects})")
                if self.stopping.wait(pause):
                    return
                try:
                    self.capture = self.reopen()
                    self.counts["reconnects"] += 1
                except SsrDeployError:
                    self.capture = _Closed()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self.error = e
        finally:
            self.capture.release()
            with self.changed:
                self.ended = True
                self.changed.notify_all()

    def frames(self) -> Iterator[np.ndarray]:
        try:
            while True:
                with self.changed:
                    self.changed.wait_for(lambda: self.latest is not None or self.ended)
                    frame, self.latest = self.latest, None
                if frame is None:
                    if self.error is not None:
                        raise self.error
                    return
                yield frame
        finally:
            self.stop()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=2 * OPEN_TIMEOUT_MS / 1000)


class _Closed:
    """A capture that could not be reopened: reads fail, so the next attempt follows."""

    def read(self):
        time.sleep(0)
        return False, None

    def release(self) -> None:
        pass
