"""ssr-deploy: search a real-time segmentation network with SSR, retrain, export, run fast."""

__version__ = "0.1.0"

from ssr_deploy.errors import GenotypeError, SsrDeployError  # noqa: E402
from ssr_deploy.genotype import Genotype  # noqa: E402
from ssr_deploy.model import SSRNet, build_model, load_model, save_checkpoint  # noqa: E402

__all__ = ["Genotype", "GenotypeError", "SSRNet", "Segmenter", "SsrDeployError", "build_model",
           "load_model", "save_checkpoint", "__version__"]


def __getattr__(name: str):
    if name == "Segmenter":  # imported on first use: pulls in OpenCV and onnxruntime
        from ssr_deploy.runtime.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'ssr_deploy' has no attribute {name!r}")
