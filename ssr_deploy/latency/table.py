"""A latency table (``lut.json``): what each part of a network of the space takes on one
device through one backend, and from it a network's predicted latency, exact for a
genotype and differentiable for the supernet.

Parts, each timed alone in the shapes it has in the network (``ssr_deploy.latency``
measures them): ``io`` on a GPU (the frame's copy in, the labels' copy out), ``stem`` (with
the fused input conversion), each stage's downsampler
(``down{s}.{width in}``), every candidate block (``stage{s}.d{D}.r{R}.{in}-{mid}-{out}``)
and the head (``head.{first}-{last}``, with the fused argmax). A network's latency is the sum
of its parts; ``skip`` layers cost nothing (they leave the graph).

Widths are measured on a grid (by default the widest, middle and narrowest of a stage's
options) and interpolated linearly between grid points; a dilation measured only at the
widest widths scales the base dilation's width surface by its ratio there. The table
records how far that interpolation is from direct measurements (``check``).

A network is not the sum of its parts timed alone: the table carries a calibration, fitted on
whole networks measured during the build (``calibrate.py``), that turns the parts' sums by
kind into the network's end-to-end time; ``predict`` and ``expected_ms`` apply it.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import read_json
from ssr_deploy.space import SearchSpace

FORMAT = 3  # 2: calibrated on whole networks; 3: timed as a user runs them
KIND = "ssr-deploy latency table"


def diagonal(gi: list[int], gm: list[int], go: list[int]) -> list[tuple[int, int, int]]:
    """Where a dilation measured off the grid is timed: the widest, middle and narrowest
    widths of each grid; its ratio to the base dilation is the median over the three."""
    points = [tuple(g[round(t * (len(g) - 1))] for g in (gi, gm, go)) for t in (0, 0.5, 1)]
    return list(dict.fromkeys(points))


def one_hot(options: list[int], width: int) -> Tensor:
    """A discrete width as weights over a stage's width options."""
    return torch.tensor([float(width == v) for v in options], dtype=torch.float64)


def grid_widths(options: list[int], points: int) -> list[int]:
    """``points`` widths spread evenly over a stage's ``options`` (widest first), both ends
    included; every option when ``points`` >= len(options)."""
    n = len(options)
    if points >= n or n == 1:
        return list(options)
    idx = sorted({round(k * (n - 1) / (points - 1)) for k in range(points)})
    return [options[i] for i in idx]


def block_key(stage: int, dilation: int, resolution: float, w_in: int, mid: int, out: int
              ) -> str:
    return f"stage{stage}.d{dilation}.r{resolution:g}.{w_in}-{mid}-{out}"


def down_key(stage: int, w_in: int) -> str:
    return f"down{stage}.{w_in}"


def head_key(first: int, last: int) -> str:
    return f"head.{first}-{last}"


def hat_weights(x: Tensor, points: list[int]) -> Tensor:
    """Weights over ``points`` (widths, any order) that interpolate linearly at ``x``: the
    two neighbours of ``x`` share 1, piecewise linear (so differentiable) in ``x``. An ``x``
    outside the points is refused."""
    x = torch.as_tensor(x, dtype=torch.float64)
    low, high = min(points), max(points)
    if len(points) == 1:
        return torch.ones(1, dtype=torch.float64)
    if not low - 1e-3 <= float(x.detach()) <= high + 1e-3:  # float32 weights sum to 1 +- eps
        raise SsrDeployError(f"width {float(x):g} is outside the table's {low} to {high}; "
                             "measure a table for this space (ssr-deploy lut build --space)")
    ordered = sorted(points)
    weights = []
    for p in points:
        k = ordered.index(p)
        rise = (x - ordered[k - 1]) / (p - ordered[k - 1]) if k > 0 else None
        fall = (ordered[k + 1] - x) / (ordered[k + 1] - p) if k + 1 < len(ordered) else None
        w = rise if fall is None else fall if rise is None else torch.minimum(rise, fall)
        weights.append(w.clamp(0, 1))
    return torch.stack(weights)


MAX_MS = 1e6  # a part slower than 1000 s is not a measurement


def _entries(raw: Any, path: Path) -> dict[str, float]:
    """The table's part times: each a finite number of ms above 0 (a NaN, a negative or a
    1e308 entry would make every prediction from it nonsense)."""
    if not isinstance(raw, dict):
        raise SsrDeployError(f"latency table {path}: entries is not an object; build it again")
    for key, value in raw.items():
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or not 0 < value <= MAX_MS):
            raise SsrDeployError(f"latency table {path}: part {str(key)[:60]} is "
                                 f"{str(value)[:30]} ms; a part's time is a number of ms above "
                                 f"0 and at most {MAX_MS:g}: build the table again")
    return {str(k): float(v) for k, v in raw.items()}


def _check_meta(meta: dict[str, Any], path: Path) -> None:
    """The settings predictions read: classes, size, batch, grid, device (typed, bounded)."""
    def whole(value: Any, high: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high

    grid = meta.get("width_grid")
    problems = [
        ("num_classes", not whole(meta.get("num_classes"), 65536)),
        ("size", not (isinstance(meta.get("size"), list) and len(meta["size"]) == 2
                      and all(whole(v, 8192) for v in meta["size"]))),
        ("batch", not whole(meta.get("batch"), 1024)),
        ("width_grid", not (whole(grid, 64) or isinstance(grid, list) and len(grid) == 3
                            and all(whole(v, 64) for v in grid))),
        ("device", not isinstance(meta.get("device"), str)),
        ("backend", not isinstance(meta.get("backend"), str))]
    bad = [name for name, wrong in problems if wrong]
    if bad:
        raise SsrDeployError(f"latency table {path}: {bad[0]} is {str(meta.get(bad[0]))[:40]}"
                             "; build the table again")


@dataclass
class LatencyTable:
    """A measured table: ``meta`` (backend, device, size, space, machine ...) and ``entries``
    (key -> ms)."""

    meta: dict[str, Any]
    entries: dict[str, float]
    path: str = ""  # the file it was loaded from, and that file's sha256
    sha256: str = ""

    # ---- files ----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        path = Path(path)
        data = read_json(path, "latency table")
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise SsrDeployError(f"{path} is not a latency table (make one with `ssr-deploy "
                                 "lut build`)")
        if data.get("format") == 1:
            raise SsrDeployError(f"{path} was built before tables were calibrated on whole "
                                 "networks (its sums of parts were 15-70% off them): build it "
                                 "again with the same `ssr-deploy lut build` and another -o")
        if data.get("format") == 2:
            raise SsrDeployError(f"{path} was calibrated on whole networks timed as parts are, "
                                 "not as `bench` runs them (7-13% off on OpenVINO int8): build "
                                 "it again with the same `ssr-deploy lut build` and another -o")
        if data.get("format") != FORMAT:
            raise SsrDeployError(f"{path} has table format {data.get('format')}; this "
                                 f"ssr-deploy reads format {FORMAT}: build it again")
        if not data.get("complete"):
            raise SsrDeployError(f"{path} is unfinished ({len(data.get('entries', {}))} parts "
                                 "measured): run the same `ssr-deploy lut build` again to "
                                 "finish it")
        meta = {k: v for k, v in data.items() if k != "entries"}
        table = cls(meta, _entries(data.get("entries"), path), str(path),
                    hashlib.sha256(path.read_bytes()).hexdigest())
        _check_meta(meta, path)
        table.check_entries()
        table.coefficients  # noqa: B018 - checked now, not at the first prediction
        return table

    @cached_property
    def coefficients(self) -> list[float]:
        """The calibration's coefficients over ``calibrate.FEATURES`` (the plain sum of
        parts for a table built with --calibrate 0)."""
        from ssr_deploy.latency.calibrate import FEATURES, PRIOR

        found = (self.meta.get("calibration") or {}).get("coefficients")
        if found is None:
            return list(PRIOR)
        if not (isinstance(found, list) and len(found) == len(FEATURES) and all(
                isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)
                and abs(c) < 1e6 for c in found)):
            raise SsrDeployError(f"latency table {self.path}: calibration.coefficients is "
                                 f"{str(found)[:60]}; build the table again")
        return [float(c) for c in found]

    @cached_property
    def space(self) -> SearchSpace:
        return SearchSpace.from_dict(self.meta["space"], f"latency table {self.path}: space")

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def reference(self):
        """(the reference network the build timed beside its parts, its best ms in the
        build), or (None, None) for a table calibrated on no network."""
        from ssr_deploy.genotype import Genotype

        networks = (self.meta.get("calibration") or {}).get("networks") or []
        found = [n["genotype"] for n in networks if n.get("name") == "reference"]
        best = (self.meta.get("reference") or {}).get("best_ms")
        if not found or not best:
            return None, None
        return Genotype.from_dict(found[0]), float(best)

    def describe(self) -> str:
        m = self.meta
        return (f"{m['backend']} {m['device']} {m.get('precision', 'fp32')} at "
                f"{m['size'][0]}x{m['size'][1]}, batch {m['batch']}")

    # ---- the grids ------------------------------------------------------------------
    def grid(self, stage: int, dim: str = "mid") -> list[int]:
        """The widths measured for a stage's blocks along ``dim`` (in, mid or out); the
        head is measured on the mid grids, the next stage's downsampler on the out grid."""
        points = self.meta["width_grid"]
        if not isinstance(points, int):
            points = points[("in", "mid", "out").index(dim)]
        return grid_widths(self.space.widths(stage), int(points))

    def check_entries(self) -> None:
        missing = [k for k in self.required() if k not in self.entries]
        if missing:
            raise SsrDeployError(f"latency table {self.path} lacks {len(missing)} "
                                 f"parts (first: {missing[0]}); build it again")

    def required(self) -> list[str]:
        """Every key the table must hold for its space and grid."""
        space, keys = self.space, ["stem"]
        if str(self.meta.get("device", "cpu")).startswith("cuda"):
            keys.append("io")
        base = space.dilations[0]
        dilations = space.dilations if self.meta.get("every_dilation") else (base,)
        prev = [space.stem_channels]
        for s in range(len(space.stages)):
            keys += [down_key(s, w) for w in prev]
            gi, gm, go = (self.grid(s, dim) for dim in ("in", "mid", "out"))
            for r in space.resolutions:
                for d in dilations:
                    keys += [block_key(s, d, r, i, m, o) for i in gi for m in gm for o in go]
                for d in space.dilations:
                    if d not in dilations:
                        keys += [block_key(s, d, r, *c) for c in diagonal(gi, gm, go)]
            prev = go
        keys += [head_key(f, last) for f in self.grid(0) for last in self.grid(len(space.stages)
                                                                             - 1)]
        return keys

    # ---- parts ----------------------------------------------------------------------
    @cached_property
    def _surfaces(self) -> dict[tuple[int, int, float], Tensor]:
        """(stage, dilation, resolution) -> (G, G, G) ms over the grid (in, mid, out)."""
        space, out = self.space, {}
        base = space.dilations[0]
        for s in range(len(space.stages)):
            gi, gm, go = (self.grid(s, dim) for dim in ("in", "mid", "out"))
            for r in space.resolutions:
                def surface(d: int, s: int = s, r: float = r, gi=gi, gm=gm, go=go) -> Tensor:
                    return torch.tensor([[[self.entries[block_key(s, d, r, i, m, o)]
                                           for o in go] for m in gm] for i in gi],
                                        dtype=torch.float64)

                base_surface = surface(base)
                for d in space.dilations:
                    if d == base or self.meta.get("every_dilation"):
                        out[s, d, r] = surface(d)
                    else:  # measured on the grids' diagonal: scale the base surface
                        ratio = statistics.median(
                            self.entries[block_key(s, d, r, *c)]
                            / self.entries[block_key(s, base, r, *c)]
                            for c in diagonal(gi, gm, go))
                        out[s, d, r] = base_surface * ratio
        return out

    def block_ms(self, stage: int, dilation: int, resolution: float, w_in: Tensor | float,
                 mid: Tensor, out: Tensor) -> Tensor:
        """ms of a block; ``w_in`` a width (a tensor: differentiable), ``mid`` and ``out``
        weights over the stage's width options (one-hot for a discrete layer)."""
        surface = self._surfaces[stage, dilation, float(resolution)]
        return torch.einsum("a,abc,b,c->", hat_weights(w_in, self.grid(stage, "in")), surface,
                            mid @ self._to_grid[stage, "mid"], out @ self._to_grid[stage, "out"])

    def block_table(self, stage: int, dilation: int, resolution: float) -> Tensor:
        """ms of a block at every (in, mid, out) width option of its stage, [in, mid, out]."""
        options = self.space.widths(stage)
        to_in = torch.stack([hat_weights(float(w), self.grid(stage, "in")) for w in options])
        return torch.einsum("ia,abc,mb,oc->imo", to_in,
                            self._surfaces[stage, dilation, float(resolution)],
                            self._to_grid[stage, "mid"], self._to_grid[stage, "out"])

    @cached_property
    def _to_grid(self) -> dict[tuple[int, str], Tensor]:
        """(stage, dim) -> (options, G): each width option as weights over that grid."""
        return {(s, dim): torch.stack([hat_weights(float(w), self.grid(s, dim))
                                       for w in self.space.widths(s)])
                for s in range(len(self.space.stages)) for dim in ("mid", "out")}

    def down_ms(self, stage: int, w_in: Tensor | float) -> Tensor:
        if stage == 0:
            return torch.tensor(self.entries[down_key(0, self.space.stem_channels)],
                                dtype=torch.float64)
        g = self.grid(stage - 1, "out")
        values = torch.tensor([self.entries[down_key(stage, w)] for w in g], dtype=torch.float64)
        return hat_weights(w_in, g) @ values

    def head_ms(self, first: Tensor | float, last: Tensor | float) -> Tensor:
        gf, gl = self.grid(0), self.grid(len(self.space.stages) - 1)
        values = torch.tensor([[self.entries[head_key(f, la)] for la in gl] for f in gf],
                              dtype=torch.float64)
        return hat_weights(first, gf) @ values @ hat_weights(last, gl)

    # ---- networks -------------------------------------------------------------------
    def check_genotype(self, genotype, num_classes: int | None = None) -> None:
        space, num_classes = self.space, num_classes or genotype.num_classes
        shape = (genotype.stem_channels, [(s.stride, s.channels, len(s.layers))
                                          for s in genotype.stages])
        want = (space.stem_channels, [(s.stride, s.channels, s.max_layers)
                                      for s in space.stages])
        fits = len(shape[1]) == len(want[1]) and all(
            a[:2] == b[:2] and a[2] <= b[2] for a, b in zip(shape[1], want[1], strict=False))
        if shape[0] != want[0] or not fits or genotype.head != space.head:
            raise SsrDeployError(f"{genotype.name} is not a network of this table's space "
                                 f"(stem, stages {want[1]}, the space's head); build a table "
                                 "with that network's space (ssr-deploy lut build --space)")
        if num_classes != self.num_classes:
            raise SsrDeployError(f"the table was measured for {self.num_classes} classes and "
                                 f"{genotype.name} has {num_classes}; build it with "
                                 f"--classes {num_classes}")
        for s, stage in enumerate(genotype.stages):
            for j, layer in enumerate(stage.layers):
                if layer.is_skip:
                    if not space.skip:
                        raise SsrDeployError(f"stages[{s}].layers[{j}] is skip, which this "
                                             "table's space has not")
                    continue
                if (layer.dilation, layer.resolution) not in space.ops():
                    raise SsrDeployError(f"stages[{s}].layers[{j}] ({layer.describe()}) is not "
                                         "an op of this table's space")

    def block_elements(self, stage: int, w_in: Tensor | float) -> Tensor:
        """A block's input, in millions of elements (batch x width x its stage's pixels)."""
        h, w = self.meta["size"]
        stride = self.space.stages[stage].stride
        return torch.as_tensor(w_in, dtype=torch.float64) * (
            self.meta["batch"] * (h // stride) * (w // stride) / 1e6)

    def raw_parts(self, genotype, num_classes: int | None = None
                  ) -> tuple[dict[str, float], list[float]]:
        """({module: ms as timed alone}, the calibration's features) of a discrete network."""
        self.check_genotype(genotype, num_classes)
        parts: dict[str, float] = {"stem": self.entries["stem"]}
        if "io" in self.entries:
            parts["io"] = self.entries["io"]
        f = [1.0, self.entries["stem"] + self.entries.get("io", 0.0), 0.0, 0.0, 0.0, 0.0, 0.0]
        w_prev, outs = self.space.stem_channels, []
        for s, stage in enumerate(genotype.stages):
            parts[f"stages.{s}.down"] = float(self.down_ms(s, w_prev))
            f[2] += parts[f"stages.{s}.down"]
            options = self.space.widths(s)
            for j, layer in enumerate(stage.layers):
                if layer.is_skip:
                    continue
                if layer.mid_channels not in options or layer.out_channels not in options:
                    raise SsrDeployError(f"stages[{s}].layers[{j}]: widths {layer.mid_channels}"
                                         f"/{layer.out_channels} are not options of this "
                                         f"table's space ({options})")
                ms = float(self.block_ms(
                    s, layer.dilation, layer.resolution, float(layer.in_channels),
                    one_hot(options, layer.mid_channels), one_hot(options, layer.out_channels)))
                parts[f"stages.{s}.layers.{j}"] = ms
                f[3 if layer.resolution == 1 else 4] += ms
                f[5] += 1
                f[6] += float(self.block_elements(s, float(layer.in_channels)))
            w_prev = stage.out_channels
            outs.append(w_prev)
        parts["head"] = float(self.head_ms(outs[0], outs[-1]))
        f[1] += parts["head"]
        return parts, f

    def predict(self, genotype, num_classes: int | None = None) -> dict[str, Any]:
        """``{"latency_ms": total, "parts": {module: ms}, "parts_ms": the plain sum}`` for a
        discrete network (with ``num_classes`` outputs, default its class list): the
        calibrated end-to-end time, each module's share of it (named as ``profile`` names
        them: ``stem``, ``stages.1.layers.4``, ``head``; ``overhead``: the network's fixed
        cost), and the sum of the parts timed alone."""
        raw, f = self.raw_parts(genotype, num_classes)
        c = self.coefficients
        parts = {"overhead": c[0]}
        for module, ms in raw.items():
            if module in ("stem", "io", "head"):
                parts[module] = c[1] * ms
            elif module.endswith(".down"):
                parts[module] = c[2] * ms
            else:
                s, j = (int(v) for v in module.split(".")[1::2])
                layer = genotype.stages[s].layers[j]
                parts[module] = (c[3] if layer.resolution == 1 else c[4]) * ms + c[5] + c[6] * \
                    float(self.block_elements(s, float(layer.in_channels)))
        total = float(sum(ci * fi for ci, fi in zip(c, f, strict=True)))
        return {"latency_ms": total, "parts": parts, "parts_ms": sum(raw.values())}

    def expected_ms(self, net, full: bool = False) -> Tensor:
        """The supernet's expected latency under its architecture weights: per layer, the
        probability-weighted latency of its options (expected in-width from the layer
        before); exact for a one-hot supernet (= ``predict`` of its genotype). ``full``: the
        slowest network of the space (every layer its slowest op at the widest widths)."""
        space = self.space
        op_p, mid_p, out_p = net.probs()
        op_p, mid_p, out_p = (p.cpu().double() for p in (op_p, mid_p, out_p))
        if full:
            mid_p = torch.zeros_like(mid_p)
            mid_p[..., 0] = 1
            out_p = mid_p.clone()
        zero = torch.zeros((), dtype=torch.float64)
        # the calibration's features (calibrate.FEATURES), as expectations
        f = [zero + 1, zero + self.entries["stem"] + self.entries.get("io", 0.0), zero, zero,
             zero, zero, zero]
        w_in, li, outs = torch.tensor(float(space.stem_channels), dtype=torch.float64), 0, []
        for s, st in enumerate(space.stages):
            f[2] = f[2] + self.down_ms(s, w_in)
            widths = torch.tensor(space.widths(s), dtype=torch.float64)
            e_in = torch.tensor(float(st.channels), dtype=torch.float64)
            for _ in range(st.max_layers):
                rows, e_outs, probs = [], [], []  # per op: (full-res ms, half-res ms, blocks)
                for i, op in enumerate(net.op_list):
                    if not full and not net.op_valid[li, i]:
                        continue
                    if op == ("skip",):
                        rows.append((zero, zero, zero))
                        e_outs.append(e_in)
                    else:
                        ms = self.block_ms(s, op[0], op[1], e_in, mid_p[li, i], out_p[li, i])
                        rows.append((ms, zero, zero + 1) if op[1] == 1 else (zero, ms, zero + 1))
                        e_outs.append(out_p[li, i] @ widths)
                    probs.append(op_p[li, i])
                if full:  # the slowest op, at the widest widths
                    k = max(range(len(rows)), key=lambda n: float(sum(rows[n][:2])))
                    p = torch.zeros(len(rows), dtype=torch.float64)
                    p[k] = 1
                else:
                    p = torch.stack(probs)
                block = p @ torch.stack([r[2] for r in rows])  # the chance of a block
                f[3] = f[3] + p @ torch.stack([r[0] for r in rows])
                f[4] = f[4] + p @ torch.stack([r[1] for r in rows])
                f[5] = f[5] + block
                f[6] = f[6] + block * self.block_elements(s, e_in)
                e_in = p @ torch.stack(e_outs)
                li += 1
            outs.append(e_in)
            w_in = e_in
        f[1] = f[1] + self.head_ms(outs[0], outs[-1])
        return sum(c * fi for c, fi in zip(self.coefficients, f, strict=True))
