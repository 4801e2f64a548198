"""The retrain head: PSP on the last stage, a low-level branch, and their fusion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr_deploy.genotype import Head
from ssr_deploy.model.blocks import adaptive_avg_pool2d, conv_bn


def _resize(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """Per bin: exact adaptive avg-pool -> conv1x1 -> BN -> upsample; concat with the input,
    then conv1x1 -> BN -> ReLU -> Dropout2d."""

    def __init__(self, in_channels: int, spec: Head, eps: float) -> None:
        super().__init__()
        self.bins = spec.psp_bins
        self.branches = nn.ModuleList(
            conv_bn(in_channels, spec.psp_width, 1, eps, relu=False) for _ in self.bins)
        self.project = conv_bn(in_channels + len(self.bins) * spec.psp_width, spec.psp_out, 1, eps)
        self.dropout = nn.Dropout2d(spec.dropout)

    def forward(self, x: Tensor) -> Tensor:
        pyramid = [_resize(branch(adaptive_avg_pool2d(x, bins)), x)
                   for bins, branch in zip(self.bins, self.branches, strict=True)]
        return self.dropout(self.project(torch.cat([x, *pyramid], 1)))


class SegHead(nn.Module):
    """(deep, shallow, stem) features -> (N, classes, H, W) logits at ``size``.

    deep: last stage output; shallow: first stage output; stem: stem output, average-pooled
    to the first stage's resolution and concatenated with ``shallow``."""

    def __init__(self, deep_channels: int, shallow_channels: int, stem_channels: int,
                 stem_pool: int, spec: Head, num_classes: int, eps: float) -> None:
        super().__init__()
        self.stem_pool = stem_pool
        self.psp = PyramidPooling(deep_channels, spec, eps)
        self.low = conv_bn(shallow_channels + stem_channels, spec.low_width, 3, eps)
        self.fuse = conv_bn(spec.psp_out + spec.low_width, spec.fusion_width, 1, eps)
        self.dropout = nn.Dropout2d(spec.dropout)
        self.classifier = nn.Conv2d(spec.fusion_width, num_classes, 1)

    def forward(self, deep: Tensor, shallow: Tensor, stem: Tensor, size: tuple) -> Tensor:
        low = self.low(torch.cat([shallow, F.avg_pool2d(stem, self.stem_pool)], 1))
        fused = self.fuse(torch.cat([_resize(self.psp(deep), low), low], 1))
        logits = self.classifier(self.dropout(fused))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
