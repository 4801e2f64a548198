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
from ssr_deploy.genotype import Genotype, Head

Op = tuple  # ("skip",) or (dilation, resolution)


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
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        try:
            head = d.get("head")
            return cls(stem_channels=d.get("stem_channels", 16),
                       stages=tuple(StageSpace(**st) for st in d["stages"]),
                       dilations=tuple(d.get("dilations", (1, 2, 4, 8, 16))),
                       resolutions=tuple(float(r) for r in d.get("resolutions", (1.0, 0.5))),
                       skip=d.get("skip", True), width_step=d.get("width_step", 4),
                       width_choices=d.get("width_choices", 9),
                       head=Head(**{**head, "psp_bins": tuple(head["psp_bins"])}) if head
                       else Genotype.load("ssr-cityscapes").head,
                       bn_eps=d.get("bn_eps", 1e-3)).validate()
        except (KeyError, TypeError) as e:
            raise SsrDeployError(f"space file: {e} is missing or of the wrong type; see "
                                 "`SearchSpace().to_dict()` for the fields") from None

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        from ssr_deploy.io import read_json

        return cls.from_dict(read_json(path, "space file"))
