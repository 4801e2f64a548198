"""Data: Cityscapes, folder and synthetic datasets with one interface.

``open_dataset`` and ``write_cityscapes_layout`` load on first use, so importing
``ssr_deploy.data.synthetic`` (numpy and OpenCV only) to draw street-like frames loads
nothing else; ``augmented.py`` (torch) is for training and search."""

__all__ = ["open_dataset", "write_cityscapes_layout"]


def __getattr__(name: str):
    if name in __all__:
        from ssr_deploy.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'ssr_deploy.data' has no attribute {name!r}")
