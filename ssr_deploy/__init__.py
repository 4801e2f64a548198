"""ssr-deploy: search a real-time segmentation network with SSR, retrain, export, run fast.

The names below load on first use, so ``from ssr_deploy import Segmenter`` needs neither
torch nor onnx: the runtime runs .onnx and .engine files on a runtime-only install."""

from ssr_deploy.errors import GenotypeError, SsrDeployError
from ssr_deploy.genotype import Genotype
from ssr_deploy.version import __version__

__all__ = ["Genotype", "GenotypeError", "ModelSpec", "SSRNet", "Segmenter", "SsrDeployError",
           "build_model", "load_model", "save_checkpoint", "__version__"]

_LAZY = {"Segmenter": "ssr_deploy.runtime.segmenter", "ModelSpec": "ssr_deploy.spec",
         "SSRNet": "ssr_deploy.model", "build_model": "ssr_deploy.model",
         "load_model": "ssr_deploy.model", "save_checkpoint": "ssr_deploy.model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ssr_deploy' has no attribute {name!r}")
