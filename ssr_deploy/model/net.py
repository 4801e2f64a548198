"""SSRNet = stem + stages + head, built from a Genotype by ``build_model``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssr_deploy.genotype import Genotype, Stage
from ssr_deploy.model.blocks import Downsampler, FactorisedResidual
from ssr_deploy.model.head import SegHead


class SSRStage(nn.Module):
    """Downsampler to the stage's width, then its layers (``skip`` layers are identities,
    kept so module index i is genotype layer i)."""

    def __init__(self, in_channels: int, stage: Stage, eps: float) -> None:
        super().__init__()
        self.down = Downsampler(in_channels, stage.channels, eps)
        self.layers = nn.Sequential(*(
            nn.Identity() if layer.is_skip else FactorisedResidual(
                layer.in_channels, layer.mid_channels, layer.out_channels, layer.dilation,
                layer.resolution, stage.dropout, eps)
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
        eps = genotype.bn_eps
        self.stem = Downsampler(3, genotype.stem_channels, eps)
        stages, channels = [], genotype.stem_channels
        for stage in genotype.stages:
            stages.append(SSRStage(channels, stage, eps))
            channels = stage.out_channels
        self.stages = nn.ModuleList(stages)
        first = genotype.stages[0]
        self.head = SegHead(channels, first.out_channels, genotype.stem_channels,
                            first.stride // 2, genotype.head, num_classes, eps)

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


def with_trained_margins(net: SSRNet, scale: float = 40.0) -> SSRNet:
    """``net`` (in eval mode) with its classifier scaled up, so an untrained network's label
    maps have a trained one's margins and rounding (fp16, int8) flips few of them, as it
    would there: for benchmarks and tests of precision and engines without training."""
    net.eval()
    with torch.no_grad():
        net.head.classifier.weight.mul_(scale)
        net.head.classifier.bias.mul_(scale)
    return net
