"""TensorRT with cuda-python, in the shape of TensorRT's own samples: a page-locked host
buffer and a device buffer per I/O tensor, sized for the profile's largest shape, async
copies and ``execute_async_v3`` on a stream, explicit freeing in ``close()``.

Two slots of buffers give double buffering in ``infer_stream``: frame i+1 is uploaded on its
own stream while frame i computes, and frame i is downloaded on a third (one copy stream
would queue the upload of i+1 behind the download of i, which waits for i's compute).
``cuda_graph=True`` captures copy-in + enqueue + copy-out once per input shape, each shape
with its own execution context (a context's internal state follows its last input shape, so
one context shared by several captured graphs would replay stale state), and replays it with
one launch. Every TensorRT call that can fail is checked; the engine's own I/O (names,
dtypes, shapes) is checked against the sidecar at load.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


@dataclass(frozen=True)
class TensorIO:
    """One I/O tensor as the engine reports it (-1 for a dynamic dimension)."""

    name: str
    is_input: bool
    dtype: str
    shape: tuple[int, ...]


def engine_io(trt, engine) -> list[TensorIO]:
    """The engine's I/O tensors, read through the TensorRT API."""
    names = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16",
             trt.DataType.UINT8: "uint8", trt.DataType.INT32: "int32",
             trt.DataType.INT64: "int64", trt.DataType.INT8: "int8"}
    tensors = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        tensors.append(TensorIO(
            name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
            names.get(engine.get_tensor_dtype(name), str(engine.get_tensor_dtype(name))),
            tuple(engine.get_tensor_shape(name))))
    return tensors


def check_engine_io(meta: dict[str, Any], tensors: list[TensorIO], engine_name: str) -> None:
    """The engine must hold exactly the input and output its sidecar describes."""
    expected = [(meta["input"], True), (meta["output"], False)]
    found = {(t.name, t.is_input): t for t in tensors}
    if len(tensors) != 2:
        raise SsrDeployError(f"{engine_name} has {len(tensors)} I/O tensors "
                             f"({', '.join(t.name for t in tensors)}); its sidecar describes one "
                             "input and one output: rebuild it with `ssr-deploy export engine`")
    for spec, is_input in expected:
        tensor = found.get((spec["name"], is_input))
        kind = "input" if is_input else "output"
        if tensor is None:
            raise SsrDeployError(f"{engine_name} has no {kind} {spec['name']!r} as its sidecar "
                                 "says; the sidecar belongs to another engine: rebuild it")
        rank = len(spec["shape"])
        if tensor.dtype != spec["dtype"] or len(tensor.shape) != rank or any(
                a not in (-1, b) and b != -1 for a, b in zip(tensor.shape, spec["shape"],
                                                            strict=False)):
            raise SsrDeployError(f"{engine_name}: {kind} {tensor.name} is {tensor.dtype} "
                                 f"{list(tensor.shape)}, its sidecar says {spec['dtype']} "
                                 f"{spec['shape']}; rebuild it with `ssr-deploy export engine`")


def check_in_profile(meta: dict[str, Any], shape: tuple[int, ...]) -> None:
    lo, hi = meta["profile"]["min"], meta["profile"]["max"]
    if len(shape) != len(hi) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi,
                                                                        strict=True)):
        raise SsrDeployError(f"input {tuple(shape)} is outside the engine's profile "
                             f"{tuple(lo)} to {tuple(hi)}")


class _Slot:
    """Host and device buffers for one frame in flight, and the events that order it."""

    def __init__(self, cuda, plan: list[TensorPlan]) -> None:
        self.host = {t.name: cuda.HostBuffer(t.max_shape, DTYPES[t.dtype]) for t in plan}
        self.device = {t.name: cuda.DeviceBuffer(t.nbytes) for t in plan}
        self.copied_in, self.computed, self.copied_out = (cuda.Event() for _ in range(3))

    def view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.host[name].array.reshape(-1)[:int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        for buffer in (*self.host.values(), *self.device.values()):
            buffer.free()
        for event in (self.copied_in, self.computed, self.copied_out):
            event.destroy()


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: str | Path, device: int = 0, cuda_graph: bool = False) -> None:
        from ssr_deploy.export.tensorrt import import_tensorrt
        from ssr_deploy.runtime import cuda

        trt = import_tensorrt()
        self._cuda = cuda
        path = Path(path)
        self.metadata = read_sidecar(path)
        check_compatibility(self.metadata, trt.__version__, cuda.gpu_info(device), path.name)
        cuda.check(cuda._cudart().cudaSetDevice(device))
        self.device_name = cuda.gpu_info(device)["name"]
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self._logger)
        self.engine = self.trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SsrDeployError(f"TensorRT could not load {path}; rebuild it with "
                                 "`ssr-deploy export engine`")
        check_engine_io(self.metadata, engine_io(trt, self.engine), path.name)
        self.context = self._new_context()
        self.plan = buffer_plan(self.metadata)
        self.compute, self.upload, self.download = cuda.Stream(), cuda.Stream(), cuda.Stream()
        self.slots = [_Slot(cuda, self.plan), _Slot(cuda, self.plan)]
        self.start = cuda.Event()
        self.cuda_graph = cuda_graph
        self._graphs: dict[tuple[int, ...], Any] = {}
        self._contexts: dict[tuple[int, ...], Any] = {}  # one per captured shape

    def _new_context(self):
        context = self.engine.create_execution_context()
        if context is None:
            raise SsrDeployError("TensorRT could not create an execution context (out of GPU "
                                 "memory?); close other GPU work or build a smaller profile")
        return context

    # ---- one batch, synchronous ----------------------------------------------------
    def _enqueue(self, context, slot: _Slot, shape: tuple[int, ...], stream) -> None:
        """copy in -> execute -> copy out, all on ``stream`` (the unit a CUDA graph holds)."""
        inp, out = self.plan
        nbytes_in = int(np.prod(shape)) * np.dtype(DTYPES[inp.dtype]).itemsize
        out_shape = output_shape(self.metadata, shape)
        nbytes_out = int(np.prod(out_shape)) * np.dtype(DTYPES[out.dtype]).itemsize
        stream.copy_to_device(slot.device[inp.name].ptr, slot.host[inp.name].ptr, nbytes_in)
        slot.copied_in.record(stream)
        if not context.execute_async_v3(stream.ptr):
            raise SsrDeployError("TensorRT execution failed; see the TensorRT log above")
        slot.computed.record(stream)
        stream.copy_to_host(slot.host[out.name].ptr, slot.device[out.name].ptr, nbytes_out)

    def _bind(self, context, slot: _Slot, shape: tuple[int, ...]) -> None:
        inp, out = self.plan
        if not context.set_input_shape(inp.name, shape):
            raise SsrDeployError(f"TensorRT refused input shape {shape} (profile "
                                 f"{self.metadata['profile']['min']} to "
                                 f"{self.metadata['profile']['max']})")
        for name in (inp.name, out.name):
            if not context.set_tensor_address(name, slot.device[name].ptr):
                raise SsrDeployError(f"TensorRT refused the buffer of {name}; rebuild the "
                                     "engine with `ssr-deploy export engine`")

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_in_profile(self.metadata, batch.shape)
        inp, out = self.plan
        slot, shape = self.slots[0], tuple(batch.shape)
        np.copyto(slot.view(inp.name, shape), batch, casting="no")
        self.start.record(self.compute)
        if self.cuda_graph:
            if shape not in self._graphs:
                context = self._contexts[shape] = self._new_context()
                self._bind(context, slot, shape)
                self._enqueue(context, slot, shape, self.compute)  # first run sets up state
                self.compute.synchronize()
                self._graphs[shape] = self._cuda.Graph(
                    self.compute, lambda stream: self._enqueue(context, slot, shape, stream))
            self._graphs[shape].launch(self.compute)
        else:
            self._bind(self.context, slot, shape)
            self._enqueue(self.context, slot, shape, self.compute)
        slot.copied_out.record(self.compute)
        self.compute.synchronize()
        if not self.cuda_graph:  # events inside a graph are not ours to time
            self.last_timing = {
                "compute_ms": slot.computed.ms_since(slot.copied_in),
                "copy_ms": slot.copied_in.ms_since(self.start)
                + slot.copied_out.ms_since(slot.computed)}
        return slot.view(out.name, output_shape(self.metadata, shape)).copy()

    # ---- a stream of batches, double-buffered ---------------------------------------
    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs in order; batch i+1 is copied in (copy stream) while batch i computes."""
        inp, out = self.plan
        pending: list[tuple[_Slot, tuple[int, ...]]] = []
        for i, batch in enumerate(batches):
            check_in_profile(self.metadata, batch.shape)
            slot, shape = self.slots[i % 2], tuple(batch.shape)
            if len(pending) == 2:  # this slot's previous frame must be out before reuse
                yield self._collect(*pending.pop(0))
            np.copyto(slot.view(inp.name, shape), batch, casting="no")
            self.upload.copy_to_device(slot.device[inp.name].ptr, slot.host[inp.name].ptr,
                                       batch.nbytes)
            slot.copied_in.record(self.upload)
            self.compute.wait(slot.copied_in)
            self._bind(self.context, slot, shape)
            if not self.context.execute_async_v3(self.compute.ptr):
                raise SsrDeployError("TensorRT execution failed; see the TensorRT log above")
            slot.computed.record(self.compute)
            self.download.wait(slot.computed)
            out_shape = output_shape(self.metadata, shape)
            self.download.copy_to_host(slot.host[out.name].ptr, slot.device[out.name].ptr,
                                       slot.view(out.name, out_shape).nbytes)
            slot.copied_out.record(self.download)
            pending.append((slot, shape))
        for slot, shape in pending:
            yield self._collect(slot, shape)

    def _collect(self, slot: _Slot, shape: tuple[int, ...]) -> np.ndarray:
        slot.copied_out.synchronize()
        return slot.view(self.plan[1].name, output_shape(self.metadata, shape)).copy()

    def close(self) -> None:
        for graph in getattr(self, "_graphs", {}).values():
            graph.destroy()
        for slot in getattr(self, "slots", []):
            slot.free()
        for stream in (getattr(self, name, None) for name in ("compute", "upload", "download")):
            if stream is not None:
                stream.destroy()
        if getattr(self, "start", None) is not None:
            self.start.destroy()
        self._contexts = {}
        self.context = self.engine = None
