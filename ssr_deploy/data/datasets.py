"""Datasets with one interface: ``ds[i] -> (image (H, W, 3) uint8 BGR, label (H, W) uint8
trainIds, 255 = ignore)``, plus ``classes``, ``palette`` and ``names`` (one per item).

Sources are named as on the command line: ``cityscapes:DIR``, ``folder:DIR``,
``synthetic[:N]``. A corrupt image or label is a clear error naming the file (not a
silent skip: a training run should not quietly learn from less than it was given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ssr_deploy.data import classes
from ssr_deploy.data.synthetic import street_scene
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import read_json
from ssr_deploy.media import IMAGE_SUFFIXES, read_image


@dataclass
class Pair:
    name: str
    image: Path
    label: Path


class PairDataset:
    """Image/label file pairs; ``lut`` maps stored label values to trainIds (None: as is)."""

    def __init__(self, pairs: list[Pair], names: tuple[str, ...],
                 palette: tuple[tuple[int, int, int], ...], lut: np.ndarray | None,
                 known: np.ndarray | None = None) -> None:
        self.pairs, self.classes, self.palette = pairs, names, palette
        self.lut, self.known = lut, known

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.pairs]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pairs[i]
        image = read_image(pair.image)
        label = read_image(pair.label, cv2.IMREAD_UNCHANGED)
        if label.ndim != 2 or label.dtype != np.uint8:
            raise SsrDeployError(f"label {pair.label} is not a single-channel 8-bit PNG of "
                                 "class ids")
        if label.shape != image.shape[:2]:
            raise SsrDeployError(f"{pair.image} is {image.shape[0]}x{image.shape[1]} (HxW) but "
                                 f"its label {pair.label} is {label.shape[0]}x"
                                 f"{label.shape[1]}; they must be the same size")
        if self.known is not None and not self.known[label].all():
            bad = sorted(int(v) for v in set(np.unique(label)) - set(np.flatnonzero(self.known)))
            raise SsrDeployError(f"label {pair.label} has ids {bad[:5]} that the Cityscapes "
                                 "label table does not have")
        if self.lut is not None:
            label = self.lut[label]
        elif (label[label != classes.IGNORE] >= len(self.classes)).any():
            raise SsrDeployError(f"label {pair.label} has class ids >= {len(self.classes)} "
                                 f"(classes.json lists {len(self.classes)}); 255 is ignore")
        return image, label


def cityscapes(root: str | Path, split: str = "train") -> PairDataset:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine/<split>/<city>/
    *_gtFine_labelTrainIds.png`` when present, else ``*_gtFine_labelIds.png`` mapped through
    the official label table."""
    root = Path(root)
    images_dir = root / "leftImg8bit" / split
    if not images_dir.is_dir():
        raise SsrDeployError(f"cityscapes:{root} has no leftImg8bit/{split}/ folder; point it "
                             "at the folder holding leftImg8bit/ and gtFine/")
    images = sorted(images_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise SsrDeployError(f"no *_leftImg8bit.png images under {images_dir}")
    pairs, missing, train_ids = [], [], None
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / image.parent.name
        trainid = gt / f"{stem}_gtFine_labelTrainIds.png"
        labelid = gt / f"{stem}_gtFine_labelIds.png"
        train_ids = trainid.is_file() if train_ids is None else train_ids
        label = trainid if train_ids else labelid
        if not label.is_file():
            missing.append(stem)
            continue
        pairs.append(Pair(stem, image, label))
    if missing:
        raise SsrDeployError(f"{len(missing)} images have no gtFine label, e.g. {missing[0]} "
                             f"(expected {'labelTrainIds' if train_ids else 'labelIds'} PNGs "
                             f"under {root / 'gtFine' / split})")
    if train_ids:
        return PairDataset(pairs, classes.NAMES, classes.PALETTE, None)
    return PairDataset(pairs, classes.NAMES, classes.PALETTE, classes.LABEL_TO_TRAIN,
                       classes.KNOWN_LABEL_IDS)


VAL_EVERY = 5  # a folder without split subfolders: every 5th image (sorted) is validation


def folder(root: str | Path, split: str = "train") -> PairDataset:
    """``images/`` and ``masks/`` with matching stems, and ``classes.json``
    (``{"names": [...], "colors": [[r, g, b], ...]}``, colours optional).

    Splits: ``ROOT/<split>/images`` and ``masks`` when ROOT has split folders; otherwise
    every VAL_EVERY-th image (sorted by name) is ``val`` and the rest ``train``, so a
    training run never validates on its own training images."""
    root = Path(root)
    split_root = root / split
    base = split_root if (split_root / "images").is_dir() else root
    if base is root and any((root / s / "images").is_dir() for s in ("train", "val", "test")):
        raise SsrDeployError(f"folder:{root} has split folders but no {split}/images/; "
                             f"use --split with one of its folders")
    for sub in ("images", "masks"):
        if not (base / sub).is_dir():
            raise SsrDeployError(f"folder:{root} has no {sub}/ folder (expected images/, "
                                 "masks/ and classes.json, optionally under train/ and val/)")
    names, palette = read_classes(root / "classes.json")
    images = {p.stem: p for p in (base / "images").iterdir()
              if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in (base / "masks").iterdir() if p.suffix.lower() == ".png"}
    if not images:
        raise SsrDeployError(f"no images in {root / 'images'}")
    no_mask, no_image = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = [f"images without a mask: {', '.join(no_mask[:5])}" if no_mask else "",
                 f"masks without an image: {', '.join(no_image[:5])}" if no_image else ""]
        raise SsrDeployError(f"folder:{root}: " + "; ".join(p for p in parts if p))
    pairs = [Pair(stem, images[stem], masks[stem]) for stem in sorted(images)]
    if base is root:
        if split not in ("train", "val"):
            raise SsrDeployError(f"folder:{root} has no split folders, so only train and val "
                                 f"(every {VAL_EVERY}th image) exist; not {split!r}")
        if len(pairs) < 2:
            raise SsrDeployError(f"folder:{root} has {len(pairs)} image; train and val need 2 "
                                 "or more (or give train/ and val/ folders)")
        val = split == "val"
        pairs = [p for i, p in enumerate(pairs) if (i % VAL_EVERY == VAL_EVERY - 1) == val]
        if not pairs:  # fewer than VAL_EVERY images: the last one is val
            pairs = [Pair(s, images[s], masks[s]) for s in sorted(images)]
            pairs = pairs[-1:] if val else pairs[:-1]
    return PairDataset(pairs, names, palette, None)


def read_classes(path: Path) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """``classes.json``: names (unique non-empty strings, at most 255: mask ids are 8-bit
    with 255 ignore) and optional colours ([r, g, b] of 0-255, one per name)."""
    from ssr_deploy.genotype import default_palette

    if not path.exists():
        raise SsrDeployError(f"{path} is missing; write {{\"names\": [\"road\", ...]}} "
                             "there")
    spec = read_json(path, "classes file")
    names = spec.get("names") if isinstance(spec, dict) else None
    if (not isinstance(names, list) or not names
            or not all(isinstance(n, str) and n.strip() for n in names)):
        raise SsrDeployError(f"{path}: \"names\" must be a list of non-empty strings, e.g. "
                             "{\"names\": [\"road\", \"car\"]}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise SsrDeployError(f"{path}: class names {', '.join(dupes[:5])} appear more than once")
    if len(names) > 255:
        raise SsrDeployError(f"{path}: {len(names)} classes; 8-bit masks hold at most 255 "
                             "(255 is ignore)")
    colors = spec.get("colors")
    if colors is None:
        return tuple(names), default_palette(len(names))
    if not isinstance(colors, list) or len(colors) != len(names) or not all(
            isinstance(c, list) and len(c) == 3 and all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)
            for c in colors):
        raise SsrDeployError(f"{path}: \"colors\" must be one [r, g, b] of integers 0-255 per "
                             f"name ({len(names)}), or left out")
    return tuple(names), tuple(tuple(c) for c in colors)


class SyntheticDataset:
    """``n`` procedural street scenes of ``size``; train and val use disjoint seeds."""

    def __init__(self, n: int = 200, size: tuple[int, int] = (256, 512), split: str = "train",
                 seed: int = 0) -> None:
        self.n, self.size, self.seed = n, size, seed
        self.offset = seed * 1_000_003 + (0 if split == "train" else 500_009)
        self.classes, self.palette = classes.NAMES, classes.PALETTE

    def __len__(self) -> int:
        return self.n

    @property
    def names(self) -> list[str]:
        # Cityscapes' city_sequence_frame pattern, so the official tools read the files
        return [f"synth_{self.seed:06d}_{self.offset % 1_000_003 + i:06d}" for i in range(self.n)]

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return street_scene(self.offset + i, *self.size)


def open_dataset(source: str, split: str = "train", size: tuple[int, int] = (256, 512)):
    """``cityscapes:DIR``, ``folder:DIR`` or ``synthetic[:N]`` -> a dataset."""
    scheme, _, rest = source.partition(":")
    if scheme == "cityscapes" and rest:
        return cityscapes(rest, split)
    if scheme == "folder" and rest:
        return folder(rest, split)
    if scheme == "synthetic":
        if rest and not (rest.isdigit() and 0 < int(rest) <= 1_000_000):
            raise SsrDeployError(f"data source {source!r}: N must be a whole number from 1 to "
                                 "1000000 (synthetic:200), or left out")
        n = int(rest) if rest else (200 if split == "train" else 50)
        return SyntheticDataset(n, size, split)
    raise SsrDeployError(f"data source {source!r} is not known; use cityscapes:DIR, folder:DIR "
                         "or synthetic[:N]")


def write_cityscapes_layout(out: str | Path, n: int, size: tuple[int, int], seed: int = 0,
                            val_fraction: float = 0.2, progress=None) -> dict[str, int]:
    """Write ``n`` synthetic scenes as a Cityscapes tree (leftImg8bit + gtFine labelIds), so
    the real loader reads them, into ``out`` (a new folder: see runs.output_folder). Returns
    images per split."""
    from ssr_deploy.media import write_image_in

    out = Path(out)
    n_val = max(1, int(n * val_fraction)) if n > 1 else 0
    counts = {"train": n - n_val, "val": n_val}
    for split, count in counts.items():
        dataset = SyntheticDataset(count, size, split, seed)
        img_dir = out / "leftImg8bit" / split / "synth"
        gt_dir = out / "gtFine" / split / "synth"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(dataset.names):
            image, label = dataset[i]
            write_image_in(img_dir, f"{name}_leftImg8bit.png", image)
            write_image_in(gt_dir, f"{name}_gtFine_labelIds.png", classes.TRAIN_TO_LABEL[label])
            if progress:
                progress()
    return counts
