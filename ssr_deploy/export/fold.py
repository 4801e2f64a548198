"""BN folding before export: the downsampler's BN after a concat cannot fold into a conv
alone, so its conv half folds into the conv and its max-pool half into a per-channel scale
and shift (the exporter folds every conv -> BN pair itself). The pre/post-processing fused
into the graph is ``model.deploy.DeployModel``."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr_deploy.model.blocks import Downsampler


class FoldedDownsampler(nn.Module):
    """Downsampler with its BN folded: the conv half into the conv, the max-pool half into a
    per-channel scale and shift (BN after a concat cannot fold into a conv alone)."""

    def __init__(self, down: Downsampler) -> None:
        super().__init__()
        bn, conv = down.bn, down.conv
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        n = conv.out_channels
        self.conv = nn.Conv2d(conv.in_channels, n, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(conv.weight * scale[:n, None, None, None])
            self.conv.bias.copy_(conv.bias * scale[:n] + shift[:n])
        self.register_buffer("pool_scale", scale[n:].detach().clone()[None, :, None, None])
        self.register_buffer("pool_shift", shift[n:].detach().clone()[None, :, None, None])

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.max_pool2d(x, 2) * self.pool_scale + self.pool_shift
        return F.relu(torch.cat([self.conv(x), pooled], 1))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` (a network or one of its parts) whose downsampler BNs
    are folded (the exporter folds every conv -> BN pair itself)."""
    net = copy.deepcopy(net).eval()
    if isinstance(net, Downsampler):
        return FoldedDownsampler(net)
    for name, module in list(net.named_modules()):
        if isinstance(module, Downsampler):
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, FoldedDownsampler(module))
    return net
