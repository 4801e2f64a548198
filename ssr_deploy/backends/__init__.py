"""Backends move tensors and nothing else: ``infer(model input) -> model output``. Each is one
package here (its runner, and what else only it knows: engine builds, conversion, profiling,
part timing), imported only when it is used.

Which backend runs a file is decided here and only here (``backend_for``); each backend's
options are a dataclass, so a misspelled or foreign option is an error, not a silent no-op.
``device`` means the same for every backend: ``cpu``, ``cuda`` or ``cuda:N``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any

from ssr_deploy.backends.base import Backend, LayerTimes, PartTimer
from ssr_deploy.errors import UsageError, UsageTypeError
from ssr_deploy.io import check_input_file

#: name -> (its package, its Backend class, its PartTimer class)
PACKAGES = {
    "onnxruntime": ("ssr_deploy.backends.onnxruntime", "OnnxRuntimeBackend",
                    "OnnxRuntimeTimer"),
    "openvino": ("ssr_deploy.backends.openvino", "OpenVinoBackend", "OpenVinoTimer"),
    "tensorrt": ("ssr_deploy.backends.tensorrt", "TensorRTBackend", "TensorRTTimer"),
    "torch": ("ssr_deploy.backends.torch", "TorchBackend", "TorchTimer"),
}
BACKENDS = tuple(PACKAGES)
BY_SUFFIX = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt",
             ".plan": "tensorrt", ".pt": "torch", ".pth": "torch"}
#: what each backend opens besides its own files (OpenVINO reads an fp32 ONNX; TensorRT builds
#: an ONNX's engine on first use and caches it)
ALSO_OPENS = {"openvino": (".onnx",), "tensorrt": (".onnx",), "onnxruntime": (), "torch": ()}

__all__ = ["BACKENDS", "BY_SUFFIX", "Backend", "LayerTimes", "PartTimer", "backend_class",
           "backend_for", "open_backend", "parse_device", "part_timer_class"]


def _load(name: str, which: int) -> Any:
    package, *classes = PACKAGES[name]
    return getattr(importlib.import_module(package), classes[which])


def backend_class(name: str) -> type[Backend]:
    """The Backend class of ``name`` (its package is imported now)."""
    return _load(name, 0)


def part_timer_class(name: str) -> type[PartTimer]:
    """The PartTimer class of ``name``: how ``lut build`` times parts through it."""
    if name not in PACKAGES:
        raise UsageError(f"--backend {name}: use one of {', '.join(BACKENDS)}")
    return _load(name, 1)


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` if given (and able to), else by suffix."""
    path = Path(path)
    by_suffix = BY_SUFFIX.get(path.suffix.lower())
    if backend is not None and backend not in BACKENDS:
        raise UsageError(f"backend {backend!r} is not known; use {', '.join(BACKENDS)}")
    name = backend or by_suffix
    if name is None:
        raise UsageError(f"cannot tell how to run {path.name}: use a .onnx, .xml (OpenVINO), "
                         ".engine or .plan file, a .pt checkpoint, or name --backend "
                         f"{'|'.join(BACKENDS)}")
    if (by_suffix == "torch") != (name == "torch"):
        if by_suffix == "torch":
            raise UsageError(f"{path.name} is a checkpoint: it runs in the torch backend. For "
                             f"{name}, export it first: ssr-deploy export onnx {path} -o "
                             "model.onnx --input uint8-nhwc-bgr --output labels --dynamic-batch")
        raise UsageError(f"the torch backend runs checkpoints (.pt), not {path.name}")
    if by_suffix and by_suffix != name and path.suffix.lower() not in ALSO_OPENS[name]:
        raise UsageError(f"{path.name} is for {by_suffix}: the {name} backend cannot run it; "
                         f"drop --backend {name} (or export for {name} from the .onnx)")
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


def takes_option(name: str, option: str) -> bool:
    """Whether backend ``name``'s options have ``option`` (``profile``, ``size``)."""
    return option in {f.name for f in dataclasses.fields(backend_class(name).Options)}


def open_backend(path: str | Path, backend: str | None = None, device: str | None = None,
                 **options: Any) -> Backend:
    """Open ``path`` with ``backend`` (default: by file suffix) on ``device`` (default: the
    backend's, cuda for an engine, else cpu); ``options`` are that backend's (its ``Options``
    dataclass: OnnxRuntimeOptions, OpenVinoOptions, TensorRTOptions, TorchOptions)."""
    if not isinstance(path, str | os.PathLike):
        raise UsageTypeError(f"a model is a file path (str or pathlib.Path), not "
                             f"{type(path).__name__}; save it and give its path")
    path = check_input_file(path, "model file")
    name = backend_for(path, backend)
    cls = backend_class(name)
    device_kind, index = parse_device(device or cls.default_device)
    return cls(path, device_kind, index, make_options(cls.Options, name, options))
