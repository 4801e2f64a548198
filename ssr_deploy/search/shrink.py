"""Hierarchical progressive shrinking: after each epoch (or every N steps), remove every
option whose weight is <= tau x the largest weight of its decision; op level first (a
removed op takes its width choices with it), then the width levels. A decision never
loses its largest option, so none is ever emptied."""

from __future__ import annotations

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
