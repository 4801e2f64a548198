"""The SSR loss and the cost loss (Ye et al., IJCV 2022).

For a decision with ``n`` still-valid options and normalised weights p_1..p_n (sum 1), the
SSR term is (1/n) * sum_i log(n * p_i): 0 at uniform, negative elsewhere, unbounded below
as some p_i -> 0, so minimising it drives each decision towards one-hot (equivalent to an
L0 penalty, as the paper proves). The SSR loss is the mean over decisions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalise(alpha: Tensor, valid: Tensor, mode: str = "sigmoid") -> Tensor:
    """Architecture weights -> probabilities over the valid options (last dim), 0 elsewhere.

    ``sigmoid``: sigmoid(alpha) / sum over valid options, as the authors' code, computed in
    log space: a decision whose weights have all drifted below float range (sigmoid(-40) is
    4e-18) keeps probabilities that sum to 1 (a lone option: exactly 1) instead of ~0,
    which would scale its layer's output down in the supernet; ``softmax``."""
    if mode == "sigmoid":
        alpha = F.logsigmoid(alpha)
    elif mode != "softmax":
        raise ValueError(f"normalisation {mode!r}: use sigmoid or softmax")
    return torch.softmax(alpha.masked_fill(~valid, float("-inf")), -1).nan_to_num(0.0)


def ssr_loss(probs: Tensor, valid: Tensor) -> Tensor:
    """Mean over the given decisions of (1/n) * sum_valid log(n * p); ``probs`` and ``valid``
    have the options on the last dim. Decisions with one valid option, or none (the width
    decisions of a removed op), contribute 0 and still count in the mean, as in the
    authors' code."""
    valid = valid.to(torch.bool)
    n = valid.sum(-1, keepdim=True).to(probs.dtype)
    terms = torch.where(valid, torch.log((n * probs).clamp_min(1e-12)), torch.zeros_like(probs))
    per_decision = terms.sum(-1) / n.squeeze(-1).clamp_min(1)
    return per_decision.mean()


def cost_loss(expected: Tensor, target: float, scale: float) -> Tensor:
    """((E[cost] - target) / scale)^2: the authors' form with scale = the full network's
    MACs and target = ratio x full."""
    return ((expected - target) / scale) ** 2
