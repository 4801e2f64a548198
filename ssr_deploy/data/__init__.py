"""Data: Cityscapes, folder and synthetic datasets with one interface.

``open_dataset`` and ``write_cityscapes_layout`` load on first use (they need torch);
``ssr_deploy.data.synthetic`` and ``ssr_deploy.data.classes`` need only numpy and OpenCV, so
the runtime can draw street-like frames without torch."""

__all__ = ["open_dataset", "write_cityscapes_layout"]


def __getattr__(name: str):
    if name in __all__:
        from ssr_deploy.data import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'ssr_deploy.data' has no attribute {name!r}")
