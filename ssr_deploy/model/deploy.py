"""SSRNet with the input and output formats of an ``IOFormat`` fused in: what an exported
graph computes, and what the torch backend runs, so every backend takes and returns the
same arrays."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ssr_deploy.model.net import SSRNet
from ssr_deploy.spec import IOFormat

LABEL_DTYPES = {"uint8": torch.uint8, "int32": torch.int32}


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
        frame_order = io.color
        self.swap_channels = io.uint8_input and frame_order != spec.color

    def forward(self, x: Tensor) -> Tensor:
        return self.postprocess(self.net(self.preprocess(x)))

    def preprocess(self, x: Tensor) -> Tensor:
        """The input format -> the network's normalised float NCHW. The uint8 frame is cast
        first and feeds nothing else: TensorRT takes uint8 only into a Cast."""
        if self.io.uint8_input:
            x = x.float().permute(0, 3, 1, 2)
            if self.swap_channels:
                x = x.flip(1)
            x = x * self.scale + self.shift
        return x

    def postprocess(self, logits: Tensor) -> Tensor:
        """Logits -> the output format."""
        if self.io.output == "logits":
            return logits
        return logits.argmax(1).to(LABEL_DTYPES[self.io.label_dtype])
