"""The genotype: a discrete SSR network as plain data, the contract between search and deploy.

A genotype is JSON (``"format": 1``). Loading validates every field and names the
offending one (``stages[1].layers[4].dilation``), the value and what is allowed.
Its ``hash`` is the sha256 of the canonical JSON of everything but ``name`` and
``description``, so two files that describe the same network hash the same.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ssr_deploy.errors import GenotypeError
from ssr_deploy.io import atomic_write_text, dumps_compact, read_json
from ssr_deploy.names import name_problem, text_problem

FORMAT = 1
MAX_CHANNELS = 4096  # widths beyond this are typos (a 10^7-channel layer needs terabytes)
MAX_CLASSES = 65536
DILATIONS = (1, 2, 4, 8, 16)
RESOLUTIONS = (1.0, 0.5)
OPS = ("fr", "skip")  # fr: factorised residual block; skip: identity (removes a layer)
COLORS = ("rgb", "bgr")


@dataclass(frozen=True)
class Layer:
    """One searchable layer: a factorised residual block (``fr``) or ``skip``.

    ``fr``: [maxpool 2 if resolution 0.5] -> conv3x1 (dilation, in -> mid) -> BN -> ReLU
    -> conv1x3 (dilation, mid -> out) -> BN -> [upsample] -> Dropout2d -> residual -> ReLU.
    """

    op: str
    dilation: int | None = None
    resolution: float | None = None
    in_channels: int | None = None
    mid_channels: int | None = None
    out_channels: int | None = None

    @property
    def is_skip(self) -> bool:
        return self.op == "skip"

    def describe(self) -> str:
        if self.is_skip:
            return "skip"
        res = "1" if self.resolution == 1.0 else "1/2"
        return f"fr d={self.dilation} r={res}"

    def to_dict(self) -> dict[str, Any]:
        if self.is_skip:
            return {"op": "skip"}
        return {"op": self.op, "dilation": self.dilation, "resolution": self.resolution,
                "in": self.in_channels, "mid": self.mid_channels, "out": self.out_channels}


@dataclass(frozen=True)
class Stage:
    """A downsampler (to ``channels``, halving the resolution) followed by ``layers``."""

    stride: int
    channels: int
    dropout: float
    layers: tuple[Layer, ...]

    @property
    def out_channels(self) -> int:
        widths = [layer.out_channels for layer in self.layers if not layer.is_skip]
        return widths[-1] if widths else self.channels

    @property
    def depth(self) -> int:
        return sum(not layer.is_skip for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"stride": self.stride, "channels": self.channels, "dropout": self.dropout,
                "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class Head:
    """PSP on the last stage + a low-level branch (first stage + pooled stem) + fusion."""

    psp_bins: tuple[int, ...]
    psp_width: int
    psp_out: int
    low_width: int
    fusion_width: int
    dropout: float

    def to_dict(self) -> dict[str, Any]:
        return {"psp_bins": list(self.psp_bins), "psp_width": self.psp_width,
                "psp_out": self.psp_out, "low_width": self.low_width,
                "fusion_width": self.fusion_width, "dropout": self.dropout}


@dataclass(frozen=True)
class InputSpec:
    """How a frame becomes the network input: ``(pixel / 255 - mean) / std`` in ``color`` order."""

    color: str = "rgb"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"color": self.color, "mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Genotype:
    """A discrete network: stem downsampler, stages, head, classes and input normalisation."""

    name: str
    stem_channels: int
    stages: tuple[Stage, ...]
    head: Head
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    input: InputSpec = field(default_factory=InputSpec)
    bn_eps: float = 1e-3
    description: str = ""

    def __post_init__(self) -> None:
        """The names travel into configs and sidecars: refused here, however made."""
        for where, value in (("name", self.name), *((f"classes[{i}]", c) for i, c in
                                                    enumerate(self.classes))):
            if problem := name_problem(value):
                raise GenotypeError(f"genotype {where} {_short(value)!r} {problem}")

    # ---- derived facts -------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def output_stride(self) -> int:
        return self.stages[-1].stride

    def size_rule(self) -> tuple[int, int]:
        """(multiple, minimum) that input height and width must satisfy, in pixels."""
        minimum = self.output_stride
        for stage in self.stages:
            if any(layer.resolution == 0.5 for layer in stage.layers):
                minimum = max(minimum, 2 * stage.stride)
        return self.output_stride, minimum

    def check_input_size(self, height: int, width: int) -> None:
        """Raise a GenotypeError naming the rule if the network cannot take ``height x width``."""
        multiple, minimum = self.size_rule()
        if height % multiple == 0 and width % multiple == 0 and min(height, width) >= minimum:
            return

        def nearest(n: int) -> int:
            return max(minimum, multiple * round(n / multiple))

        raise GenotypeError(
            f"input size {height}x{width} does not fit {self.name}: height and width must be "
            f"multiples of {multiple} and at least {minimum}; "
            f"try {nearest(height)}x{nearest(width)}")

    @property
    def hash(self) -> str:
        """sha256 of the canonical JSON of the architecture (name and description excluded)."""
        arch = self.to_dict()
        del arch["name"], arch["description"]
        canonical = json.dumps(arch, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def modules(self) -> dict[str, str]:
        """The network's modules, named as ``SSRNet`` names them (and exported nodes carry
        them), each with its op in words: ``{"stem": "downsampler", "stages.0.layers.1":
        "fr d=2 r=1", ..., "head.classifier": "classifier"}``."""
        ops = {"stem": "downsampler"}
        for i, stage in enumerate(self.stages):
            ops[f"stages.{i}.down"] = "downsampler"
            for j, layer in enumerate(stage.layers):
                ops[f"stages.{i}.layers.{j}"] = layer.describe()
        ops.update({"head.psp": "psp", "head.low": "low-level conv3x3", "head.fuse": "fusion",
                    "head.classifier": "classifier"})
        return ops

    # ---- JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "description": self.description,
                "stem": {"channels": self.stem_channels},
                "stages": [stage.to_dict() for stage in self.stages],
                "head": self.head.to_dict(),
                "classes": list(self.classes),
                "palette": [list(color) for color in self.palette],
                "input": self.input.to_dict(), "bn_eps": self.bn_eps}

    def to_json(self) -> str:
        return dumps_compact(self.to_dict()) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write the genotype as JSON, atomically."""
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "genotype") -> Genotype:
        return _parse(data, source)

    @classmethod
    def load(cls, name_or_path: str | Path) -> Genotype:
        """Load a zoo genotype by name (``"ssr-cityscapes"``) or a JSON file by path."""
        path = Path(name_or_path)
        if not path.is_file():
            if str(name_or_path) in zoo_names():
                path = Path(str(resources.files("ssr_deploy.zoo") / f"{name_or_path}.json"))
            elif path.exists():
                raise GenotypeError(f"genotype {path} is a folder or not a regular file; give "
                                    "a genotype JSON file or a zoo name")
            else:
                raise GenotypeError(
                    f"no genotype '{name_or_path}': not a file, and the zoo has "
                    f"{', '.join(zoo_names())} (see `ssr-deploy info --list`)")
        data = read_json(path, "genotype", GenotypeError)
        return _parse(data, str(path))


def zoo_names() -> list[str]:
    """Names of the built-in genotypes."""
    folder = resources.files("ssr_deploy.zoo")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct, deterministic colours for ``n`` classes (golden-ratio hue steps)."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        k = [(5 + hue * 6) % 6, (3 + hue * 6) % 6, (1 + hue * 6) % 6]
        colors.append(tuple(int(255 * (0.9 - 0.7 * max(0.0, min(x, 4 - x, 1)))) for x in k))
    return tuple(colors)


# ---- parsing with errors that name the field ------------------------------------------

def _parse(data: Any, source: str) -> Genotype:
    r = FieldReader(source)
    top = r.mapping(data, "", required=("format", "name", "stem", "stages", "head", "classes"),
                    optional=("description", "palette", "input", "bn_eps"))
    fmt = r.integer(top, "format", "format", minimum=1)
    if fmt != FORMAT:
        raise GenotypeError(
            f"{source}: format {fmt} is not supported; this ssr-deploy reads format {FORMAT} "
            "(upgrade ssr-deploy for newer files)")
    name = r.name(top, "name", "name")
    stem = r.mapping(top["stem"], "stem", required=("channels",))
    stem_channels = r.integer(stem, "channels", "stem.channels", minimum=4,
                              maximum=MAX_CHANNELS)

    stages_raw = r.sequence(top["stages"], "stages", min_len=1, max_len=8)
    stages, channels, stride = [], stem_channels, 2
    for i, raw in enumerate(stages_raw):
        stage = _parse_stage(r, raw, f"stages[{i}]", channels, 2 * stride)
        stages.append(stage)
        channels, stride = stage.out_channels, stage.stride

    head = parse_head(r, top["head"])
    classes = tuple(r.name(c, None, f"classes[{i}]")
                    for i, c in enumerate(r.sequence(top["classes"], "classes", min_len=1,
                                                     max_len=MAX_CLASSES)))
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise GenotypeError(f"{source}: classes: {', '.join(dupes)} appear more than once; "
                            "class names must be unique")
    palette = _parse_palette(r, top.get("palette"), len(classes))
    spec = _parse_input(r, top.get("input", {}))
    bn_eps = r.number(top, "bn_eps", "bn_eps", low=0.0, high=1.0, default=1e-3,
                      open_low=True, open_high=True)
    description = r.string(top, "description", "description", default="")
    if problem := text_problem(description):
        raise GenotypeError(f"{source}: description {problem}")
    return Genotype(name=name, description=description, stem_channels=stem_channels,
                    stages=tuple(stages), head=head, classes=classes, palette=palette,
                    input=spec, bn_eps=bn_eps)


def _parse_stage(r: FieldReader, raw: Any, path: str, in_channels: int, stride: int) -> Stage:
    d = r.mapping(raw, path, required=("stride", "channels", "layers"), optional=("dropout",))
    got_stride = r.integer(d, "stride", f"{path}.stride")
    if got_stride != stride:
        r.fail(f"{path}.stride", got_stride,
               f"{stride} (each stage's downsampler halves the resolution)")
    channels = r.integer(d, "channels", f"{path}.channels", maximum=MAX_CHANNELS)
    if channels <= in_channels:
        r.fail(f"{path}.channels", channels,
               f"more than the {in_channels} channels coming in (the downsampler concatenates "
               "a max-pool of its input with a strided conv)")
    dropout = r.number(d, "dropout", f"{path}.dropout", low=0.0, high=1.0, default=0.0,
                       open_high=True)
    layers, width = [], channels
    for j, raw_layer in enumerate(r.sequence(d["layers"], f"{path}.layers", max_len=64)):
        layer = _parse_layer(r, raw_layer, f"{path}.layers[{j}]", width)
        layers.append(layer)
        width = width if layer.is_skip else layer.out_channels
    return Stage(stride=stride, channels=channels, dropout=dropout, layers=tuple(layers))


def _parse_layer(r: FieldReader, raw: Any, path: str, in_channels: int) -> Layer:
    d = r.mapping(raw, path, required=("op",),
                  optional=("dilation", "resolution", "in", "mid", "out"))
    op = d["op"]
    if op not in OPS:
        r.fail(f"{path}.op", op, ", ".join(OPS))
    if op == "skip":
        extra = sorted(set(d) - {"op"})
        if extra:
            r.fail(f"{path}.{extra[0]}", d[extra[0]], "nothing: a skip layer has only 'op'")
        return Layer(op="skip")
    r.mapping(d, path, required=("op", "dilation", "resolution", "in", "mid", "out"))
    dilation = r.integer(d, "dilation", f"{path}.dilation", allowed=DILATIONS)
    resolution = r.number(d, "resolution", f"{path}.resolution", allowed=RESOLUTIONS)
    got_in = r.integer(d, "in", f"{path}.in")
    if got_in != in_channels:
        r.fail(f"{path}.in", got_in,
               f"{in_channels}, the width coming from the layer before (widths must chain)")
    return Layer(op="fr", dilation=dilation, resolution=resolution, in_channels=got_in,
                 mid_channels=r.integer(d, "mid", f"{path}.mid", maximum=MAX_CHANNELS),
                 out_channels=r.integer(d, "out", f"{path}.out", maximum=MAX_CHANNELS))


def parse_head(r: FieldReader, raw: Any) -> Head:
    keys = ("psp_bins", "psp_width", "psp_out", "low_width", "fusion_width")
    d = r.mapping(raw, "head", required=keys, optional=("dropout",))
    bins = tuple(r.integer(b, None, f"head.psp_bins[{i}]", maximum=64)
                 for i, b in enumerate(r.sequence(d["psp_bins"], "head.psp_bins", min_len=1)))
    if len(set(bins)) != len(bins):
        r.fail("head.psp_bins", list(bins), "distinct bin counts")
    return Head(psp_bins=bins,
                psp_width=r.integer(d, "psp_width", "head.psp_width", maximum=MAX_CHANNELS),
                psp_out=r.integer(d, "psp_out", "head.psp_out", maximum=MAX_CHANNELS),
                low_width=r.integer(d, "low_width", "head.low_width", maximum=MAX_CHANNELS),
                fusion_width=r.integer(d, "fusion_width", "head.fusion_width",
                                         maximum=MAX_CHANNELS),
                dropout=r.number(d, "dropout", "head.dropout", low=0.0, high=1.0, default=0.0,
                                     open_high=True))


def _parse_palette(r: FieldReader, raw: Any, n: int) -> tuple[tuple[int, int, int], ...]:
    if raw is None:
        return default_palette(n)
    colors = r.sequence(raw, "palette")
    if len(colors) != n:
        r.fail("palette", f"{len(colors)} colours", f"one [r, g, b] per class ({n})")
    out = []
    for i, c in enumerate(colors):
        rgb = r.sequence(c, f"palette[{i}]")
        if len(rgb) != 3:
            r.fail(f"palette[{i}]", c, "[r, g, b]")
        out.append(tuple(r.integer(v, None, f"palette[{i}][{k}]", minimum=0, maximum=255)
                         for k, v in enumerate(rgb)))
    return tuple(out)


def _parse_input(r: FieldReader, raw: Any) -> InputSpec:
    d = r.mapping(raw, "input", optional=("color", "mean", "std"))
    color = d.get("color", "rgb")
    if color not in COLORS:
        r.fail("input.color", color, ", ".join(COLORS))
    triples = {}
    for key, low, default in (("mean", -math.inf, 0.0), ("std", 0.0, 1.0)):
        values = r.sequence(d.get(key, [default] * 3), f"input.{key}")
        if len(values) != 3:
            r.fail(f"input.{key}", values, "three numbers, one per channel")
        triples[key] = tuple(r.number(v, None, f"input.{key}[{i}]", low=low, high=math.inf,
                                      open_low=key == "std") for i, v in enumerate(values))
    return InputSpec(color=color, mean=triples["mean"], std=triples["std"])


class FieldReader:
    """Typed field access that raises one GenotypeError line naming path, value and rule."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, value: Any, allowed: str) -> None:
        where = path or "top level"
        raise GenotypeError(f"{self.source}: {where} is {value!r}; allowed: {allowed}")

    def mapping(self, value: Any, path: str, required: tuple[str, ...] = (),
                optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(value, dict):
            self.fail(path, _short(value), "a JSON object")
        missing = [k for k in required if k not in value]
        if missing:
            where = f"{path}." if path else ""
            raise GenotypeError(f"{self.source}: {where}{missing[0]} is missing; "
                                f"required fields here: {', '.join(required)}")
        if optional or not required:
            unknown = sorted(set(value) - set(required) - set(optional))
            if unknown:
                where = f"{path}." if path else ""
                self.fail(f"{where}{unknown[0]}", _short(value[unknown[0]]),
                          f"no such field; known: {', '.join(required + optional)}")
        return value

    def sequence(self, value: Any, path: str, min_len: int = 0,
                 max_len: int | None = None) -> list:
        if not isinstance(value, list):
            self.fail(path, _short(value), "a JSON list")
        if len(value) < min_len:
            self.fail(path, value, f"a list of at least {min_len} items")
        if max_len is not None and len(value) > max_len:
            self.fail(path, f"a list of {len(value)} items", f"at most {max_len} items")
        return value

    def string(self, d: Any, key: str | None, path: str, default: str | None = None) -> str:
        value = d if key is None else d.get(key, default)
        if not isinstance(value, str) or (default is None and not value):
            self.fail(path, _short(value), "a non-empty string")
        return value

    def name(self, d: Any, key: str | None, path: str) -> str:
        value = self.string(d, key, path)
        if problem := name_problem(value):
            raise GenotypeError(f"{self.source}: {path} {_short(value)!r} {problem}")
        return value

    def integer(self, d: Any, key: str | None, path: str, minimum: int = 1,
                maximum: int | None = None, allowed: tuple[int, ...] | None = None) -> int:
        value = d if key is None else d[key]
        if allowed is not None:
            if isinstance(value, bool) or value not in allowed:
                self.fail(path, value, ", ".join(map(str, allowed)))
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, _short(value), "an integer")
        if value < minimum or (maximum is not None and value > maximum):
            rule = f"{minimum} to {maximum}" if maximum is not None else f"an integer >= {minimum}"
            self.fail(path, value, rule)
        return value

    def number(self, d: Any, key: str | None, path: str, low: float = -math.inf,
               high: float = math.inf, default: float | None = None, open_low: bool = False,
               open_high: bool = False, allowed: tuple[float, ...] | None = None) -> float:
        value = d if key is None else d.get(key, default)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value):
            self.fail(path, _short(value), "a number" if allowed is None
                      else ", ".join(map(_num, allowed)))
        if allowed is not None:
            if float(value) not in allowed:
                self.fail(path, value, ", ".join(map(_num, allowed)))
        elif value < low or value > high or (open_low and value == low) or (
                open_high and value == high):
            bounds = "(["[not open_low] + f"{_num(low)}, {_num(high)}" + ")]"[not open_high]
            self.fail(path, value, f"a number in {bounds}")
        return float(value)


def _num(x: float) -> str:
    return f"{x:g}" if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _short(value: Any) -> Any:
    text = json.dumps(value) if not isinstance(value, str) else value
    return value if len(text) <= 40 else text[:37] + "..."
