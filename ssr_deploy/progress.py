"""Progress for every long job, on a terminal or not.

On a terminal: a tqdm bar. Anywhere else (a log, nohup, CI, a notebook's captured output): a
plain line on stderr at least every ``every`` seconds (30 by default), however long a step
takes: what, how far (``part 600/1040``), elapsed and estimated remaining::

    lut: 600/1040 parts (58%), 4m02s elapsed, ~2m57s left

``--quiet`` (``set_quiet``) silences both; milestones (``say``: an epoch's results) are
printed either way unless quiet.

    with progress("search", total=steps, unit="step") as bar:
        for ...:
            bar.update(1, loss=f"{loss:.3f}")
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

_QUIET = False
EVERY = 30.0


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def quiet() -> bool:
    return _QUIET


def on_terminal() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    """3s, 4m02s, 1h05m."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """See the module. ``n``: done so far; ``update(k, **postfix)``; ``say(line)``."""

    def __init__(self, what: str, total: int | None = None, unit: str = "it",
                 every: float = EVERY, leave: bool = False, enabled: bool = True) -> None:
        self.what, self.total, self.unit, self.every = what, total, unit, every
        self.n, self.postfix = 0, {}
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.bar = None
        self.stopped = threading.Event()
        self.beat = None
        self.enabled = enabled and not _QUIET
        if not self.enabled:
            return
        if on_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, leave=leave, file=sys.stderr,
                            dynamic_ncols=True)
        else:
            self.beat = threading.Thread(target=self._heartbeat, daemon=True,
                                         name=f"progress-{what}")
            self.beat.start()

    def update(self, k: int = 1, **postfix: Any) -> None:
        with self.lock:
            self.n += k
            self.postfix.update(postfix)
            if self.bar is not None:
                if postfix:
                    self.bar.set_postfix(postfix, refresh=False)
                self.bar.update(k)
            elif self.enabled and time.monotonic() - self.last >= self.every:
                self._line()

    def set_total(self, total: int | None) -> None:
        with self.lock:
            self.total = total
            if self.bar is not None:
                self.bar.total = total
                self.bar.refresh()

    def say(self, line: str) -> None:
        """A milestone (an epoch's figures): always printed, above the bar on a terminal."""
        if not self.enabled or _QUIET:
            return
        with self.lock:
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr, flush=True)
                self.last = time.monotonic()

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        unit = self.unit if self.unit.endswith("s") or self.unit == "it" else f"{self.unit}s"
        if self.total:
            text = (f"{self.what}: {self.n}/{self.total} {unit} "
                    f"({100 * self.n / self.total:.0f}%), {duration(elapsed)} elapsed")
            if 0 < self.n < self.total:
                text += f", ~{duration(elapsed * (self.total - self.n) / self.n)} left"
        else:
            text = f"{self.what}: {self.n} {unit}, {duration(elapsed)} elapsed"
        extra = ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return f"{text}, {extra}" if extra else text

    def _line(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)
        self.last = time.monotonic()

    def _heartbeat(self) -> None:
        """A line at least every ``every`` seconds, even while one step takes minutes."""
        while not self.stopped.wait(max(0.05, self.every - (time.monotonic() - self.last))):
            with self.lock:
                if time.monotonic() - self.last >= self.every and not _QUIET:
                    self._line()

    def close(self) -> None:
        self.stopped.set()
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def progress(what: str, total: int | None = None, unit: str = "it", every: float = EVERY,
             leave: bool = False, enabled: bool = True) -> Iterator[Progress]:
    """A ``Progress`` closed on exit; ``enabled=False``: silent (another process reports)."""
    bar = Progress(what, total, unit, every, leave, enabled)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable, what: str, total: int | None = None, unit: str = "it",
          every: float = EVERY, enabled: bool = True) -> Iterator:
    """``items`` one by one, with progress."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress(what, total, unit, every, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update(1)
