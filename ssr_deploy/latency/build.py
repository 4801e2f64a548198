"""The resumable build: every part timed once per pass, published as it is measured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write_text, read_json
from ssr_deploy.latency.clock import Clock
from ssr_deploy.latency.options import BLOCK_KEY, SAME, LutOptions
from ssr_deploy.latency.parts import probes
from ssr_deploy.latency.table import FORMAT, KIND, LatencyTable, one_hot
from ssr_deploy.runs import run_lock
from ssr_deploy.space import SearchSpace
from ssr_deploy.spec import runtime_io


# ---- the build -------------------------------------------------------------------------
def _header(space: SearchSpace, o: LutOptions, clock: Clock) -> dict[str, Any]:
    from ssr_deploy.runtime.bench import machine_info

    machine = machine_info()
    measured = clock.fingerprint()
    gpu = measured.pop("device_name") or (machine.get("gpu") or {}).get("name")
    fingerprint = {"cpu": machine.get("cpu"), "cores": machine.get("cores"),
                   "gpu": gpu if o.device.startswith("cuda") else None, **measured}
    return {"kind": KIND, "format": FORMAT, "backend": o.backend, "device": o.device,
            "precision": o.precision, "size": list(o.size), "batch": o.batch,
            "num_classes": o.num_classes, "width_grid": list(o.width_grid),
            "every_dilation": o.every_dilation, "repeats": o.repeats, "passes": o.passes,
            "check_points": o.check_points, "io": runtime_io(o.num_classes).__dict__.copy(),
            "space": space.to_dict(), "fingerprint": fingerprint, "machine": machine,
            "method": "each part alone in its network shapes: the least over passes of the "
                      "median of --repeats runs after 2 warm-up runs; mid widths on a grid, "
                      "interpolated linearly"}


def _resume(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """The table already at ``path`` if it continues this build; refuses one of another."""
    if not path.exists():
        return None
    data = read_json(path, "latency table")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise SsrDeployError(f"{path} exists and is not a latency table; give another -o")
    for key in SAME:
        if data.get(key) != json.loads(json.dumps(header[key])):
            raise SsrDeployError(f"{path} was measured with another {key} ({data.get(key)!r}, "
                                 f"now {header[key]!r}); give another -o to keep both")
    return data


def build_lut(space: SearchSpace, path: str | Path, o: LutOptions,
              progress: bool | None = None) -> dict[str, Any]:
    """Measure (or finish measuring) the table at ``path``; returns its JSON as a dict (with
    ``"already": True`` when the file was a complete table of these settings already)."""
    o.validate(space)
    with run_lock(path, "lut build", "-o"):
        return _build(space, Path(path), o, progress)


def _build(space: SearchSpace, path: Path, o: LutOptions, progress: bool | None
           ) -> dict[str, Any]:
    clock = Clock(o)
    header = _header(space, o, clock)
    old = _resume(path, header)
    if old and old.get("complete"):
        return {**old, "already": True}
    # passes[k][key]: pass k's median of a part (check parts keyed "check/<block>")
    passes: list[dict[str, float]] = [dict(p) for p in old["pass_times"]] if old else []
    passes += [{} for _ in range(o.passes - len(passes))]
    elapsed = float(old.get("seconds", 0.0)) if old else 0.0
    every = probes(space, o)
    start = time.perf_counter()

    def publish(complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {**header, "complete": complete,
                "seconds": round(elapsed + time.perf_counter() - start, 1), **(extra or {}),
                "pass_times": passes}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        return data

    total = sum(p.key not in done for done in passes for p in every)
    bar = tqdm(total=total, desc="lut", unit="part", disable=None if progress is None
               else not progress)
    with bar:  # an interrupt leaves every part measured before it in the file
        for k, done in enumerate(passes):
            for probe in every if k % 2 == 0 else every[::-1]:  # later passes: other order
                if probe.key in done:
                    continue
                done[probe.key] = clock.time(probe)
                publish(False)
                bar.update()
    # a part's time: the least of its passes' medians (a burst of other work on the machine
    # during one pass does not stay in the table)
    best = {p.key: min(done[p.key] for done in passes) for p in every}
    entries = {k: v for k, v in best.items() if not k.startswith("check/")}
    checks = {k[len("check/"):]: v for k, v in best.items() if k.startswith("check/")}
    check = interpolation_error(LatencyTable(header, entries), checks)
    return publish(True, {"check": check, "entries": entries, "check_entries": checks})


def interpolation_error(table: LatencyTable, checks: dict[str, float]) -> dict[str, Any]:
    """How far the table's interpolated blocks are from direct measurements."""
    errors = []
    for key, measured in checks.items():
        s, d, r, i, m, o = (float(v) for v in BLOCK_KEY.fullmatch(key).groups())
        s, d, i, m, o = int(s), int(d), int(i), int(m), int(o)
        options = table.space.widths(s)
        predicted = float(table.block_ms(s, d, r, float(i), one_hot(options, m),
                                         one_hot(options, o)))
        errors.append(abs(predicted - measured) / measured)
    if not errors:
        return {"points": 0}
    return {"points": len(errors), "mean_rel_error": float(np.mean(errors)),
            "max_rel_error": float(np.max(errors))}
