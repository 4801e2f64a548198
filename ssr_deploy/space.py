"""The search space: a small JSON-able config with the paper's defaults.

Stem as the published net (3 -> 16 at 1/2); stage 1 at 1/4 with up to 5 layers of width
up to 64; a downsampler to 128; stage 2 at 1/8 with up to 9 layers of width up to 128, so
the published 4 + 9 network lies inside. Per layer: ``skip`` (depth) and the factorised
residual block with dilation {1, 2, 4, 8, 16} x resolution {1, 1/2}; mid and out widths in
{C_max - 4k : k = 0..8}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.genotype import MAX_CHANNELS, FieldReader, Genotype, Head, parse_head

Op = tuple  # ("skip",) or (dilation, resolution)
MAX_LAYERS = 64  # per stage: the paper's has 9; a supernet of thousands is a typo


@dataclass(frozen=True)
class StageSpace:
    stride: int
    channels: int  # C_max: the downsampler's output and the widest layer
    max_layers: int
    dropout: float


@dataclass(frozen=True)
class SearchSpace:
    stem_channels: int = 16
    stages: tuple[StageSpace, ...] = (StageSpace(4, 64, 5, 0.03), StageSpace(8, 128, 9, 0.3))
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    resolutions: tuple[float, ...] = (1.0, 0.5)
    skip: bool = True
    width_step: int = 4
    width_choices: int = 9
    head: Head = field(default_factory=lambda: Genotype.load("ssr-cityscapes").head)
    bn_eps: float = 1e-3

    def ops(self) -> list[Op]:
        """Candidate ops of every layer; index 0 is ``skip`` when the space has it."""
        fr = [(d, r) for d in self.dilations for r in self.resolutions]
        return ([("skip",)] if self.skip else []) + fr

    def widths(self, stage: int) -> list[int]:
        """Width options of a stage's layers, widest first."""
        c = self.stages[stage].channels
        return [c - self.width_step * k for k in range(self.width_choices)]

    def layers(self) -> list[tuple[int, int]]:
        """(stage index, layer index in stage) of every searchable layer, in order."""
        return [(s, j) for s, st in enumerate(self.stages) for j in range(st.max_layers)]

    def sample(self, rng, num_classes: int = 19, name: str = "sampled",
               depth: float | None = None, width: float | None = None) -> Genotype:
        """A network of the space drawn with ``rng`` (a ``random.Random``): by default
        uniformly per decision (op, then its widths). ``depth`` (0 to 1): each layer is a
        block with this probability (else skip); ``width`` (0 widest to 1 narrowest): widths
        drawn around that point of the options. Networks drawn uniformly all cost about
        the same; these two spread them over the space's range. The classes are the
        Cityscapes 19 when there are 19."""
        from ssr_deploy.genotype import Layer, Stage, default_palette

        def pick_width(options: list[int]) -> int:
            if width is None:
                return rng.choice(options)
            k = round(width * (len(options) - 1) + rng.gauss(0, 1))
            return options[min(max(k, 0), len(options) - 1)]

        blocks = [op for op in self.ops() if op != ("skip",)]
        stages = []
        for s, st in enumerate(self.stages):
            width_in, layers = st.channels, []
            for _ in range(st.max_layers):
                if depth is None:
                    op = rng.choice(self.ops())
                else:
                    op = rng.choice(blocks) if not self.skip or rng.random() < depth else (
                        "skip",)
                if op == ("skip",):
                    layers.append(Layer("skip"))
                    continue
                mid, out = pick_width(self.widths(s)), pick_width(self.widths(s))
                layers.append(Layer("fr", op[0], float(op[1]), width_in, mid, out))
                width_in = out
            stages.append(Stage(st.stride, st.channels, st.dropout, tuple(layers)))
        zoo = Genotype.load("ssr-cityscapes")
        classes = zoo.classes if num_classes == zoo.num_classes else tuple(
            f"class {i}" for i in range(num_classes))
        palette = zoo.palette if num_classes == zoo.num_classes else default_palette(num_classes)
        return Genotype(name=name, stem_channels=self.stem_channels, stages=tuple(stages),
                        head=self.head, classes=classes, palette=palette, bn_eps=self.bn_eps,
                        description="sampled from the search space")

    def validate(self) -> SearchSpace:
        prev, stride = self.stem_channels, 2
        for i, st in enumerate(self.stages):
            stride *= 2
            where = f"stages[{i}]"
            if st.stride != stride:
                raise SsrDeployError(f"space: {where}.stride is {st.stride}, must be {stride} "
                                     "(each stage halves the resolution)")
            if st.channels <= prev:
                raise SsrDeployError(f"space: {where}.channels {st.channels} must exceed the "
                                     f"{prev} coming in (the downsampler adds channels)")
            if st.channels - self.width_step * (self.width_choices - 1) < 1:
                raise SsrDeployError(f"space: {where}: {self.width_choices} widths stepping by "
                                     f"{self.width_step} from {st.channels} go below 1; use "
                                     "fewer --width-choices or a smaller step")
            if st.max_layers < 1:
                raise SsrDeployError(f"space: {where}.max_layers must be at least 1")
            prev = st.channels
        if not self.dilations or any(d not in (1, 2, 4, 8, 16) for d in self.dilations):
            raise SsrDeployError(f"space: dilations {list(self.dilations)}; allowed 1, 2, 4, 8, 16")
        if not self.resolutions or any(r not in (1.0, 0.5) for r in self.resolutions):
            raise SsrDeployError(f"space: resolutions {list(self.resolutions)}; allowed 1, 0.5")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"stem_channels": self.stem_channels,
                "stages": [vars(st).copy() for st in self.stages],
                "dilations": list(self.dilations), "resolutions": list(self.resolutions),
                "skip": self.skip, "width_step": self.width_step,
                "width_choices": self.width_choices, "head": self.head.to_dict(),
                "bn_eps": self.bn_eps}

    @classmethod
    def from_dict(cls, d: Any, source: str = "space file") -> SearchSpace:
        """A space from JSON, every field typed and bounded, one line naming any that is not
        (a stage of 10^6 layers or 10^5 channels would run for ever or ask for terabytes)."""
        r = FieldReader(source)
        d = r.mapping(d, "", required=("stages",), optional=(
            "stem_channels", "dilations", "resolutions", "skip", "width_step",
            "width_choices", "head", "bn_eps"))
        stages = []
        for i, raw in enumerate(r.sequence(d["stages"], "stages", min_len=1, max_len=6)):
            st = r.mapping(raw, f"stages[{i}]", required=("stride", "channels", "max_layers",
                                                          "dropout"))
            stages.append(StageSpace(
                stride=r.integer(st, "stride", f"stages[{i}].stride", maximum=256),
                channels=r.integer(st, "channels", f"stages[{i}].channels",
                                   maximum=MAX_CHANNELS),
                max_layers=r.integer(st, "max_layers", f"stages[{i}].max_layers",
                                     maximum=MAX_LAYERS),
                dropout=r.number(st, "dropout", f"stages[{i}].dropout", low=0.0, high=1.0,
                                 open_high=True)))
        dilations = r.sequence(d.get("dilations", [1, 2, 4, 8, 16]), "dilations", min_len=1,
                               max_len=5)
        resolutions = r.sequence(d.get("resolutions", [1.0, 0.5]), "resolutions", min_len=1,
                                 max_len=2)
        skip = d.get("skip", True)
        if not isinstance(skip, bool):
            r.fail("skip", skip, "true or false")
        space = cls(
            stem_channels=r.integer(d, "stem_channels", "stem_channels", maximum=MAX_CHANNELS)
            if "stem_channels" in d else 16,
            stages=tuple(stages),
            dilations=tuple(r.integer(v, None, f"dilations[{k}]", allowed=(1, 2, 4, 8, 16))
                            for k, v in enumerate(dilations)),
            resolutions=tuple(r.number(v, None, f"resolutions[{k}]", allowed=(1.0, 0.5))
                              for k, v in enumerate(resolutions)),
            skip=skip,
            width_step=r.integer(d, "width_step", "width_step", maximum=256)
            if "width_step" in d else 4,
            width_choices=r.integer(d, "width_choices", "width_choices", maximum=32)
            if "width_choices" in d else 9,
            head=parse_head(r, d["head"]) if "head" in d else
            Genotype.load("ssr-cityscapes").head,
            bn_eps=r.number(d, "bn_eps", "bn_eps", low=0.0, high=1.0, default=1e-3,
                            open_low=True, open_high=True))
        return space.validate()

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        from ssr_deploy.io import read_json

        return cls.from_dict(read_json(path, "space file"), f"space file {Path(path).name}")
