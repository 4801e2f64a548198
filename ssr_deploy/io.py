"""Files in and out, with nothing good lost and every failure one line.

Writes go to a temp file in the target folder, are fsynced, then renamed over the target:
an interrupted or failed write (crash, Ctrl-C, a full disk) never leaves a half-written file
under the final name, and the previous file stays intact until its replacement is complete.
A group of files (a model and its sidecar) is published together, or not at all; a folder
of outputs is built beside its final name and swapped in whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError, UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

_HINTS = {
    errno.ENOSPC: "the disk is full; free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up; free space or write elsewhere",
    errno.EFBIG: "the file is larger than this file system or process allows; write elsewhere",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "the operation is not permitted here; choose another folder",
    errno.EROFS: "the file system is read-only; write elsewhere",
    errno.ENOTDIR: "a part of the path is a file where a folder should be",
    errno.EISDIR: "it is a folder; give a file path",
    errno.ENOENT: "it does not exist",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EIO: "an I/O error (a failing disk or a lost network share)",
}


def describe_os_error(e: OSError, action: str = "write") -> str:
    """One line for an OSError: what failed, on which path, and what to do about it."""
    path = e.filename if e.filename is not None else ""
    hint = _HINTS.get(e.errno or -1, e.strerror or str(e))
    where = f" {path}" if path else ""
    return f"cannot {action}{where}: {hint}"


class OutputError(SsrDeployError):
    """A write failed; the previous file (if any) is untouched and nothing half-written is
    left under the final name."""


def _write_failed(path: Path, e: BaseException, tmp: Path | None = None) -> OutputError:
    if isinstance(e, OSError):
        e.filename = e.filename if e.filename is not None else str(path)
        text = describe_os_error(e)
    else:  # torch.save and friends report a failed write as RuntimeError, whatever the cause
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        if _free_bytes(path.parent) < 64 << 20:
            first = _HINTS[errno.ENOSPC]
        elif tmp is not None and _over_size_limit(tmp):
            first = _HINTS[errno.EFBIG]
        text = f"cannot write {path}: {first}"
    return OutputError(text + " (nothing was replaced)")


def _over_size_limit(tmp: Path) -> bool:
    """Whether ``tmp`` reached this process's file-size limit (ulimit -f)."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    try:
        return limit != resource.RLIM_INFINITY and tmp.stat().st_size >= limit - 4096
    except OSError:
        return False


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def check_output_path(path: Path) -> None:
    """Refuse a file output whose folder is missing (or a file), or that is a folder."""
    parent = path.parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"cannot write {path}: folder {parent} {what}; create it first or "
                          "choose another output path")
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder; give a file path")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/ssr-deploy`` (default ``~/.cache/ssr-deploy``): what ssr-deploy
    keeps between runs (exported checkpoints, calibration, TensorRT-RTX runtime caches)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ssr-deploy"


def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new file beside ``path`` with a random name, created exclusively (O_EXCL)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        e.filename = str(path)
        raise _write_failed(path, e) from None
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    return tmp


def _finish_temp(path: Path, tmp: Path) -> None:
    if not tmp.is_file() or tmp.stat().st_size == 0:  # no output we write is ever empty
        raise OutputError(f"cannot write {path}: the writer produced no data (nothing was "
                          "replaced)")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it returned normally
    and wrote data; any failure is an OutputError line and leaves ``path`` as it was."""
    return atomic_write_many({path: write})[0]


def atomic_write_many(writers: dict[str | Path, Callable[[Path], object]]) -> list[Path]:
    """Write every file to a temp name first; only when all succeeded rename them into place
    (a model is never published without its sidecar, nor a sidecar without its model)."""
    paths = [Path(p) for p in writers]
    temps: list[Path] = []
    try:
        for path, write in zip(paths, writers.values(), strict=True):
            check_output_path(path)
            tmp = _temp_beside(path)
            temps.append(tmp)
            try:
                write(tmp)
                _finish_temp(path, tmp)
            except (OSError, RuntimeError) as e:
                raise _write_failed(path, e, tmp) from None
        for path, tmp in zip(paths, temps, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return paths


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def encode_image(path: str | Path, image) -> bytes:
    """``image`` encoded for ``path``'s suffix (PNG, JPEG, BMP); an error if OpenCV cannot."""
    import cv2

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
        raise _write_failed(path, e) from None


class NewFolder:
    """A folder of outputs built beside ``path`` (``.building``) and swapped in whole by
    ``publish()``; ``discard()`` removes it. An existing non-empty ``path`` is refused unless
    ``overwrite`` (its files would mix with the new ones); with it, the old folder is
    removed only after the new one is in place."""

    def __init__(self, path: str | Path, overwrite: bool = False, option: str = "--out") -> None:
        path = self.path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path} is a file; give a folder path")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise UsageError(f"{option} {path} already holds files; choose an empty or new "
                             "folder, or add --overwrite to replace it once the new one is "
                             "complete")
        if not path.parent.is_dir():
            raise OutputError(f"cannot write {path}: folder {path.parent} does not exist; "
                              "create it first")
        try:
            self.building = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial",
                                                  dir=path.parent))
        except OSError as e:
            e.filename = str(path)
            raise _write_failed(path, e) from None

    def publish(self) -> Path:
        os.chmod(self.building, 0o777 & ~_umask())
        old = None
        if self.path.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-",
                                        dir=self.path.parent))
            os.replace(self.path, old)  # onto the empty folder just made: no name to predict
        os.replace(self.building, self.path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.building, ignore_errors=True)


@contextlib.contextmanager
def output_folder(path: str | Path, overwrite: bool = False, option: str = "--out"
                  ) -> Iterator[Path]:
    """``with output_folder(p) as folder:`` write into ``folder``; it becomes ``p`` when the
    block ends normally and is removed when it raises (see NewFolder)."""
    new = NewFolder(path, overwrite, option)
    try:
        yield new.building
        new.publish()
    except BaseException:
        new.discard()
        raise


@contextlib.contextmanager
def run_lock(folder: str | Path, command: str, option: str = "--out") -> Iterator[None]:
    """One run per output folder: ``with run_lock(out, "train"):`` holds an exclusive lock
    (``.<name>.lock`` beside the folder, flock'd, so a dead process never holds it) for the
    run; a second run into it is refused in one line naming the running one. A lock file a
    killed run left is taken over, and said so."""
    import fcntl
    import socket
    import sys
    import time

    folder = Path(folder)
    path = folder.parent / f".{folder.name}.lock"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            e.filename = str(path)
            raise _write_failed(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 512).decode(errors="replace").strip() or "another run"
            os.close(fd)
            raise SsrDeployError(f"{option} {folder} is in use by {holder}; wait for it to "
                                 f"finish or choose another {option}") from None
        try:  # the file we locked must still be the one at the path (not unlinked meanwhile)
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = os.read(fd, 512).decode(errors="replace").strip()
    if stale:
        print(f"note: taking over {folder} from {stale}, which is no longer running",
              file=sys.stderr)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, f"`ssr-deploy {command}` (pid {os.getpid()} on {socket.gethostname()}, "
                 f"started {time.strftime('%Y-%m-%d %H:%M:%S')})".encode())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


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
        import cv2

        if self.writer is None:
            # a name no other run (or user) can predict, created by us alone: the encoder
            # then opens a regular file we made, never a planted link
            self.tmp = _temp_beside(self.path, suffix=f".partial{self.path.suffix}")
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
        import cv2

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
            why = (_HINTS[errno.ENOSPC] if _free_bytes(self.path.parent) < 64 << 20 else
                   _HINTS[errno.EFBIG] if _over_size_limit(self.tmp) else
                   "the encoder failed")
            self.tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write {self.path}: it holds {frames} of the "
                              f"{self.count} frames written; {why} (nothing was replaced)")
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, self.path)
        return self.path


# ---- inputs ---------------------------------------------------------------------------

MAX_JSON_BYTES = 64 << 20  # the largest JSON file read (a latency table is ~1 MB)
MAX_JSON_DEPTH = 32  # every file ssr-deploy writes nests under 10 levels


def read_json(path: str | Path, what: str, error: type[SsrDeployError] = SsrDeployError
              ) -> Any:
    """A JSON file a user handed in, parsed, or one ``error`` line: too large, not JSON, or
    nested too deep to be one of ours (nothing handed in can exhaust the stack)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(f"{what} {path} is {human_bytes(size)}; no {what} is over "
                        f"{human_bytes(MAX_JSON_BYTES)}: give the right file")
        data, too_deep = json.loads(path.read_text()), False
    except json.JSONDecodeError as e:
        raise error(f"{path} is not JSON (line {e.lineno}, column {e.colno}: {e.msg}); give "
                    f"a {what} that ssr-deploy wrote") from None
    except RecursionError:
        data, too_deep = None, True
    except UnicodeDecodeError:
        raise error(f"cannot read {what} {path}: it is not UTF-8 text") from None
    except OSError as e:
        e.filename = str(path)
        raise error(f"{what}: {describe_os_error(e, 'read')}") from None
    if too_deep or _depth(data) > MAX_JSON_DEPTH:
        raise error(f"{what} {path} nests deeper than {MAX_JSON_DEPTH} levels: it is not a "
                    f"{what} ssr-deploy wrote")
    return data


def _depth(value: Any) -> int:
    """How deep lists and objects nest in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                      else item))
    return deepest

def check_input_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as a readable regular file, else one line saying what it is instead."""
    path = Path(path)
    if path.is_file():
        if not os.access(path, os.R_OK):
            raise SsrDeployError(f"{what} {path} is not readable (permission denied)")
        return path
    if path.is_dir():
        raise SsrDeployError(f"{what} {path} is a folder, not a file")
    if path.exists():
        raise SsrDeployError(f"{what} {path} is not a regular file (a device, pipe or socket)")
    raise SsrDeployError(f"{what} {path} does not exist")


def check_outputs_spare_inputs(outputs: Iterable[tuple[str, str | Path | None]],
                               inputs: Iterable[str | Path | None]) -> None:
    """Refuse an output that is one of the command's inputs (or an input's sidecar, or a
    folder holding an input): the one guard every command calls before it writes."""
    guarded = []
    for item in inputs:
        if item:
            p = Path(item).resolve()
            guarded += [p, p.with_name(p.name + ".json"), p.with_suffix(".json")]
    for option, out in outputs:
        if not out:
            continue
        o = Path(out).resolve()
        for p in guarded:
            if o.with_name(o.name + ".json") == p:
                raise UsageError(f"{option} {out}: its sidecar {o.name}.json would overwrite "
                                 f"the input {p.name}; choose another path")
            if o == p or (o.exists() and p.exists() and os.path.samefile(o, p)):
                raise UsageError(f"{option} {out} is an input of this command ({p.name}); "
                                 "writing it would destroy the input: choose another path")
            if o in p.parents:
                raise UsageError(f"{option} {out} holds an input of this command ({p}); "
                                 "writing it could destroy the input: choose another path")


# ---- resources ------------------------------------------------------------------------

def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable), or a large number."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_memory(nbytes: float, what: str, fix: str) -> None:
    """Refuse before allocating when ``what`` needs more memory than is available."""
    free = available_memory()
    if nbytes > 0.8 * free:
        raise UsageError(f"{what} needs about {human_bytes(nbytes)} of memory, "
                         f"{human_bytes(free)} are available; {fix}")


def check_disk(folder: str | Path, nbytes: float, what: str) -> None:
    """Refuse before writing when ``folder``'s disk cannot hold ``nbytes``."""
    free = _free_bytes(Path(folder))
    if nbytes > free:
        raise OutputError(f"{what} need about {human_bytes(nbytes)}, and the disk of {folder} "
                          f"has {human_bytes(free)} free: the disk is full; free space or "
                          "write elsewhere")


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dumps_compact(value: Any, indent: int = 0) -> str:
    """JSON with one line per innermost object or list: a layer reads as a table row."""
    flat = json.dumps(value)
    if not isinstance(value, (dict, list)) or len(flat) + indent <= 96 and not any(
            isinstance(v, dict) or (isinstance(v, list) and v and isinstance(v[0], dict))
            for v in (value.values() if isinstance(value, dict) else value)):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {dumps_compact(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + dumps_compact(v, indent + 2) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def read_image(path: str | Path, flags: int | None = None):
    """An image as OpenCV reads it (BGR uint8 by default); a clear error for a corrupt or
    unreadable file."""
    import cv2

    data = cv2.imread(str(path), cv2.IMREAD_COLOR if flags is None else flags)
    if data is None:
        raise SsrDeployError(f"cannot read {path}: corrupt or not an image (remove or replace "
                             "it)")
    return data


def jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively through dicts: what json and weights_only pickles take."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return {k: jsonable(v) for k, v in value.items()} if isinstance(value, dict) else value


def run_config_text(command: str, config, **resolved: Any) -> str:
    """A run's ``config.json``: the command, every setting of its config dataclass, and the
    values resolved from them (``resolved`` replaces fields of the same name)."""
    import dataclasses

    from ssr_deploy import __version__

    settings = {"command": command, "ssr_deploy": __version__,
                **jsonable(dataclasses.asdict(config)), **jsonable(resolved)}
    return json.dumps(settings, indent=2) + "\n"


def epoch_log(path: str | Path, row: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The rows of a JSONL log with ``row`` replacing rows of its epoch and later (a resumed
    run does not duplicate epochs), and the file's new text; nothing is written."""
    path = Path(path)
    rows = [json.loads(r) for r in (path.read_text().splitlines() if path.is_file() else [])]
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    return rows, "".join(json.dumps(r) + "\n" for r in rows)


def publish_files(files: dict[str | Path, Callable[[Path], object]], figure=None) -> None:
    """Files that belong together (an epoch's state, log and plot; a report and its plot)
    published together or not at all: a resumed run never finds a log ahead of its state.
    ``figure`` (the plot's) is closed afterwards."""
    try:
        atomic_write_many(files)
    finally:
        if figure is not None:
            import matplotlib.pyplot as plt

            plt.close(figure)


def figure_writer(fig) -> Callable[[Path], None]:
    return lambda tmp: fig.savefig(tmp, format="png")


def save_figure(fig, path: str | Path) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)


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
    return paths
