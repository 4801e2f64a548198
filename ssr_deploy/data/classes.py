"""The Cityscapes label table: the 19 evaluated classes (trainIds 0-18, 255 = ignore), their
colours, and labelId <-> trainId. The table is the official one (``cityscapesscripts``'
``helpers.labels``, which the evaluation uses), written out here so that a runtime install,
which only needs the names and colours, does without that package; a test holds it equal to
the package's."""

from __future__ import annotations

import numpy as np

from ssr_deploy.metrics import IGNORE

#: (name, labelId, trainId, RGB colour) of every Cityscapes label, as cityscapesscripts lists
LABELS: tuple[tuple[str, int, int, tuple[int, int, int]], ...] = (
    ('unlabeled', 0, 255, (0, 0, 0)),
    ('ego vehicle', 1, 255, (0, 0, 0)),
    ('rectification border', 2, 255, (0, 0, 0)),
    ('out of roi', 3, 255, (0, 0, 0)),
    ('static', 4, 255, (0, 0, 0)),
    ('dynamic', 5, 255, (111, 74, 0)),
    ('ground', 6, 255, (81, 0, 81)),
    ('road', 7, 0, (128, 64, 128)),
    ('sidewalk', 8, 1, (244, 35, 232)),
    ('parking', 9, 255, (250, 170, 160)),
    ('rail track', 10, 255, (230, 150, 140)),
    ('building', 11, 2, (70, 70, 70)),
    ('wall', 12, 3, (102, 102, 156)),
    ('fence', 13, 4, (190, 153, 153)),
    ('guard rail', 14, 255, (180, 165, 180)),
    ('bridge', 15, 255, (150, 100, 100)),
    ('tunnel', 16, 255, (150, 120, 90)),
    ('pole', 17, 5, (153, 153, 153)),
    ('polegroup', 18, 255, (153, 153, 153)),
    ('traffic light', 19, 6, (250, 170, 30)),
    ('traffic sign', 20, 7, (220, 220, 0)),
    ('vegetation', 21, 8, (107, 142, 35)),
    ('terrain', 22, 9, (152, 251, 152)),
    ('sky', 23, 10, (70, 130, 180)),
    ('person', 24, 11, (220, 20, 60)),
    ('rider', 25, 12, (255, 0, 0)),
    ('car', 26, 13, (0, 0, 142)),
    ('truck', 27, 14, (0, 0, 70)),
    ('bus', 28, 15, (0, 60, 100)),
    ('caravan', 29, 255, (0, 0, 90)),
    ('trailer', 30, 255, (0, 0, 110)),
    ('train', 31, 16, (0, 80, 100)),
    ('motorcycle', 32, 17, (0, 0, 230)),
    ('bicycle', 33, 18, (119, 11, 32)),
    ('license plate', -1, -1, (0, 0, 142)),
)

_TRAIN = sorted((label for label in LABELS if 0 <= label[2] < IGNORE), key=lambda label: label[2])
NAMES: tuple[str, ...] = tuple(label[0] for label in _TRAIN)
PALETTE: tuple[tuple[int, int, int], ...] = tuple(label[3] for label in _TRAIN)
TRAIN_ID = {name: i for i, name in enumerate(NAMES)}

#: labelId (0-255) -> trainId; ids the table does not have map to 255 and are in UNKNOWN_IDS
LABEL_TO_TRAIN = np.full(256, IGNORE, np.uint8)
KNOWN_LABEL_IDS = np.zeros(256, bool)
for _name, _id, _train, _ in LABELS:
    if 0 <= _id < 256:
        LABEL_TO_TRAIN[_id] = _train if 0 <= _train < IGNORE else IGNORE
        KNOWN_LABEL_IDS[_id] = True

#: trainId -> labelId (for writing predictions the official evaluation reads); 255 -> 0
TRAIN_TO_LABEL = np.zeros(256, np.uint8)
for _name, _id, _train, _ in _TRAIN:
    TRAIN_TO_LABEL[_train] = _id
