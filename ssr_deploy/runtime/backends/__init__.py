"""Backends move tensors and nothing else: ``infer(model input) -> model output``."""

from __future__ import annotations

from pathlib import Path

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.runtime.backends.base import Backend

BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt",
             ".pt": "torch", ".pth": "torch"}
BACKENDS = ("onnxruntime", "tensorrt", "torch")


def open_backend(path: str | Path, backend: str | None = None, device: str | None = None,
                 **options) -> Backend:
    """Open ``path`` with ``backend`` (default: by file suffix). A checkpoint (.pt) runs in
    torch, or in onnxruntime through an ONNX exported next to it on first use."""
    path = Path(path)
    if not path.is_file():
        raise SsrDeployError(f"model file {path} does not exist")
    name = backend or BY_SUFFIX.get(path.suffix.lower())
    if name is not None and name not in BACKENDS:
        raise SsrDeployError(f"backend {name!r} is not known; use {', '.join(BACKENDS)}")
    if name == "torch":
        if BY_SUFFIX.get(path.suffix.lower()) != "torch":
            raise SsrDeployError(f"the torch backend runs checkpoints (.pt), not {path.name}")
        from ssr_deploy.runtime.backends.torch import TorchBackend

        return TorchBackend(path, device=device or "cpu", **options)
    if BY_SUFFIX.get(path.suffix.lower()) == "torch":
        path = onnx_for_checkpoint(path, options.get("size", (512, 1024)))
    if name == "onnxruntime":
        from ssr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, device=device or "cpu", threads=options.get("threads"),
                                  io_binding=options.get("io_binding"))
    if name == "tensorrt":
        from ssr_deploy.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=int((device or "cuda:0").rpartition(":")[2] or 0),
                               cuda_graph=options.get("cuda_graph", False))
    raise SsrDeployError(f"cannot tell how to run {path.name}: use a .onnx, .engine or .plan "
                         "file, or name --backend onnxruntime|tensorrt")


def onnx_for_checkpoint(checkpoint: Path, size: tuple[int, int]) -> Path:
    """``ckpt.pt`` -> ``ckpt.<H>x<W>.onnx`` beside it (uint8 BGR in, labels out, dynamic
    batch), exported and verified once, reused while newer than the checkpoint."""
    from ssr_deploy.export.graph import IOFormat
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.checkpoint import load_model

    target = checkpoint.with_name(f"{checkpoint.stem}.{size[0]}x{size[1]}.onnx")
    if not target.is_file() or target.stat().st_mtime < checkpoint.stat().st_mtime:
        export_onnx(load_model(checkpoint), target, size=size, dynamic_batch=True,
                    io=IOFormat("uint8-nhwc-bgr", "labels"))
    return target
