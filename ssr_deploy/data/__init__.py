"""Data: Cityscapes, folder and synthetic datasets with one interface."""

from ssr_deploy.data.datasets import open_dataset, write_cityscapes_layout

__all__ = ["open_dataset", "write_cityscapes_layout"]
