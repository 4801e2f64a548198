"""Images, video and figures in and out: images read with a clear error and written
atomically with their encoding checked, a video published only once it reads back whole,
plots saved atomically."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.imaging import require_opencv
from ssr_deploy.io import (
    OutputError,
    atomic_write,
    atomic_write_bytes,
    check_input_file,
    check_output_path,
    short_write_reason,
    temp_beside,
    write_failed,
)
from ssr_deploy.limits import MAX_SIDE

# FFmpeg (inside OpenCV) reads this once, when OpenCV first opens a video: our one line says
# what went wrong, without FFmpeg's own lines before it (a user's own setting is kept)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def encode_image(path: str | Path, image) -> bytes:
    """``image`` encoded for ``path``'s suffix (PNG, JPEG, BMP); an error if OpenCV cannot."""
    cv2 = require_opencv(f"writing {Path(path).name}")

    ok, buf = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise OutputError(f"cannot encode {path} as {Path(path).suffix or '.png'}")
    return buf.tobytes()


def write_image(path: str | Path, image) -> Path:
    """An image written atomically, its encoding and write checked (cv2.imwrite is not)."""
    return atomic_write_bytes(path, encode_image(path, image))


def write_image_in(folder: Path, name: str, image) -> None:
    """An image into a folder being built (see ``output_folder``): checked, not atomic."""
    path = folder / name
    try:
        path.write_bytes(encode_image(path, image))
    except OSError as e:
        raise write_failed(path, e) from None


class VideoOutput:
    """An .mp4/.avi written under a temp name beside ``path`` and published by ``close()``
    only after it is read back with the frames written (OpenCV's VideoWriter reports no
    failed write: a full disk would otherwise pass as success)."""

    FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "mp4v"}

    def __init__(self, path: str | Path, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        if self.path.suffix.lower() not in self.FOURCC:
            raise UsageError(f"{path}: give a video file ({', '.join(self.FOURCC)})")
        check_output_path(self.path)
        self.tmp: Path | None = None  # made, random and exclusive, with the first frame
        self.writer, self.size, self.count = None, None, 0

    def write(self, frame) -> None:
        cv2 = require_opencv(f"writing the video {self.path.name}")

        if self.writer is None:
            # a name no other run (or user) can predict, created by us alone: the encoder
            # then opens a regular file we made, never a planted link
            self.tmp = temp_beside(self.path, suffix=f".partial{self.path.suffix}")
            self.size = (frame.shape[1], frame.shape[0])
            fourcc = cv2.VideoWriter_fourcc(*self.FOURCC[self.path.suffix.lower()])
            self.writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                self.tmp.unlink(missing_ok=True)
                raise OutputError(f"cannot write {self.path}: OpenCV cannot open a "
                                  f"{self.path.suffix} writer there (use .avi, or a folder of "
                                  "PNGs)")
        if (frame.shape[1], frame.shape[0]) != self.size:  # the stream changed size mid-way
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.count += 1

    def close(self, keep: bool = True) -> Path | None:
        """Finish and publish the file (``keep=False``: remove it); an OutputError, with
        ``path`` untouched, if the file does not read back whole."""
        cv2 = require_opencv(f"writing the video {self.path.name}")

        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        if not keep:
            self.tmp.unlink(missing_ok=True)
            return None
        capture = cv2.VideoCapture(str(self.tmp))
        frames = 0  # demuxed, not decoded: a truncated file ends early, headers notwithstanding
        while capture.isOpened() and frames < self.count and capture.grab():
            frames += 1
        capture.release()
        if frames < self.count:
            why = short_write_reason(self.path, self.tmp)
            self.tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: it holds {frames} of the "
                              f"{self.count} frames written; {why} (nothing was replaced)")
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path




def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it (None if unknown)."""
    try:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # we bound the sides ourselves, below
        with Image.open(path) as image:
            return image.size
    except Exception:  # noqa: BLE001 - Pillow absent or the format unknown to it
        return None


def read_image(path: str | Path, flags: int | None = None):
    """An image as OpenCV reads it (BGR uint8 by default); a clear error for a corrupt or
    unreadable file, or one whose header declares a side over MAX_SIDE (refused
    before decoding: a 389 KB PNG can declare 20000x20000, 1.2 GB of pixels)."""
    cv2 = require_opencv(f"reading {Path(path).name}")

    check_input_file(path, "image")  # a FIFO blocks a reader, a link to /dev/zero never ends
    size = image_size(path)
    if size and max(size) > MAX_SIDE:
        raise SsrDeployError(f"{path} is {size[0]}x{size[1]} pixels; images are read up to "
                             f"{MAX_SIDE} a side: resize it first")
    data = cv2.imread(str(path), cv2.IMREAD_COLOR if flags is None else flags)
    if data is None:
        raise SsrDeployError(f"cannot read {path}: corrupt or not an image (remove or replace "
                             "it)")
    return data


def find_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, at most ``limit``, spread evenly
    over the sorted list so a Cityscapes tree contributes every city."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise SsrDeployError(f"image folder {folder} {what}")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SsrDeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; point it "
                             "at a folder of frames (for --calib: ~100 from the training set)")
    if limit and len(paths) > limit:
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    for path in paths:  # said before the work starts, not when the reader blocks on it
        check_input_file(path, "image")
    return paths


def figure_writer(fig) -> Callable[[Path], None]:
    return lambda tmp: fig.savefig(tmp, format="png")


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)
