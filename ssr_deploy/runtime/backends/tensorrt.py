"""TensorRT with cuda-python, in the shape of TensorRT's own samples: a page-locked host
buffer and a device buffer per I/O tensor, sized for the profile's largest shape, one
stream, copy-in / execute_async_v3 / copy-out, explicit freeing in ``close()``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.profiles import check_compatibility
from ssr_deploy.runtime.backends.base import Backend

DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int32": np.int32,
          "int64": np.int64}


@dataclass(frozen=True)
class TensorPlan:
    """One I/O tensor: its largest shape under the profile and the bytes to allocate."""

    name: str
    is_input: bool
    dtype: str
    max_shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.max_shape)) * np.dtype(DTYPES[self.dtype]).itemsize


def output_shape(meta: dict[str, Any], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape for an input shape, from the metadata's layouts."""
    if meta["input"]["layout"] == "NHWC":
        b, h, w = input_shape[0], input_shape[1], input_shape[2]
    else:
        b, h, w = input_shape[0], input_shape[2], input_shape[3]
    if meta["output"]["layout"] == "NCHW":
        return (b, len(meta["classes"]), h, w)
    return (b, h, w)


def buffer_plan(meta: dict[str, Any]) -> list[TensorPlan]:
    """Input and output buffers sized for the engine's profile max shape."""
    largest = tuple(meta["profile"]["max"])
    return [TensorPlan(meta["input"]["name"], True, meta["input"]["dtype"], largest),
            TensorPlan(meta["output"]["name"], False, meta["output"]["dtype"],
                       output_shape(meta, largest))]


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0) -> None:
        from ssr_deploy.export.tensorrt import import_tensorrt
        from ssr_deploy.runtime import cuda

        trt = import_tensorrt()
        path = Path(path)
        self.metadata = read_sidecar(path)
        check_compatibility(self.metadata, trt.__version__, cuda.gpu_info(device), path.name)
        cuda.check(cuda._cudart().cudaSetDevice(device))
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SsrDeployError(f"TensorRT could not load {path}; rebuild it with "
                                 "`ssr-deploy export engine`")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.plan = buffer_plan(self.metadata)
        self.host = {t.name: cuda.HostBuffer(t.max_shape, DTYPES[t.dtype]) for t in self.plan}
        self.device = {t.name: cuda.DeviceBuffer(t.nbytes) for t in self.plan}
        for t in self.plan:
            self.context.set_tensor_address(t.name, self.device[t.name].ptr)
        self.events = [cuda.Event() for _ in range(4)]
        self.device_name = cuda.gpu_info(device)["name"]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        inp, out = self.plan
        lo, hi = self.metadata["profile"]["min"], self.metadata["profile"]["max"]
        if batch.ndim != len(hi) or not all(a <= s <= b for a, s, b in
                                            zip(lo, batch.shape, hi, strict=True)):
            raise SsrDeployError(f"input {batch.shape} is outside the engine's profile "
                                 f"{tuple(lo)} to {tuple(hi)}")
        self.context.set_input_shape(inp.name, batch.shape)
        staged = self.host[inp.name].array.reshape(-1)[:batch.size].reshape(batch.shape)
        np.copyto(staged, batch, casting="no")
        start, copied_in, computed, copied_out = self.events
        start.record(self.stream)
        self.stream.copy_to_device(self.device[inp.name].ptr, self.host[inp.name].ptr,
                                   batch.nbytes)
        copied_in.record(self.stream)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise SsrDeployError("TensorRT execution failed; see the TensorRT log above")
        computed.record(self.stream)
        shape = output_shape(self.metadata, batch.shape)
        result = self.host[out.name].array.reshape(-1)[:int(np.prod(shape))].reshape(shape)
        self.stream.copy_to_host(self.host[out.name].ptr, self.device[out.name].ptr,
                                 result.nbytes)
        copied_out.record(self.stream)
        self.stream.synchronize()
        self.last_timing = {"compute_ms": computed.ms_since(copied_in),
                            "copy_ms": copied_in.ms_since(start) + copied_out.ms_since(computed)}
        return result.copy()

    def close(self) -> None:
        for buffers in (getattr(self, "host", {}), getattr(self, "device", {})):
            for buffer in buffers.values():
                buffer.free()
        for event in getattr(self, "events", []):
            event.destroy()
        if getattr(self, "stream", None) is not None:
            self.stream.destroy()
        self.context = self.engine = None
