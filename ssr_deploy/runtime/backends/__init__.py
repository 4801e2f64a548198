"""Backends move tensors and nothing else: ``infer(model input) -> model output``.

Which backend runs a file is decided here and only here (``backend_for``); each backend's
options are a dataclass, so a misspelled or foreign option is an error, not a silent no-op.
``device`` means the same for every backend: ``cpu``, ``cuda`` or ``cuda:N``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ssr_deploy.errors import UsageError, UsageTypeError
from ssr_deploy.io import check_input_file
from ssr_deploy.runtime.backends.base import Backend

BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt",
             ".pt": "torch", ".pth": "torch"}
BACKENDS = ("onnxruntime", "tensorrt", "torch")


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` if given (and able to), else by suffix."""
    path = Path(path)
    by_suffix = BY_SUFFIX.get(path.suffix.lower())
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"backend {backend!r} is not known; use {', '.join(BACKENDS)}")
    name = backend or by_suffix
    if name is None:
        raise UsageError(f"cannot tell how to run {path.name}: use a .onnx, .engine or .plan "
                         "file, a .pt checkpoint, or name --backend onnxruntime|tensorrt")
    if (by_suffix == "torch") != (name == "torch"):
        if by_suffix == "torch":
            raise UsageError(f"{path.name} is a checkpoint: it runs in the torch backend. For "
                             f"{name}, export it first: ssr-deploy export onnx {path} -o "
                             "model.onnx --input uint8-nhwc-bgr --output labels --dynamic-batch")
        raise UsageError(f"the torch backend runs checkpoints (.pt), not {path.name}")
    return name


def parse_device(device: str | None) -> tuple[str, int]:
    """``None``/``cpu`` -> ("cpu", 0); ``cuda`` -> ("cuda", 0); ``cuda:N`` -> ("cuda", N)."""
    kind, _, index = (device or "cpu").partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu"
                                                                         and index):
        raise UsageError(f"device {device!r} is not known; use cpu, cuda or cuda:N")
    return kind, int(index or 0)


def make_options(cls: type, backend: str, options: dict[str, Any]) -> Any:
    """``cls(**options)`` with a clear error naming an option ``backend`` does not take."""
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise UsageTypeError(f"the {backend} backend takes no option {unknown[0]!r}; its "
                             f"options are {', '.join(fields)}")
    return cls(**options)


def open_backend(path: str | Path, backend: str | None = None, device: str | None = None,
                 **options: Any) -> Backend:
    """Open ``path`` with ``backend`` (default: by file suffix) on ``device`` (default: cuda
    for an engine, else cpu); ``options`` are that backend's (OnnxRuntimeOptions,
    TensorRTOptions, TorchOptions)."""
    path = check_input_file(path, "model file")
    name = backend_for(path, backend)
    kind, index = parse_device(device or ("cuda" if name == "tensorrt" else "cpu"))
    if name == "torch":
        from ssr_deploy.runtime.backends.torch import TorchBackend, TorchOptions

        return TorchBackend(path, kind if kind == "cpu" else f"cuda:{index}",
                            make_options(TorchOptions, name, options))
    if name == "onnxruntime":
        from ssr_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions

        return OnnxRuntimeBackend(path, kind, index,
                                  make_options(OnnxRuntimeOptions, name, options))
    from ssr_deploy.runtime.backends.tensorrt import TensorRTBackend, TensorRTOptions

    if kind != "cuda":
        raise UsageError("a TensorRT engine runs on a GPU: use --device cuda (or cuda:N)")
    return TensorRTBackend(path, index, make_options(TensorRTOptions, name, options))
