"""A training run's settings, each declared once (flag, type, default, help). Imports no
torch: the CLI builds its options from here."""

from __future__ import annotations

from dataclasses import dataclass

import click

from ssr_deploy.data.weights import CHOICES
from ssr_deploy.settings import NON_NEGATIVE, POSITIVE, count, data_source, input_size, setting


@dataclass
class TrainConfig:
    data: str = data_source()
    size: tuple[int, int] = input_size()
    epochs: int = count(300, "--epochs")
    batch: int = count(6, "--batch", "Images per step of each process (under torchrun N "
                       "processes step on N x this).")
    lr: float = setting(5e-4, "--lr", type=POSITIVE)
    weight_decay: float = setting(1e-4, "--weight-decay", type=NON_NEGATIVE)
    preset: str = setting("paper", "--preset", "paper: resize, flip, 0-2 px shift; modern: "
                          "scale 0.5-2, crop, flip, colour jitter.",
                          type=click.Choice(["paper", "modern"]))
    class_weights: str = setting(
        "auto", "--class-weights", "paper: the authors' Cityscapes table; erfnet: its formula "
        "1/ln(1.20+p) on your data; enet: 1/ln(1.02+p); none. auto: paper for cityscapes: "
        "data, erfnet otherwise.", type=click.Choice(CHOICES))
    workers: int = setting(2, "--workers", type=click.IntRange(min=0), kept=False)  # per process
    device: str = setting("cpu", "--device", "cpu or cuda (AMP on cuda).",
                          kept=False)
    seed: int = setting(0, "--seed", type=int)
    poly_power: float = 0.9
    amp: bool = True  # used on CUDA only
    init_from: str = ""  # the weights the run started from; "": from scratch (authors')
