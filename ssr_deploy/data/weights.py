"""Class weights of the cross entropy, for retraining and for the search's CE.

``paper``: the fixed table the authors train and search with on Cityscapes (ERFNet's decoder
table, trainIds 0..18). It fits w_c = 1 / ln(1.20 + p_c), p_c the pixel frequency of class c,
largest/smallest 2.3. ``erfnet``: that formula computed on the data at hand (the recipe for
any dataset). ``enet``: 1 / ln(1.02 + p_c) (Paszke et al., ENet; ratio about 16 on
Cityscapes). ``none``: all 1. ``auto``: ``paper`` for ``cityscapes:`` data, ``erfnet`` else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ssr_deploy.data import classes as C
from ssr_deploy.errors import SsrDeployError

if TYPE_CHECKING:  # torch only where weights are made: the CLI imports CHOICES without it
    import torch

PAPER = (2.3653597831726, 4.4237880706787, 2.9691488742828, 5.3442072868347, 5.2983593940735,
         5.2275490760803, 5.4394111633301, 5.3659925460815, 3.4170460700989, 5.2414722442627,
         4.7376127243042, 5.2286224365234, 5.455126285553, 4.3019247055054, 5.4264230728149,
         5.4331531524658, 5.433765411377, 5.4631009101868, 5.3947434425354)
CHOICES = ("auto", "paper", "erfnet", "enet", "none")
OFFSETS = {"erfnet": 1.20, "enet": 1.02}


def frequency_weights(dataset, num_classes: int, offset: float, max_items: int = 200
                      ) -> torch.Tensor:
    """w_c = 1 / ln(offset + p_c), p_c counted over at most ``max_items`` evenly spaced
    labels of ``dataset`` (255 ignored)."""
    import torch

    counts = np.zeros(num_classes, np.int64)
    step = max(1, len(dataset) // max_items)
    for i in range(0, len(dataset), step):
        label = np.asarray(dataset[i][1])
        counts += np.bincount(label[label < num_classes], minlength=num_classes)
    p = counts / max(counts.sum(), 1)
    return torch.tensor(1.0 / np.log(offset + p), dtype=torch.float32)


def resolve(choice: str, source: str, dataset) -> tuple[str, torch.Tensor]:
    """(the resolved name, the weight vector) for ``dataset`` read from ``source``."""
    import torch

    n = len(dataset.classes)
    if choice == "auto":
        choice = "paper" if source.startswith("cityscapes:") else "erfnet"
    if choice == "paper":
        if tuple(dataset.classes) != C.NAMES:
            raise SsrDeployError(f"--class-weights paper is the authors' table for the 19 "
                                 f"Cityscapes classes; this data has {n} others: use erfnet "
                                 "(the same formula on your data) or none")
        return choice, torch.tensor(PAPER, dtype=torch.float32)
    if choice in OFFSETS:
        return choice, frequency_weights(dataset, n, OFFSETS[choice])
    if choice == "none":
        return choice, torch.ones(n)
    raise SsrDeployError(f"class weights {choice!r}: use one of {', '.join(CHOICES)}")
