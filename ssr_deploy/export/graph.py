"""The graph that gets exported: BN folded, pre/post-processing fused in.

``DeployModel`` turns SSRNet into what a runtime wants to feed and read: uint8 NHWC frames
in (cast, channel order, scale, mean/std and layout change inside the graph) and uint8 or
int32 label maps out (argmax inside the graph), so a runtime moves 1.5 MB per 512x1024 frame
instead of 6 MB in and 40 MB out.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.model.blocks import Downsampler
from ssr_deploy.model.net import SSRNet

INPUT_FORMATS = ("float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb")
OUTPUT_FORMATS = ("logits", "labels")
LABEL_DTYPES = {"uint8": torch.uint8, "int32": torch.int32}


@dataclass(frozen=True)
class IOFormat:
    """What the exported graph takes and returns."""

    input: str = "float-nchw"
    output: str = "logits"
    label_dtype: str = "uint8"

    def __post_init__(self) -> None:
        for value, allowed, flag in ((self.input, INPUT_FORMATS, "--input"),
                                     (self.output, OUTPUT_FORMATS, "--output"),
                                     (self.label_dtype, tuple(LABEL_DTYPES), "--label-dtype")):
            if value not in allowed:
                raise SsrDeployError(f"{flag} {value!r} is not known; use one of "
                                     f"{', '.join(allowed)}")

    @property
    def input_name(self) -> str:
        return "images"

    @property
    def output_name(self) -> str:
        return self.output

    @property
    def uint8_input(self) -> bool:
        return self.input.startswith("uint8")


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


def fold_batchnorm(net: SSRNet) -> SSRNet:
    """An eval-mode copy of ``net`` whose downsampler BNs are folded (the exporter folds
    every conv -> BN pair itself)."""
    net = copy.deepcopy(net).eval()
    for name, module in list(net.named_modules()):
        if isinstance(module, Downsampler):
            parent_name, _, child = name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
            setattr(parent, child, FoldedDownsampler(module))
    return net


class DeployModel(nn.Module):
    """SSRNet with the input and output formats of ``io`` fused in.

    float-nchw: (N, 3, H, W) float32, normalised as the genotype says.
    uint8-nhwc-*: (N, H, W, 3) uint8 pixels in BGR or RGB order.
    logits: (N, classes, H, W) float32; labels: (N, H, W) uint8 or int32."""

    def __init__(self, net: SSRNet, io: IOFormat) -> None:
        super().__init__()
        self.net = net
        self.io = io
        spec = net.genotype.input
        std = torch.tensor(spec.std, dtype=torch.float32)
        mean = torch.tensor(spec.mean, dtype=torch.float32)
        # (pixel / 255 - mean) / std == pixel * scale + shift
        self.register_buffer("scale", (1.0 / (255.0 * std))[None, :, None, None])
        self.register_buffer("shift", (-mean / std)[None, :, None, None])
        frame_order = io.input.rsplit("-", 1)[-1]
        self.swap_channels = io.uint8_input and frame_order != spec.color

    def forward(self, x: Tensor) -> Tensor:
        if self.io.uint8_input:
            x = x.permute(0, 3, 1, 2).float()
            if self.swap_channels:
                x = x.flip(1)
            x = x * self.scale + self.shift
        logits = self.net(x)
        if self.io.output == "logits":
            return logits
        return logits.argmax(1).to(LABEL_DTYPES[self.io.label_dtype])
