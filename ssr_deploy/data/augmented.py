"""A dataset as training and search see it: joint augmentation, then the runtime's own
preprocessing, as torch tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ssr_deploy.data import transforms as T
from ssr_deploy.genotype import InputSpec
from ssr_deploy.preprocess import frames_to_input


class AugmentedDataset(Dataset):
    """(image CHW float32 normalised as the genotype says, label HW int64) per item."""

    def __init__(self, dataset, transform: T.Transform, spec: InputSpec, seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0
        self.spec = spec

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        image, label = self.transform(image, label, rng)
        x = frames_to_input(image[None], self.spec)[0]  # the runtime's own preprocessing
        return torch.from_numpy(x), torch.from_numpy(label.astype(np.int64))


def quiet_worker(_worker_id: int) -> None:
    """A DataLoader worker's ``worker_init_fn``: should the main process stop mid-transfer
    (Ctrl-C, SIGTERM), the worker's fd-sharing thread (multiprocessing.resource_sharer)
    loses its peer and would print that traceback into the run's stderr; a lost peer is
    no error of the worker's, so it ends quietly. Any other error is reported as before."""
    import sys

    report = sys.excepthook

    def hook(kind, value, tb) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            report(kind, value, tb)

    sys.excepthook = hook
