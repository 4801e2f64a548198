"""Run folders: a folder of outputs built beside its name and swapped in whole, one run per
output folder (a lock), a run's config.json and epoch log, and the files of an epoch
published together."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.io import (
    OutputError,
    atomic_write_many,
    jsonable,
    open_in_place,
    umask,
    write_failed,
)
from ssr_deploy.version import __version__


class NewFolder:
    """A folder of outputs built beside ``path`` (``.building``) and swapped in whole by
    ``publish()``; ``discard()`` removes it. An existing non-empty ``path`` is refused unless
    ``overwrite`` (its files would mix with the new ones); with it, the old folder is
    removed only after the new one is in place."""

    def __init__(self, path: str | Path, overwrite: bool = False, option: str = "--out") -> None:
        path = self.path = Path(path)
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path} is a file; give a folder path")
        here = Path.cwd().resolve()
        if path.resolve() == here or path.resolve() in here.parents:
            raise UsageError(f"{option} {path} is the folder you are in (or holds it): it is "
                             "replaced whole when the new one is complete, which cannot be "
                             "done to a working folder; give another folder")
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
            raise write_failed(path, e) from None

    def publish(self) -> Path:
        os.chmod(self.building, 0o777 & ~umask())
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
        fd = open_in_place(path, "the lock")
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


def run_config_text(command: str, config, **resolved: Any) -> str:
    """A run's ``config.json``: the command, every setting of its config dataclass, and the
    values resolved from them (``resolved`` replaces fields of the same name)."""
    import dataclasses

    settings = {"command": command, "ssr_deploy": __version__,
                **jsonable(dataclasses.asdict(config)), **jsonable(resolved)}
    return json.dumps(settings, indent=2) + "\n"


def epoch_log(path: str | Path, *new: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The rows of a JSONL log with the ``new`` rows (epochs in order) replacing rows of
    their epochs and later (a resumed run does not duplicate epochs), and the file's new
    text; nothing is written."""
    path = Path(path)
    rows = [json.loads(r) for r in (path.read_text().splitlines() if path.is_file() else [])]
    rows = [r for r in rows if r["epoch"] < new[0]["epoch"]] + list(new)
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
