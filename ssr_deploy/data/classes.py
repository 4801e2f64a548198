"""The Cityscapes label table, from the official ``cityscapesscripts`` package: the 19
evaluated classes (trainIds 0-18, 255 = ignore), their colours, and labelId <-> trainId."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

from ssr_deploy.metrics import IGNORE

_TRAIN = sorted((label for label in _LABELS if 0 <= label.trainId < IGNORE),
                key=lambda label: label.trainId)
NAMES: tuple[str, ...] = tuple(label.name for label in _TRAIN)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(label.color) for label in _TRAIN)
TRAIN_ID = {name: i for i, name in enumerate(NAMES)}

#: labelId (0-255) -> trainId; ids the table does not have map to 255 and are in UNKNOWN_IDS
LABEL_TO_TRAIN = np.full(256, IGNORE, np.uint8)
KNOWN_LABEL_IDS = np.zeros(256, bool)
for _label in _LABELS:
    if 0 <= _label.id < 256:
        LABEL_TO_TRAIN[_label.id] = _label.trainId if 0 <= _label.trainId < IGNORE else IGNORE
        KNOWN_LABEL_IDS[_label.id] = True

#: trainId -> labelId (for writing predictions the official evaluation reads); 255 -> 0
TRAIN_TO_LABEL = np.zeros(256, np.uint8)
for _label in _TRAIN:
    TRAIN_TO_LABEL[_label.trainId] = _label.id
