"""The resumable build: every part timed once per pass, then whole networks to calibrate the
sum of parts on (``calibrate.py``), the reference network timed among the parts; each time
published as it is measured."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write_text, read_json
from ssr_deploy.latency import calibrate, speed
from ssr_deploy.latency.clock import Clock
from ssr_deploy.latency.options import BLOCK_KEY, SAME, LutOptions
from ssr_deploy.latency.parts import probes
from ssr_deploy.latency.table import FORMAT, KIND, LatencyTable, one_hot
from ssr_deploy.progress import progress as progress_bar
from ssr_deploy.runs import run_lock
from ssr_deploy.space import SearchSpace
from ssr_deploy.spec import runtime_io

# ---- the build -------------------------------------------------------------------------
#: a part whose passes differ by more than this is timed once more and its median kept: on
#: a busy shared machine 42% of a table's parts differed by more than 10% between two passes
#: at the reference's speed, against 7% on a quiet one
AGREE = 0.10


def _header(space: SearchSpace, o: LutOptions, clock: Clock) -> dict[str, Any]:
    from ssr_deploy.runtime.bench import machine_info

    machine = machine_info()
    fingerprint = clock.machine_fingerprint(machine)
    int8 = None
    if o.precision == "int8":
        q = o.int8_options()
        int8 = {"target": q.int8_target, "form": q.int8_form,
                "cpu": machine.get("cpu_kind", {}).get("kind")}
    return {"kind": KIND, "format": FORMAT, "backend": o.backend, "device": o.device,
            "precision": o.precision, "int8": int8, "fp32_layers": list(o.fp32_layers),
            "size": list(o.size), "batch": o.batch,
            "num_classes": o.num_classes, "width_grid": list(o.width_grid),
            "every_dilation": o.every_dilation, "repeats": o.repeats, "passes": o.passes,
            "check_points": o.check_points, "calibrate": o.calibrate,
            "io": runtime_io(o.num_classes).__dict__.copy(),
            "space": space.to_dict(), "fingerprint": fingerprint, "machine": machine,
            "method": "each part alone in its network shapes, the least over passes of the "
                      "median of --repeats runs after 2 warm-up runs, scaled by the reference "
                      "network's best time over its time then, or one part's (the pacer, "
                      "every 8 parts) where the table has it (passes more than 10% apart: "
                      "one more, the median kept); mid widths on a grid, "
                      "interpolated linearly; whole networks, exported and run as a user "
                      "exports and runs them (the median of --repeats Segmenter calls after 2 "
                      "warm-up calls) where the path allows, else as the parts, calibrate "
                      "the sums of parts by kind into a network's end-to-end time"}


def _resume(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """The table already at ``path`` if it continues this build; refuses one of another."""
    if not path.exists():
        return None
    data = read_json(path, "latency table")
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise SsrDeployError(f"{path} exists and is not a latency table; give another -o")
    if data.get("format") != FORMAT:
        raise SsrDeployError(f"{path} is a table of format {data.get('format')} (this "
                             f"ssr-deploy builds format {FORMAT}); give another -o")
    for key in SAME:
        if data.get(key) != json.loads(json.dumps(header[key])):
            raise SsrDeployError(f"{path} was measured with another {key} ({data.get(key)!r}, "
                                 f"now {header[key]!r}); give another -o to keep both")
    return data


def build_lut(space: SearchSpace, path: str | Path, o: LutOptions,
              progress: bool | None = None) -> dict[str, Any]:
    """Measure (or finish measuring) the table at ``path``; returns its JSON as a dict (with
    ``"already": True`` when the file was a complete table of these settings already)."""
    o = o.resolved()
    o.validate(space)
    with run_lock(path, "lut build", "-o"):
        return _build(space, Path(path), o, progress)


def _build(space: SearchSpace, path: Path, o: LutOptions, progress: bool | None
           ) -> dict[str, Any]:
    exports = path.with_name(path.name + ".networks")  # whole networks, while it is built
    clock = Clock(o, exports)
    header = _header(space, o, clock)
    old = _resume(path, header)
    if old and old.get("complete"):
        return {**old, "already": True}
    # timelines[k]: pass k's [key, ms] in the order measured (check parts "check/<block>",
    # whole networks "network/<name>", the reference among them)
    timelines: list[list[list[Any]]] = [list(t) for t in old["timelines"]] if old else []
    timelines += [[] for _ in range(o.passes - len(timelines))]
    elapsed = float(old.get("seconds", 0.0)) if old else 0.0
    every = probes(space, o)
    # the pacer: the first block (a table from before it has none: its parts go on by the
    # reference network)
    paced = not timelines[0] or any(k.startswith(calibrate.PACE) for k, _ in timelines[0])
    pacer = next((p for p in every if BLOCK_KEY.fullmatch(p.key)), None) if paced else None
    networks = calibrate.genotypes(space, o.num_classes, o.calibrate, o.seed)
    whole = [calibrate.network_probe(g, o) for g in networks]
    start = time.perf_counter()

    def publish(complete: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {**header, "complete": complete,
                "seconds": round(elapsed + time.perf_counter() - start, 1), **(extra or {}),
                "timelines": timelines}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        return data

    done_keys = [{key for key, _ in t} for t in timelines]
    total = sum(p.key not in done_keys[k] for k in range(o.passes) for p in every + whole)
    with progress_bar("lut", total=total, unit="part") as bar:  # an interrupt keeps them
        for k, timeline in enumerate(timelines[:o.passes]):  # later passes: other order
            _time_parts(clock, every if k % 2 == 0 else every[::-1], timeline, whole, pacer,
                        publish, bar.update)
        calibrate.measure_networks(clock, whole, timelines[:o.passes], publish, bar.update)
        # parts whose passes disagree (a burst of other work within the pacer's spacing):
        # once more, the median kept
        disputed = _disputed([calibrate.normalised(t) for t in timelines[:o.passes]], every)
        if disputed:
            timelines += [[] for _ in range(o.passes + 1 - len(timelines))]
            timed = {key for key, _ in timelines[o.passes]}
            bar.set_total(bar.n + sum(p.key not in timed for p in disputed))
            _time_parts(clock, disputed, timelines[o.passes], whole, pacer, publish,
                        bar.update)
    # a part's time: the least over passes of its pacer-scaled medians (a slow stretch
    # of the machine, or a burst of other work during one pass, does not stay in the table),
    # the median where they disagree; a whole network's: its time at the table's speed over
    # its steady measurements, as a search or the benchmark measures one after the build
    # (speed.py)
    passes = [calibrate.normalised(t) for t in timelines]
    best = {p.key: _part_time([done[p.key] for done in passes if p.key in done])
            for p in every + whole}
    if whole:  # (the reference of a build of under three networks is never timed between
        # two networks: it keeps the least above)
        fastest = min(ms for t in timelines for k, ms in t if k == calibrate.REFERENCE)
        rows = calibrate.network_rows(timelines)
        figures = {p.key: speed.at_table_speed(rows[p.key], fastest) for p in whole
                   if rows.get(p.key)}
        best |= {key: figure["ms"] for key, figure in figures.items()}
    entries = {k: v for k, v in best.items() if "/" not in k}
    checks = {k[len("check/"):]: v for k, v in best.items() if k.startswith("check/")}
    plain = LatencyTable({**header, "calibration": None}, entries)
    check = interpolation_error(plain, checks)
    extra = {"check": check, "entries": entries, "check_entries": checks}
    if networks:
        steady = {p.key: figures[p.key]["steady"] if p.key in figures else o.passes
                  for p in whole[1:]}  # the reference: its least, timed around each
        extra["calibration"] = fit_networks(plain, networks, whole, best, steady, o.passes)
        extra["reference"] = {"samples": sum(k == calibrate.REFERENCE for t in timelines
                                             for k, _ in t), "best_ms": fastest}
    done = publish(True, extra)
    if clock.networks is not None:
        clock.networks.remove()
    return done


def _time_parts(clock: Clock, parts: list, timeline: list[list[Any]], whole: list, pacer,
                publish, tick) -> None:
    """Time the ``parts`` not yet in ``timeline`` into it: the reference network
    (``whole``'s first) first and every ``calibrate.REFERENCE_EVERY`` parts, the pacer
    first, every ``calibrate.PACE_EVERY`` parts and after the last."""
    done = {key for key, _ in timeline}
    since = calibrate.REFERENCE_EVERY
    paced = calibrate.PACE_EVERY
    for probe in parts:
        if probe.key in done:
            continue
        if whole and since >= calibrate.REFERENCE_EVERY:
            timeline.append([calibrate.REFERENCE, clock.time(whole[0])])
            since = 0
        if pacer is not None and paced >= calibrate.PACE_EVERY:
            timeline.append([calibrate.PACE + pacer.key, clock.time(pacer)])
            paced = 0
        timeline.append([probe.key, clock.time(probe)])
        since, paced = since + 1, paced + 1
        publish()
        tick()
    last = timeline[-1][0] if timeline else calibrate.PACE
    if pacer is not None and not last.startswith((calibrate.PACE, "network/")):
        timeline.append([calibrate.PACE + pacer.key, clock.time(pacer)])  # the last's after
        publish()


def _disputed(passes: list[dict[str, float]], parts: list) -> list:
    """The parts whose scaled times over the passes (``calibrate.normalised``) differ by
    more than AGREE."""
    if len(passes) < 2:
        return []
    return [p for p in parts
            if max(done[p.key] for done in passes) > (1 + AGREE) * min(done[p.key]
                                                                       for done in passes)]


def _part_time(times: list[float]) -> float:
    """The least of a part's passes where they agree within AGREE, else their median."""
    if max(times) <= (1 + AGREE) * min(times) or len(times) < 3:
        return min(times)
    return float(np.median(times))


def fit_networks(plain: LatencyTable, networks: list, whole: list, best: dict[str, float],
                 steady: dict[str, int] | None = None, passes: int = 1) -> dict[str, Any]:
    """The calibration: each whole network's features from the plain table, its measured
    time and how many of its measurements were steady (``steady``; all where not given),
    the fit (each network weighed by ``calibrate.trust_of``), and how well it fits (and
    predicts a network left out); ``unsteady``: the networks with fewer steady measurements
    than ``passes``, a sign the machine was too busy for the table to be trusted."""
    measured = [best[probe.key] for probe in whole]
    counts = [(steady or {}).get(probe.key, passes) for probe in whole]
    trust = [calibrate.trust_of(n, passes) for n in counts]
    rows = [plain.raw_parts(g)[1] for g in networks]
    coefficients = calibrate.fit(rows, measured, trust)
    fitted = [float(np.dot(coefficients, r)) for r in rows]
    errors = [f / m - 1 for f, m in zip(fitted, measured, strict=True)]
    held_out = calibrate.leave_one_out(rows, measured, trust) if len(rows) > len(rows[0]) \
        else []
    return {"features": list(calibrate.FEATURES), "coefficients": coefficients,
            "networks": [{"name": g.name, "genotype": g.to_dict(), "measured_ms": m,
                          "parts_ms": r[1] + r[2] + r[3] + r[4], "fitted_ms": f, "steady": n}
                         for g, m, r, f, n in zip(networks, measured, rows, fitted, counts,
                                                  strict=True)],
            "unsteady": sum(n < passes for n in counts[1:]),
            "fit": {"mean_rel_error": float(np.mean(np.abs(errors))),
                    "max_rel_error": float(np.max(np.abs(errors))),
                    "leave_one_out_mean_rel_error": float(np.mean(np.abs(held_out)))
                    if held_out else None}}


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
