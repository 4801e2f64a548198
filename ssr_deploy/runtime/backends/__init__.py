"""Backends move tensors and nothing else: ``infer(model input) -> model output``."""

from __future__ import annotations

from pathlib import Path

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.runtime.backends.base import Backend

BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}


def open_backend(path: str | Path, backend: str | None = None, device: str | None = None
                 ) -> Backend:
    """Open ``path`` with ``backend`` (default: by file suffix)."""
    path = Path(path)
    if not path.is_file():
        raise SsrDeployError(f"model file {path} does not exist")
    name = backend or BY_SUFFIX.get(path.suffix.lower())
    if name == "onnxruntime":
        from ssr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device or "cpu")
    if name == "tensorrt":
        from ssr_deploy.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=int((device or "cuda:0").rpartition(":")[2] or 0))
    raise SsrDeployError(f"cannot tell how to run {path.name}: use a .onnx, .engine or .plan "
                         "file, or name --backend onnxruntime|tensorrt")
