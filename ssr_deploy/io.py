"""Atomic file writes: a temp file in the target folder, fsync, then rename over the target.

An interrupted write (crash, Ctrl-C, a full disk) never leaves a half-written file under
the final name; the previous file, if any, stays intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it returned normally."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SsrDeployError(f"cannot write {path}: folder {path.parent} does not exist; create it "
                             "first or choose another output path")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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


def write_epoch_row(path: str | Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Rewrite a JSONL log with ``row`` replacing rows of its epoch and later (so a resumed
    run does not duplicate epochs), atomically; returns all rows."""
    path = Path(path)
    rows = [json.loads(r) for r in (path.read_text().splitlines() if path.is_file() else [])]
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


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
        raise SsrDeployError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SsrDeployError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}; point it "
                             "at a folder of frames (for --calib: ~100 from the training set)")
    if limit and len(paths) > limit:
        step = len(paths) / limit
        paths = [paths[int(i * step)] for i in range(limit)]
    return paths
