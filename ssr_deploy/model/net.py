"""SSRNet = stem + stages + head, built from a Genotype by ``build_model``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ssr_deploy.genotype import Genotype, Layer, Stage
from ssr_deploy.model.blocks import Downsampler, FactorisedResidual
from ssr_deploy.model.head import SegHead


# ---- the parts, each made in one place: by the network, the supernet and the latency table
def stem_of(arch: Genotype | Any) -> Downsampler:
    """The stem of a genotype or a search space (both name ``stem_channels``, ``bn_eps``)."""
    return Downsampler(3, arch.stem_channels, arch.bn_eps)


def layer_of(layer: Layer, dropout: float, eps: float) -> nn.Module:
    """A genotype layer's module: a factorised residual block, or an identity for ``skip``."""
    if layer.is_skip:
        return nn.Identity()
    return FactorisedResidual(layer.in_channels, layer.mid_channels, layer.out_channels,
                              layer.dilation, layer.resolution, dropout, eps)


def head_of(arch: Genotype | Any, deep: int, shallow: int, num_classes: int) -> SegHead:
    """The head of a genotype or a search space over ``deep`` channels from the last stage
    and ``shallow`` from the first."""
    first = arch.stages[0]
    return SegHead(deep, shallow, arch.stem_channels, first.stride // 2, arch.head,
                   num_classes, arch.bn_eps)


class SSRStage(nn.Module):
    """Downsampler to the stage's width, then its layers (``skip`` layers are identities,
    kept so module index i is genotype layer i)."""

    def __init__(self, in_channels: int, stage: Stage, eps: float) -> None:
        super().__init__()
        self.down = Downsampler(in_channels, stage.channels, eps)
        self.layers = nn.Sequential(*(layer_of(layer, stage.dropout, eps)
                                      for layer in stage.layers))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.down(x))


class SSRNet(nn.Module):
    """(N, 3, H, W) float32 normalised as ``genotype.input`` says -> (N, classes, H, W) logits.

    H and W must satisfy ``genotype.size_rule()`` (multiples of the output stride)."""

    def __init__(self, genotype: Genotype, num_classes: int) -> None:
        super().__init__()
        self.genotype = genotype
        self.num_classes = num_classes
        self.stem = stem_of(genotype)
        stages, channels = [], genotype.stem_channels
        for stage in genotype.stages:
            stages.append(SSRStage(channels, stage, genotype.bn_eps))
            channels = stage.out_channels
        self.stages = nn.ModuleList(stages)
        self.head = head_of(genotype, channels, genotype.stages[0].out_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if isinstance(height, int) and isinstance(width, int):  # symbolic while exporting
            self.genotype.check_input_size(height, width)
        stem = x = self.stem(x)
        shallow = None
        for stage in self.stages:
            x = stage(x)
            shallow = x if shallow is None else shallow
        return self.head(x, shallow, stem, (height, width))


def build_model(genotype: Genotype | str, num_classes: int | None = None) -> SSRNet:
    """Build the network a genotype (or a zoo name / JSON path) describes.

    ``num_classes`` defaults to the genotype's class list (19 for ssr-cityscapes)."""
    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype)
    return SSRNet(genotype, num_classes or genotype.num_classes)
