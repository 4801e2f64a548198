"""From parts to whole networks: a network is not the sum of its parts timed alone. Each part
alone pays what a network pays once (OpenVINO's fp32->bf16 and layout conversions at its
input and output, a session's fixed cost per run), and a backend fuses across parts. So a
build also measures 12 to 20 whole networks of the space (the first, a mid-size one, is the
*reference*) as a user runs them (``networks.py``: uint8 frame in, labels out), and fits
how the parts' sums make a network's time:

    ms = c0 + c1 (stem + head) + c2 (downsamplers) + c3 (blocks at full resolution)
            + c4 (blocks at half resolution) + c5 (blocks) + c6 (block inputs, M elements)

by least squares on relative errors (Huber's beyond 5%: a network timed during a burst of
other work on a shared machine does not bend the fit), pulled towards the two-number fit
``c0 + s (sum of parts)`` (c1..c4 = s, the rest 0) so a dozen networks do not overfit seven
numbers: on 40 networks per CPU path, pulling towards the plain sum (c0 = 0, s = 1) left the
kinds where the parts' sum is 30-100% off (OpenVINO, int8) with the pull's bias. One part
(the pacer) is timed every ``PACE_EVERY`` parts and the reference network every
``REFERENCE_EVERY``: a part measured while the machine ran slower than its fastest is
scaled by the pacer's best time over its time then, so a shared machine's slow seconds do
not stay in the table.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ssr_deploy.latency import speed

FEATURES = ("constant", "stem and head", "downsamplers", "blocks at full resolution",
            "blocks at half resolution", "blocks", "block inputs (M elements)")
PRIOR = (0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)  # the plain sum: where no network says more
SUMS = (1, 2, 3, 4)  # the features that are sums of parts' times
#: how far each coefficient may move from the two-number fit before the fit pays: the
#: constant and per-block terms in ms, the rest as factors
SCALE = (5.0, 0.5, 0.5, 0.5, 0.5, 1.0, 1.0)
RIDGE = 0.02
HUBER, HUBER_ROUNDS = 0.05, 20  # relative error beyond which a network's pull stops growing
MIN_TRUST = 0.1  # the least weight of a calibration network with no steady measurement
REFERENCE = "network/reference"
REFERENCE_EVERY = 80
#: a part's machine speed: one part of the table (the pacer, timeline key ``pace/<part>``)
#: timed before every PACE_EVERY parts and after the last. A shared machine's bursts of
#: other work last seconds: on one built during a busy hour, two builds' times of the same
#: parts, each corrected by the median of the 9 timed around it (their ratio), differed by
#: 8% (standard deviation of the log ratio), 24% uncorrected; the reference network, every
#: 80 parts (about 20 s), is too far apart to see them
PACE, PACE_EVERY = "pace/", 8


def genotypes(space, num_classes: int, n: int, seed: int) -> list:
    """``n`` networks across the space: the reference (half the depth and width), then
    depths spread evenly and widths at random (seeded apart from any benchmark's draws)."""
    if n == 0:
        return []
    rng = random.Random(7919 + seed)
    out = [space.sample(rng, num_classes, name="reference", depth=0.5, width=0.5)]
    for k in range(n - 1):
        depth = 0.1 + 0.9 * (k + 0.5) / (n - 1)
        out.append(space.sample(rng, num_classes, name=f"calibration-{k}", depth=depth,
                                width=rng.uniform(0.0, 1.0)))
    return out


def network_probe(genotype, o, seed: int = 0):
    """A whole network as a part to time: the network ``export onnx`` writes (uint8 frame in,
    labels out), seeded weights (speed does not depend on them)."""
    import torch

    from ssr_deploy.latency.parts import Probe
    from ssr_deploy.model.deploy import DeployModel
    from ssr_deploy.model.net import build_model
    from ssr_deploy.spec import runtime_io

    def module():
        torch.manual_seed(seed)
        return DeployModel(build_model(genotype, o.num_classes), runtime_io(o.num_classes)
                           ).eval()

    key = REFERENCE if genotype.name == "reference" else f"network/{genotype.name}"
    return Probe(key, module, [((o.batch, *o.size, 3), "uint8")], genotype)


def two_numbers(x: np.ndarray) -> np.ndarray:
    """The least-squares ``c0 + s (sum of parts)`` on relative errors (``x``: features over
    measured times) as seven coefficients; ``s`` alone where ``c0`` would be negative (a
    network faster than nothing), the plain sum (PRIOR) with fewer than three networks, or
    where the fit is not a sensible one (s <= 0)."""
    if len(x) < 3:
        return np.asarray(PRIOR, np.float64)
    total = x[:, list(SUMS)].sum(1)
    (c0, s), *_ = np.linalg.lstsq(np.stack([x[:, 0], total], axis=1), np.ones(len(x)),
                                  rcond=None)
    if c0 < 0:
        c0, s = 0.0, float(total.sum() / (total ** 2).sum())
    if not s > 0:
        return np.asarray(PRIOR, np.float64)
    out = np.zeros(len(PRIOR))
    out[0], out[list(SUMS)] = c0, s
    return out


def fit(rows: Sequence[Sequence[float]], measured: Sequence[float],
        trust: Sequence[float] | None = None) -> list[float]:
    """The coefficients (see the module): least squares on relative errors, ridge towards
    the two-number fit in units of SCALE; ``trust``: each network's weight (``trust_of``;
    default 1)."""
    x = np.asarray(rows, np.float64) / np.asarray(measured, np.float64)[:, None]
    y = np.ones(len(measured))
    prior, scale = two_numbers(x), np.asarray(SCALE)
    if len(measured) <= len(PRIOR):  # no more networks than coefficients: the two numbers
        return [float(c) for c in prior]
    trusted = np.ones(len(measured)) if trust is None else np.asarray(trust, np.float64)
    # minimise sum_i t_i w_i (x_i c - 1)^2 + RIDGE * |(c - prior) / scale|^2, the weights
    # w Huber's (iteratively reweighted): a network off the fit by more than HUBER counts
    # as if it were off by HUBER, so one timed during a burst of other work does not bend it
    w = np.ones(len(measured))
    for _ in range(HUBER_ROUNDS):
        tw = trusted * w
        a = (x * tw[:, None]).T @ x + RIDGE * np.diag(1 / scale ** 2)
        b = (x * tw[:, None]).T @ y + RIDGE * prior / scale ** 2
        c = np.linalg.solve(a, b)
        off = np.abs(x @ c - 1)
        w = np.minimum(1.0, HUBER / np.maximum(off, 1e-12))
    return [float(v) for v in c]


def trust_of(steady: int, passes: int) -> float:
    """A calibration network's weight in the fit: the share of its passes that were steady
    (the reference's times around it within ``speed.STEADY``), at least MIN_TRUST. On a
    build during which the reference ran 50-93 ms (OpenVINO bf16), 7 of 11 networks had
    fewer steady measurements than passes; weighing them so took the table from 73% to 80%
    of 40 networks within +-10% (tables built on calmer hours: OpenVINO int8's median error
    4.3% -> 3.6%, onnxruntime fp32 and int8 within 0.1 point of as built)."""
    return max(min(steady, passes) / passes, MIN_TRUST) if passes else 1.0


def leave_one_out(rows: Sequence[Sequence[float]], measured: Sequence[float],
                  trust: Sequence[float] | None = None) -> list[float]:
    """Each network's relative error predicted by a fit on the others."""
    errors = []
    for k in range(len(measured)):
        keep = [i for i in range(len(measured)) if i != k]
        c = fit([rows[i] for i in keep], [measured[i] for i in keep],
                None if trust is None else [trust[i] for i in keep])
        errors.append(float(np.dot(c, rows[k]) / measured[k] - 1))
    return errors


def normalised(timeline: list[list[Any]]) -> dict[str, float]:
    """A pass's times (``[key, ms]`` in the order measured), each scaled by its speed
    sample's best time in the pass over the faster of that sample's times right before and
    after it: a part's by the pacer's (``PACE``, every ``PACE_EVERY`` parts; the reference
    network's in a table built before the pacer), a whole network's by the reference's. A
    stretch the machine ran slow on both sides is taken out; a burst that ended, or began,
    between two samples is not (it is left to the passes), so no time is ever scaled below
    what was measured on a machine as fast as its fastest."""
    paced = any(key.startswith(PACE) for key, _ in timeline)
    out: dict[str, float] = {}
    for sample, mine in ((REFERENCE, lambda k: not paced or k.startswith("network/")),
                         (PACE, lambda k: paced and not k.startswith("network/"))):
        refs = [(i, ms) for i, (key, ms) in enumerate(timeline) if key.startswith(sample)]
        best = min((ms for _, ms in refs), default=None)
        for i, (key, ms) in enumerate(timeline):
            if not mine(key):
                continue
            around = [r for j, r in refs if j <= i][-1:] + [r for j, r in refs if j > i][:1]
            out[key] = ms * best / min(around) if around else ms
    return out


def network_rows(timelines: list[list[list[Any]]]) -> dict[str, list[speed.Row]]:
    """Each whole network's measurements in the passes' timelines as ``speed`` rows: its
    time with the reference's right before and right after it (the reference's own: each
    of its times between two networks, with the reference's times beyond them)."""
    out: dict[str, list[speed.Row]] = {}
    for timeline in timelines:
        keys = [key for key, _ in timeline]
        for i, (key, ms) in enumerate(timeline):
            step = 2 if key == REFERENCE else 1
            if key.startswith("network/") and step <= i < len(keys) - step and \
                    keys[i - step] == keys[i + step] == REFERENCE and \
                    all(k.startswith("network/") for k in keys[i - step:i + step + 1]):
                out.setdefault(key, []).append((ms, timeline[i - step][1],
                                                timeline[i + step][1]))
    return out


def measure_networks(clock, probes: list, passes: list[list[list[Any]]],
                     publish: Callable[[], None], tick: Callable[[], None]) -> None:
    """Time each whole network once per pass into the passes' timelines, the reference
    (``probes[0]``) timed right before and after each, so every network has the machine's
    speed on both sides of it; one timed while that speed changed is timed again (up to
    ``speed.TRIES`` times); publishing after each."""
    if not probes:
        return
    reference = probes[0]
    for timeline in passes:
        done = {key for key, _ in timeline if key != REFERENCE}
        for probe in [p for p in probes[1:] if p.key not in done]:
            last = timeline[-1] if timeline else None
            rows = speed.measure(lambda p=probe: clock.time(p), lambda: clock.time(reference),
                                 1, before=last[1] if last and last[0] == REFERENCE else None)
            for ms, before, after in rows:
                if not (timeline and timeline[-1][0] == REFERENCE):
                    timeline.append([REFERENCE, before])
                timeline += [[probe.key, ms], [REFERENCE, after]]
            clock.forget(probe.key)
            publish()
            tick()
        if timeline and timeline[-1][0] != REFERENCE:  # cut between a network and its after
            timeline.append([REFERENCE, clock.time(reference)])
            publish()
