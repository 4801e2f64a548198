"""Hierarchical progressive shrinking: after each epoch (or every N steps), remove every
option whose weight is <= tau x the largest weight of its decision; op level first (a
removed op takes its width choices with it), then the width levels. A decision never
loses its largest option, so none is ever emptied. Options the cost constraint needs (its
anchor) stay whatever their weight; what a threshold raised above tau (settling) removes
beyond tau's is counted."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def shrink_mask(probs: Tensor, valid: Tensor, tau: float = 0.1) -> Tensor:
    """The new valid mask: options with p > tau * max(p) among the valid ones (last dim)."""
    largest = (probs * valid).amax(-1, keepdim=True)
    keep = valid & (probs > tau * largest)
    top = (probs.masked_fill(~valid, -1.0)).argmax(-1, keepdim=True)
    return keep | torch.zeros_like(valid).scatter(-1, top, True) & valid


def options_left(valid: Tensor) -> int:
    return int(valid.sum())


def is_discrete(valid: Tensor) -> bool:
    """Every decision has exactly one option left."""
    return bool((valid.sum(-1) == 1).all())


def proposal(probs, valids, tau: float, keep=None) -> tuple[np.ndarray, ...]:
    """Shrinking's masks at threshold ``tau``: ops first, then the widths of the ops kept;
    ``keep``: (op, mid, out) masks of options that stay whatever their weight (the anchor)."""
    keep = [torch.from_numpy(k).to(v.device) for k, v in zip(keep, valids, strict=True)] \
        if keep is not None else [False] * 3
    op = shrink_mask(probs[0], valids[0], tau) | keep[0]
    masks = [op]
    for p, valid, k in zip(probs[1:], valids[1:], keep[1:], strict=True):
        valid = valid & op[..., None]
        masks.append((shrink_mask(p, valid, tau) | k) & valid.any(-1, keepdim=True))
    return tuple(m.cpu().numpy() for m in masks)


def forced_removals(before, after, kept, probs) -> tuple[int, float]:
    """Decisions that lost an option ``kept`` would not have removed, and the mean
    probability mass they lost; width decisions only of the ops still there (an op removed
    takes its widths along, one decision, not many)."""
    decisions, mass = 0, 0.0
    for level, (b, a, k, p) in enumerate(zip(before, after, kept, probs, strict=True)):
        lost = b & ~a & k
        if level:
            lost &= after[0][..., None]
        rows = lost.any(-1)
        decisions += int(rows.sum())
        mass += float((p.cpu().numpy() * lost).sum())
    return decisions, mass / decisions if decisions else 0.0
