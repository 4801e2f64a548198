"""From a supernet to the discrete network: the argmax genotype and a state dict sliced
from the supernet's weights. Once every decision has one option left the two compute the
same function (tested to 1e-5): there is no discretisation gap."""

from __future__ import annotations

import torch
from torch import nn

from ssr_deploy.genotype import Genotype
from ssr_deploy.model.net import SSRNet, build_model
from ssr_deploy.search.supernet import SuperNet, decode


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, index: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(getattr(src, name).data[index])
    dst.num_batches_tracked.data.copy_(src.num_batches_tracked.data)


def _copy_conv(dst: nn.Conv2d, src_weight: torch.Tensor, src_bias, rows, cols) -> None:
    dst.weight.data.copy_(src_weight.data[rows][:, cols])
    if dst.bias is not None:
        dst.bias.data.copy_(src_bias.data[rows])


@torch.no_grad()
def extract_discrete(net: SuperNet, name: str = "searched", classes=None, palette=None
                     ) -> tuple[Genotype, dict[str, torch.Tensor]]:
    """(genotype, state dict for ``build_model(genotype, net.num_classes)``)."""
    genotype = decode(net, name, classes, palette)
    model: SSRNet = build_model(genotype, net.num_classes)
    model.stem.load_state_dict(net.stem.state_dict())
    r = torch.arange
    li, w_prev = 0, genotype.stem_channels
    for s, stage in enumerate(genotype.stages):
        c_max = stage.channels
        down, sdown = model.stages[s].down, net.downs[s]
        _copy_conv(down.conv, sdown.conv.weight, sdown.conv.bias, r(c_max - w_prev), r(w_prev))
        _copy_bn(down.bn, sdown.bn, r(c_max))
        width = c_max
        for j, layer in enumerate(stage.layers):
            if not layer.is_skip:
                i = net.op_list.index((layer.dilation, layer.resolution))
                src, dst = net.layers[li][str(i)], model.stages[s].layers[j]
                mid, out = r(layer.mid_channels), r(layer.out_channels)
                _copy_conv(dst.conv3x1, src.conv3x1.weight, src.conv3x1.bias, mid,
                           r(layer.in_channels))
                _copy_bn(dst.bn1, src.bn1, mid)
                _copy_conv(dst.conv1x3, src.conv1x3.weight, src.conv1x3.bias, out, mid)
                _copy_bn(dst.bn2, src.bn2, out)
                width = layer.out_channels
            li += 1
        w_prev = width
    # head: drop the columns of channels that are always zero in the supernet
    first, last = net.space.stages[0].channels, net.space.stages[-1].channels
    w_first, w_last = genotype.stages[0].out_channels, genotype.stages[-1].out_channels
    head, shead = model.head, net.head
    live_last = r(w_last)
    for dst, src in zip(head.psp.branches, shead.psp.branches, strict=True):
        _copy_conv(dst[0], src[0].weight, None, r(src[0].out_channels), live_last)
        _copy_bn(dst[1], src[1], r(src[1].num_features))
    pyramid = r(last, shead.psp.project[0].in_channels)
    _copy_conv(head.psp.project[0], shead.psp.project[0].weight, None,
               r(shead.psp.project[0].out_channels), torch.cat([live_last, pyramid]))
    _copy_bn(head.psp.project[1], shead.psp.project[1], r(shead.psp.project[1].num_features))
    stem_cols = r(first, shead.low[0].in_channels)
    _copy_conv(head.low[0], shead.low[0].weight, None, r(shead.low[0].out_channels),
               torch.cat([r(w_first), stem_cols]))
    _copy_bn(head.low[1], shead.low[1], r(shead.low[1].num_features))
    head.fuse.load_state_dict(shead.fuse.state_dict())
    head.classifier.load_state_dict(shead.classifier.state_dict())
    return genotype, model.state_dict()
