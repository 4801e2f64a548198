"""Export: ONNX (onnx.py), fp16/int8 graphs (precision.py), TensorRT and TensorRT-RTX
engines (tensorrt.py) and Triton model repositories (triton.py).

``engine_for(onnx)`` is the embedding entry point: the engine of a shipped ONNX for this
machine's GPU, built on first use and cached (imported on first use: no torch needed)."""

from typing import Any

__all__ = ["engine_for"]


def __getattr__(name: str) -> Any:
    if name == "engine_for":
        from ssr_deploy.export.tensorrt import engine_for

        return engine_for
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
