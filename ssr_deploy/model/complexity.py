"""Parameters and multiply-accumulates (MACs), in total and per layer.

MACs come from ``torch.utils.flop_counter`` (which counts 2 FLOPs per MAC) over the
convolution and linear ops. The exact PSP pooling's matmuls (about 0.2%) are pooling, not
layers, and are left out as every pooling is; this matches the paper's figures, whose
"FLOPs" column counts MACs. Counting runs on the meta device: no memory, no arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ssr_deploy.genotype import Genotype
from ssr_deploy.model.net import build_model

LAYER_OPS = (torch.ops.aten.convolution, torch.ops.aten.addmm)


@dataclass(frozen=True)
class LayerCost:
    """One row of the per-layer table: a module of SSRNet and what it costs."""

    module: str  # e.g. "stages.1.layers.4"
    kind: str  # "downsampler", "fr d=4 r=1/2", "skip", "psp", ...
    in_channels: int | None
    mid_channels: int | None
    out_channels: int | None
    params: int
    macs: int


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_model(genotype: Genotype, num_classes: int | None = None) -> nn.Module:
    """The network on the meta device: shapes and parameter counts without memory."""
    with torch.device("meta"):
        return build_model(genotype, num_classes).eval()


def count_macs(genotype: Genotype, size: tuple[int, int], num_classes: int | None = None,
               batch: int = 1) -> tuple[int, dict[str, int]]:
    """MACs of one forward pass at ``size`` = (H, W): (total, {module name: MACs})."""
    genotype.check_input_size(*size)
    model = meta_model(genotype, num_classes)
    x = torch.empty(batch, 3, *size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    per_module = {}
    for name, ops in counter.get_flop_counts().items():
        flops = sum(v for op, v in ops.items() if op in LAYER_OPS)
        key = name.partition(".")[2] if name.startswith(type(model).__name__) else name
        per_module[key or "model"] = flops // 2
    return per_module.pop("Global", 0), per_module


def layer_table(genotype: Genotype, macs: dict[str, int], num_classes: int | None = None
                ) -> list[LayerCost]:
    """Stem, each stage's downsampler and layers, and the head's parts, in forward order.

    ``macs`` is the per-module dict ``count_macs`` returns."""
    modules = dict(meta_model(genotype, num_classes).named_modules())

    def row(name: str, kind: str, cin=None, mid=None, cout=None) -> LayerCost:
        return LayerCost(name, kind, cin, mid, cout, count_params(modules[name]), macs.get(name, 0))

    rows = [row("stem", "downsampler", 3, None, genotype.stem_channels)]
    channels = genotype.stem_channels
    for i, stage in enumerate(genotype.stages):
        rows.append(row(f"stages.{i}.down", "downsampler", channels, None, stage.channels))
        channels = stage.channels
        for j, layer in enumerate(stage.layers):
            if layer.is_skip:
                rows.append(row(f"stages.{i}.layers.{j}", "skip", channels, None, channels))
                continue
            rows.append(row(f"stages.{i}.layers.{j}", layer.describe(), layer.in_channels,
                            layer.mid_channels, layer.out_channels))
            channels = layer.out_channels
    head = genotype.head
    n = num_classes or genotype.num_classes
    rows += [row("head.psp", f"psp bins={','.join(map(str, head.psp_bins))}", channels,
                 head.psp_width, head.psp_out),
             row("head.low", "low-level conv3x3",
                 genotype.stages[0].out_channels + genotype.stem_channels, None, head.low_width),
             row("head.fuse", "fusion conv1x1", head.psp_out + head.low_width, None,
                 head.fusion_width),
             row("head.classifier", "classifier conv1x1", head.fusion_width, None, n)]
    return rows
