"""Differentiable expected MACs of the supernet under its architecture weights.

Each conv's MACs are output pixels x kernel taps x in x out channels; with soft weights the
widths are expectations (E[in] E[out]), exact once decisions are one-hot, where the result
equals what ``ssr-deploy info`` counts for the decoded network (tested). "Full" is the
largest network of the space: every layer a full-resolution block at the widest widths.

Two measures: ``network``, the whole network with its PSP and fusion head (what ``info``
counts), and ``backbone``, the authors' cost: stem, downsamplers and searched layers plus a
1x1 classifier on the last stage's full width (their F_full, about 11.16 G at 512x1024 for
their 5 + 8 layer space). The head is fixed, so it only shifts the network measure.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssr_deploy.search.supernet import SuperNet

MEASURES = ("backbone", "network")


def expected_macs(net: SuperNet, size: tuple[int, int], full: bool = False,
                  measure: str = "network") -> Tensor:
    """E[MACs] of one (H, W) image; ``full=True`` gives the largest network's MACs.
    ``measure``: ``network`` (with the head) or ``backbone`` (the authors' cost)."""
    _check_measure(measure)
    space, (h, w) = net.space, size
    op_p, mid_p, out_p = net.probs()
    if full:  # every layer: the first full-resolution op, widest widths
        first_fr = next(i for i, op in enumerate(net.op_list) if op != ("skip",) and op[1] == 1)
        op_p = torch.zeros_like(op_p)
        op_p[:, first_fr] = 1
        mid_p = torch.zeros_like(mid_p)
        mid_p[..., 0] = 1
        out_p = mid_p.clone()
    stem = space.stem_channels
    total = torch.zeros((), dtype=op_p.dtype, device=op_p.device)
    total = total + 9 * 3 * (stem - 3) * (h // 2) * (w // 2)
    w_in, li, outs = torch.tensor(float(stem)), 0, []
    for s, st in enumerate(space.stages):
        pixels = (h // st.stride) * (w // st.stride)
        total = total + 9 * pixels * w_in * (st.channels - w_in)  # downsampler conv
        widths = torch.tensor(space.widths(s), dtype=op_p.dtype, device=op_p.device)
        e_in = torch.tensor(float(st.channels))
        for _ in range(st.max_layers):
            e_out = torch.zeros(())
            for i, op in enumerate(net.op_list):
                if not net.op_valid[li, i]:
                    continue
                if op == ("skip",):
                    e_out = e_out + op_p[li, i] * e_in
                    continue
                px = pixels if op[1] == 1 else (h // st.stride // 2) * (w // st.stride // 2)
                e_mid, e_o = mid_p[li, i] @ widths, out_p[li, i] @ widths
                total = total + op_p[li, i] * 3 * px * (e_in * e_mid + e_mid * e_o)
                e_out = e_out + op_p[li, i] * e_o
            e_in, li = e_out, li + 1
        outs.append(e_in)
        w_in = e_in
    head, first, last = space.head, space.stages[0], space.stages[-1]
    px_first = (h // first.stride) * (w // first.stride)
    px_last = (h // last.stride) * (w // last.stride)
    if measure == "backbone":
        return total + px_last * last.channels * net.num_classes
    total = total + sum(b * b for b in head.psp_bins) * outs[-1] * head.psp_width
    total = total + px_last * (outs[-1] + len(head.psp_bins) * head.psp_width) * head.psp_out
    total = total + 9 * px_first * (outs[0] + stem) * head.low_width
    total = total + px_first * (head.psp_out + head.low_width) * head.fusion_width
    total = total + px_first * head.fusion_width * net.num_classes
    return total


def genotype_cost(genotype, size: tuple[int, int], measure: str = "network") -> int:
    """The MACs of a discrete network in a cost measure (what the search's cost term counts
    once every decision is one-hot)."""
    from ssr_deploy.model.complexity import count_macs

    _check_measure(measure)
    total, per_module = count_macs(genotype, size)
    if measure == "network":
        return total
    last = genotype.stages[-1]
    pixels = (size[0] // last.stride) * (size[1] // last.stride)
    return total - per_module["head"] + pixels * last.channels * genotype.num_classes


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"cost measure {measure!r}: use one of {', '.join(MEASURES)}")
