"""What an engine holds: its I/O tensors, read through the TensorRT API and checked against
its sidecar, the buffers its profile needs, and TensorRT-RTX's verdict on whether it runs
here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssr_deploy.backends.tensorrt.library import TensorRT
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.spec import ModelSpec

DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int32": np.int32,
          "int64": np.int64}


@dataclass(frozen=True)
class TensorIO:
    """One I/O tensor: as the engine reports it (-1 for a dynamic dimension), or, in a
    buffer plan, with the largest shape its profile allows."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(DTYPES[self.dtype]).itemsize


def buffer_plan(spec: ModelSpec) -> list[TensorIO]:
    """Input and output buffers sized for the engine's profile max shape."""
    largest = spec.largest_input
    return [TensorIO(spec.input.name, True, spec.input.dtype, largest),
            TensorIO(spec.output.name, False, spec.output.dtype, spec.output_shape(largest))]


def dtype_names(trt) -> dict[Any, str]:
    """TensorRT data types -> numpy's names, for engines and networks alike."""
    return {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16",
            trt.DataType.UINT8: "uint8", trt.DataType.INT32: "int32",
            trt.DataType.INT64: "int64", trt.DataType.INT8: "int8"}


def engine_io(trt, engine) -> list[TensorIO]:
    """The engine's I/O tensors, read through the TensorRT API."""
    names = dtype_names(trt)
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        tensors.append(TensorIO(
            name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            names.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name))),
            tuple(engine.get_tensor_shape(name))))
    return tensors


def check_engine_io(spec: ModelSpec, tensors: list[TensorIO], engine_name: str) -> None:
    """The engine must hold exactly the input and output its sidecar describes."""
    expected = [(spec.input, True), (spec.output, False)]
    found = {(t.name, t.is_input): t for t in tensors}
    if len(tensors) != 2:
        raise SsrDeployError(f"{engine_name} has {len(tensors)} I/O tensors "
                             f"({', '.join(t.name for t in tensors)}); its sidecar describes one "
                             "input and one output: rebuild it with `ssr-deploy export engine`")
    for want, is_input in expected:
        tensor = found.get((want.name, is_input))
        kind = "input" if is_input else "output"
        if tensor is None:
            raise SsrDeployError(f"{engine_name} has no {kind} {want.name!r} as its sidecar "
                                 "says; the sidecar belongs to another engine: rebuild it")
        if tensor.dtype != want.dtype or tuple(tensor.shape) != tuple(want.shape):
            raise SsrDeployError(f"{engine_name}: {kind} {tensor.name} is {tensor.dtype} "
                                 f"{list(tensor.shape)}, its sidecar says {want.dtype} "
                                 f"{list(want.shape)}; rebuild it with `ssr-deploy export engine`")


def check_in_profile(spec: ModelSpec, shape: tuple[int, ...]) -> None:
    lo, hi = spec.profile[0], spec.profile[2]
    if len(shape) != len(hi) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi,
                                                                        strict=True)):
        raise SsrDeployError(f"input {tuple(shape)} is outside the engine's profile "
                             f"{tuple(lo)} to {tuple(hi)}")


def rtx_invalidity(library: TensorRT, trt_runtime, data: bytes) -> str | None:
    """TensorRT-RTX's own verdict on an engine's header: None where it may run here, else
    its reasons ("unsupported cc", ...)."""
    trt = library.module
    validity, diagnostics = trt_runtime.get_engine_validity(data)
    if validity != trt.EngineValidity.INVALID:
        return None
    reasons = [name.lower().replace("_", " ") for name, flag
               in trt.EngineInvalidityDiagnostics.__members__.items()
               if int(diagnostics) & int(flag)]
    return ", ".join(reasons) or "no reason given"


def check_rtx_validity(library: TensorRT, trt_runtime, data: bytes, engine_name: str) -> None:
    """Refuse, in one line, an engine TensorRT-RTX says it cannot run here."""
    why = rtx_invalidity(library, trt_runtime, data)
    if why is not None:
        raise SsrDeployError(f"{library.title} cannot run {engine_name} here ({why}); build it "
                             "again with `ssr-deploy export engine --builder tensorrt-rtx`")
