"""A whole network's time at the table's speed, on a machine others share.

A latency table is built on a machine that others use too; a network is timed later on it
(a search landing, the benchmark checking the table), when it may run slower. So every time
of a whole network is taken with the table's reference network timed right before and
right after it: the mean of the two over the reference's best time in the build is the
machine's speed then, and the network's time divided by it is its time at the table's
speed.

That holds only while the machine's speed holds. Where the two reference times differ by
more than ``STEADY`` the machine sped up or slowed down during the measurement (a burst of
other work began or ended), and nothing says how much of it the network took: such a
measurement is *unsteady*; it is measured again, up to ``TRIES`` times as many as asked,
and the figure is the median of the steady ones (of all, if none was). On this project's
shared 2-core machines, during a busy hour, only 36% of measurements were steady; the
median of the steady ones moved between two sessions' measurements of the same networks
by 2.5-3.8% (median) where the median of all moved by 3.6-5.5%.

A machine that runs steadily slower does not slow every network alike (what others run
takes some networks' memory bandwidth or caches more than others'), so of the steady
measurements those taken while the machine ran within ``STEADY`` of its fastest among them
count: between a busy session's measurements of 40 networks and a quiet one's, the share
of networks within 5% rose from 78% to 88% (OpenVINO int8) and from 90% to 98%
(onnxruntime int8).

A measurement is a row ``(ms, reference before, reference after)``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import numpy as np

STEADY = 0.05  # the two reference times around a measurement differ by more: unsteady
TRIES = 3  # unsteady measurements are taken again, up to TRIES times the passes asked

Row = tuple[float, float, float]


def steady(row: Row) -> bool:
    """The machine's speed held while ``row`` was measured."""
    _, before, after = row
    return abs(after / before - 1) <= STEADY


def at_table_speed(rows: Sequence[Row], best: float) -> dict[str, float]:
    """The rows' figure: ``ms`` the median of the steady rows' times at the table's speed
    (of all rows where none is steady), of those taken while the machine ran within
    ``STEADY`` of its fastest among them, ``raw_ms`` the least time measured,
    ``machine_speed`` the median speed of the rows used (1: as fast as the build's
    fastest), ``spread`` the standard error of their log times (how far the figure is left
    to chance), ``passes`` and ``steady`` how many rows there were and were steady."""
    steady_rows = [r for r in rows if steady(r)] or list(rows)
    fastest = min((before + after) / 2 for _, before, after in steady_rows)
    used = [r for r in steady_rows if (r[1] + r[2]) / 2 <= (1 + STEADY) * fastest]
    speeds = [(before + after) / 2 / best for _, before, after in used]
    scaled = [ms / v for (ms, _, _), v in zip(used, speeds, strict=True)]
    return {"ms": statistics.median(scaled), "raw_ms": min(ms for ms, _, _ in rows),
            "machine_speed": statistics.median(speeds), "spread": spread(scaled),
            "passes": len(rows), "steady": sum(map(steady, rows))}


def measure(network: Callable[[], float], reference: Callable[[], float], passes: int,
            rows: list[Row] | None = None, before: float | None = None) -> list[Row]:
    """Rows of ``network()`` with ``reference()`` timed before and after each, until
    ``passes`` of them are steady or ``TRIES * passes`` were taken (``rows``: those taken
    already, added to; ``before``: a reference time just taken, the first row's)."""
    rows = [] if rows is None else rows
    while sum(map(steady, rows)) < passes and len(rows) < TRIES * passes:
        if before is None:
            before = reference()
        ms = network()
        after = reference()
        rows.append((ms, before, after))
        before = after
    return rows


def spread(times: Sequence[float]) -> float:
    """The standard error of the mean of the times' logs."""
    logs = np.log(times)
    return float(logs.std(ddof=1) / np.sqrt(len(logs))) if len(logs) > 1 else 0.0
