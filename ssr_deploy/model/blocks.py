"""The shelf of small modules SSRNet is assembled from; one idea each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Downsampler(nn.Module):
    """concat(conv3x3 stride 2 (in -> out - in), maxpool 2x2) -> BN -> ReLU; halves H and W."""

    def __init__(self, in_channels: int, out_channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), F.max_pool2d(x, 2)], 1)))


def add_residual(y: Tensor, x: Tensor) -> Tensor:
    """y + x over the channels they share.

    out < in: y + x[:, :out]; out > in: the first ``in`` channels of y get x, the rest pass."""
    out_ch, in_ch = y.shape[1], x.shape[1]
    if out_ch == in_ch:
        return y + x
    if out_ch < in_ch:
        return y + x[:, :out_ch]
    return torch.cat([y[:, :in_ch] + x, y[:, in_ch:]], 1)


class FactorisedResidual(nn.Module):
    """The searched op: [maxpool 2] -> conv3x1 -> BN -> ReLU -> conv1x3 -> BN -> [upsample]
    -> Dropout2d -> residual -> ReLU. Input and output (N, C, H, W) at the same H, W."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dilation: int,
                 resolution: float, dropout: float, eps: float = 1e-3) -> None:
        super().__init__()
        d = dilation
        self.half_resolution = resolution == 0.5
        self.conv3x1 = nn.Conv2d(in_channels, mid_channels, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.bn1 = nn.BatchNorm2d(mid_channels, eps=eps)
        self.conv1x3 = nn.Conv2d(mid_channels, out_channels, (1, 3), padding=(0, d),
                                 dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: Tensor) -> Tensor:
        y = F.max_pool2d(x, 2) if self.half_resolution else x
        y = self.bn2(self.conv1x3(F.relu(self.bn1(self.conv3x1(y)))))
        if self.half_resolution:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return F.relu(add_residual(self.dropout(y), x))


def pool_matrix(size: int, bins: int, like: Tensor) -> Tensor:
    """(bins, size) averaging matrix: row i averages [floor(i*size/bins), ceil((i+1)*size/bins)),
    PyTorch's adaptive-pooling windows. Built from Range/Mul/Div/compare ops, so it exports to
    ONNX and TensorRT for static and dynamic sizes."""
    i = torch.arange(bins, device=like.device)
    j = torch.arange(size, device=like.device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start).to(like.dtype)[:, None]


def adaptive_avg_pool2d(x: Tensor, bins: int) -> Tensor:
    """Exactly ``F.adaptive_avg_pool2d(x, bins)`` for (N, C, H, W) x of any H, W, as two matmuls.

    Needed because 3, 6 and 9 bins do not divide a 64x128 map and neither the TorchScript ONNX
    exporter nor TensorRT takes adaptive pooling with uneven windows."""
    rows = pool_matrix(x.shape[-2], bins, x)
    cols = pool_matrix(x.shape[-1], bins, x)
    return rows @ x @ cols.t()


def conv_bn(in_channels: int, out_channels: int, kernel: int, eps: float, relu: bool = True
            ) -> nn.Sequential:
    """conv (no bias) -> BN [-> ReLU], 'same' padding."""
    layers = [nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
              nn.BatchNorm2d(out_channels, eps=eps)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)
