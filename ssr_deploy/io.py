"""Files in and out, with nothing good lost and every failure one line.

Writes go to a temp file in the target folder, are fsynced, then renamed over the target:
an interrupted or failed write (crash, Ctrl-C, a full disk) never leaves a half-written file
under the final name, and the previous file stays intact until its replacement is complete.
A group of files (a model and its sidecar) is published together, or not at all. Reads are
bounded (JSON size and depth) and guarded (regular files; outputs that would overwrite an
input), and so are memory and disk before a large job. Run folders live in
``ssr_deploy.runs``; images, video and figures in ``ssr_deploy.media``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError, UsageError

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


def write_failed(path: Path, e: BaseException, tmp: Path | None = None) -> OutputError:
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


def short_write_reason(path: Path, tmp: Path) -> str:
    """Why a written file came out short: a full disk, the file-size limit, else the
    writer."""
    if _free_bytes(path.parent) < 64 << 20:
        return _HINTS[errno.ENOSPC]
    return _HINTS[errno.EFBIG] if _over_size_limit(tmp) else "the encoder failed"


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
    if path.exists() and not path.is_symlink() and not path.is_file():
        # a device, FIFO or socket: renaming a file over it would replace it (/dev/null!)
        raise OutputError(f"cannot write {path}: it is a device, FIFO or socket, not a file; "
                          "give a file path (nothing was replaced)")


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/ssr-deploy`` (default ``~/.cache/ssr-deploy``): what ssr-deploy
    keeps between runs (exported checkpoints, calibration, TensorRT-RTX runtime caches).
    A relative XDG_CACHE_HOME is ignored, as the XDG spec says (it would follow the working
    folder)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "ssr-deploy"


def shared_with_others(folder: Path) -> str | None:
    """Why ``folder`` (or a folder above it, up to the cache root) is not this user's alone:
    owned by another user, or writable by others. None when it is private (or not there)."""
    folder = Path(os.path.abspath(folder))
    root = cache_root()
    above = folder.parents if root in (folder, *folder.parents) else [folder.parent]
    for part in [folder, *above]:
        try:
            st = part.lstat()
        except OSError:
            continue
        if st.st_uid not in (os.getuid(), 0):  # root can change anything anyway
            return f"{part} belongs to another user (uid {st.st_uid})"
        if st.st_mode & 0o022 and not st.st_mode & 0o1000:  # a sticky /tmp is fine
            return f"{part} is writable by other users (mode {st.st_mode & 0o777:o})"
        if part == root.parent:
            break
    return None


def seal(text: str) -> str:
    """An HMAC-SHA256 of ``text`` under this user's cache key (``<cache root>/.seal-key``,
    made on first use, readable by this user only): what the cache writes, it can recognise;
    a file planted under a cache name with an edited sidecar cannot carry it."""
    import hashlib
    import hmac
    import secrets

    path = cache_root() / ".seal-key"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        except FileExistsError:  # another process made it first
            key = path.read_bytes()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    """A new file beside ``path`` with a random name, created exclusively (O_EXCL)."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        e.filename = str(path)
        raise write_failed(path, e) from None
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; give the usual permissions
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
            tmp = temp_beside(path)
            temps.append(tmp)
            try:
                write(tmp)
                _finish_temp(path, tmp)
            except (OSError, RuntimeError) as e:
                raise write_failed(path, e, tmp) from None
        for path, tmp in zip(paths, temps, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return paths


def open_in_place(path: str | Path, what: str) -> int:
    """A file ssr-deploy writes in place (a run's lock, a server's log), opened for reading
    and writing without following a link or blocking on a FIFO; refused in one line unless it
    is a plain file with no other name (writes through a hard link land in the other file).
    Returns the descriptor, blocking; the caller closes it."""
    import stat

    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise SsrDeployError(f"{what} {path} is a symbolic link: ssr-deploy writes it in "
                                 "place and follows no link; remove it") from None
        e.filename = str(path)
        raise write_failed(path, e) from None
    info = os.fstat(fd)
    kind = None
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "not a plain file"
    elif info.st_nlink != 1:
        kind = f"a hard link ({info.st_nlink} names for one file)"
    if kind:
        os.close(fd)
        raise SsrDeployError(f"{what} {path} is {kind}: ssr-deploy writes it in place and "
                             "would write into it; remove it (nothing was written)")
    os.set_blocking(fd, True)
    return fd


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


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
    except ValueError as e:  # e.g. an integer of over 4300 digits (Python's own limit)
        raise error(f"{path} is not a {what} ssr-deploy wrote ({str(e)[:80]})") from None
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


def umask() -> int:
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


def jsonable(value: Any) -> Any:
    """Tuples -> lists, recursively through dicts: what json and weights_only pickles take."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return {k: jsonable(v) for k, v in value.items()} if isinstance(value, dict) else value


