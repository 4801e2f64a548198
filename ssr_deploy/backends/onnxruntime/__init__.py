"""ONNX Runtime: the embedded default (CPU), CUDA / TensorRT execution providers on request."""

from ssr_deploy.backends.onnxruntime.runner import (
    OnnxRuntimeBackend,
    OnnxRuntimeOptions,
    import_onnxruntime,
    new_session,
)
from ssr_deploy.backends.onnxruntime.timer import OnnxRuntimeTimer

__all__ = ["OnnxRuntimeBackend", "OnnxRuntimeOptions", "OnnxRuntimeTimer",
           "import_onnxruntime", "new_session"]
