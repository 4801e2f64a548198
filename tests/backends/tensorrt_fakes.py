"""A GPU for the TensorRT backend's own logic, on a machine without one.

``FakeCuda`` stands for ``ssr_deploy.backends.tensorrt.cuda`` (every name it has is checked
against that module's signatures): device memory is host memory, a copy or a TensorRT
execution happens when it is queued (or is recorded while a graph is captured, and replayed
by its launch), and every call lands in ``log`` in order. ``fake_tensorrt`` is a TensorRT
module whose Runtime, engine and execution context are fakes (each method checked against
the real ``tensorrt_rtx`` binding's signature; the enums and ILogger are the real ones). The
engine "computes" labels = the input's blue channel mod 19, so a result shows the data went
the right way.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
import types

import numpy as np

from ssr_deploy.errors import SsrDeployError

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "13.0"}


class FakeCuda:
    def __init__(self, gpu: dict[str, str] | None = None, fail: tuple[str, int] | None = None,
                 fail_capture: bool = False) -> None:
        self.gpu = gpu or H100
        self.log: list[tuple] = []
        self.memory: dict[int, np.ndarray] = {}  # device pointer -> bytes
        self.hosts: dict[int, np.ndarray] = {}  # host pointer -> the array's bytes
        self.streams: dict[int, object] = {}
        self.live: set[tuple[str, int]] = set()  # what is allocated and not yet freed
        self.current = threading.local()  # cudaSetDevice is per thread
        self.fail, self.counts = fail, {}
        self.fail_capture = fail_capture
        self._next = 0x1000
        self._build()

    # -- module functions ------------------------------------------------------------
    def find_gpu(self, device: int = 0):
        return (self.gpu, "") if device == 0 or self.gpu else (None, "no such device")

    def gpu_info(self, device: int = 0):
        return self.gpu

    def set_device(self, device: int) -> None:
        self.log.append(("set_device", device, threading.get_ident()))
        self.current.device = device

    def upload(self, dst: int, array: np.ndarray) -> None:
        raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        self.memory[dst][:raw.size] = raw

    # -- helpers -----------------------------------------------------------------------
    def _new(self, kind: str) -> int:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.fail == (kind, self.counts[kind]):
            raise SsrDeployError(f"CUDA error cudaErrorMemoryAllocation: out of memory ({kind})")
        self._next += 0x1000
        self.live.add((kind, self._next))
        self.log.append(("new", kind, self._next))
        return self._next

    def _free(self, kind: str, handle: int) -> None:
        if (kind, handle) not in self.live:
            raise AssertionError(f"{kind} {handle:#x} freed twice or never made")
        self.live.discard((kind, handle))
        self.log.append(("free", kind, handle))

    def run_on(self, stream_ptr: int, op) -> None:
        """Run ``op`` now, or record it if ``stream_ptr``'s stream is being captured."""
        stream = self.streams[stream_ptr]
        if stream.capturing is not None:
            stream.capturing.append(op)
        else:
            op()

    def _build(self) -> None:
        gpu = self

        class DeviceBuffer:
            def __init__(self, nbytes: int) -> None:
                self.nbytes = nbytes
                self.ptr = gpu._new("DeviceBuffer")
                gpu.memory[self.ptr] = np.zeros(max(nbytes, 1), np.uint8)

            def free(self) -> None:
                if self.ptr:
                    gpu._free("DeviceBuffer", self.ptr)
                    self.ptr = 0

        class HostBuffer:
            def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
                self.ptr = gpu._new("HostBuffer")
                self.array = np.zeros(shape, dtype)
                self.nbytes = self.array.nbytes
                gpu.hosts[self.ptr] = self.array.reshape(-1).view(np.uint8)

            def free(self) -> None:
                if self.ptr:
                    gpu._free("HostBuffer", self.ptr)
                    self.ptr, self.array = 0, None

        class Event:
            def __init__(self) -> None:
                self.handle = gpu._new("Event")

            def record(self, stream) -> None:
                gpu.log.append(("record", self.handle, stream.handle))

            def synchronize(self) -> None:
                pass

            def ms_since(self, earlier) -> float:
                return 1.0

            def destroy(self) -> None:
                if self.handle is not None:
                    gpu._free("Event", self.handle)
                    self.handle = None

        class Stream:
            def __init__(self) -> None:
                self.handle = gpu._new("Stream")
                self.capturing = None
                gpu.streams[self.handle] = self

            def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
                def op():
                    gpu.memory[dst][:nbytes] = gpu.hosts[src][:nbytes]
                gpu.run_on(self.handle, op)

            def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
                def op():
                    gpu.hosts[dst][:nbytes] = gpu.memory[src][:nbytes]
                gpu.run_on(self.handle, op)

            def synchronize(self) -> None:
                gpu.log.append(("synchronize", self.handle))

            def wait(self, event) -> None:
                gpu.log.append(("wait", self.handle, event.handle))

            @property
            def ptr(self) -> int:
                return int(self.handle)

            def destroy(self) -> None:
                if self.handle is not None:
                    gpu._free("Stream", self.handle)
                    self.handle = None

        class Graph:
            def __init__(self, stream, enqueue) -> None:
                stream.capturing = []
                try:
                    enqueue(stream)
                finally:
                    self.ops, stream.capturing = stream.capturing, None
                if gpu.fail_capture:
                    raise SsrDeployError("CUDA error cudaErrorStreamCaptureUnsupported: "
                                         "operation not permitted when stream is capturing")
                self.exec = gpu._new("Graph")

            def launch(self, stream) -> None:
                gpu.log.append(("launch", self.exec))
                for op in self.ops:
                    op()

            def destroy(self) -> None:
                if self.exec is not None:
                    gpu._free("Graph", self.exec)
                    self.exec = None

        self.DeviceBuffer, self.HostBuffer, self.Event = DeviceBuffer, HostBuffer, Event
        self.Stream, self.Graph = Stream, Graph

    def check_calls_on_this_device(self, device: int) -> None:
        assert getattr(self.current, "device", None) == device, "this thread's device"


def engine_classes(io, dtypes: dict, modes, context: type) -> tuple[type, type]:
    """A fake ``ICudaEngine`` whose I/O is what ``io()`` returns (a list of (name, is_input,
    dtype name, shape)), making ``context`` execution contexts, and a ``Runtime`` that
    deserialises any bytes into one; ``modes``: the TensorIOMode enum to answer with."""
    def find(name: str) -> tuple:
        return next(t for t in io() if t[0] == name)

    class ICudaEngine:
        @property
        def num_io_tensors(self) -> int:
            return len(io())

        def get_tensor_name(self, index: int) -> str:
            return io()[index][0]

        def get_tensor_mode(self, name: str):
            return modes.INPUT if find(name)[1] else modes.OUTPUT

        def get_tensor_dtype(self, name: str):
            return dtypes[find(name)[2]]

        def get_tensor_shape(self, name: str):
            return find(name)[3]

        def create_execution_context(self, strategy=None):
            return context()

    class Runtime:
        def __init__(self, logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            return ICudaEngine()

    return ICudaEngine, Runtime


def fake_tensorrt(gpu: FakeCuda, version: str = "10.16.1.11", classes: int = 19):
    """A ``tensorrt`` module: the real enums, ILogger and IProfiler of ``tensorrt_rtx`` (one
    API lineage), a fake Runtime that deserialises any bytes into an engine whose I/O it is
    given by ``module.engine_io`` (a list of (name, is_input, dtype, shape))."""
    import tensorrt_rtx as real

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    for name in ("ILogger", "IProfiler", "DataType", "TensorIOMode"):
        setattr(trt, name, getattr(real, name))
    dtypes = {"uint8": real.DataType.UINT8, "int32": real.DataType.INT32,
              "float32": real.DataType.FLOAT, "float16": real.DataType.HALF}
    trt.engine_io = []
    trt.contexts = []
    trt.execute_delay = 0.0  # seconds inside each execution, where another thread could act

    class IExecutionContext:
        def __init__(self) -> None:
            self.shapes, self.addresses = {}, {}
            self.profiler = None
            trt.contexts.append(self)

        def set_input_shape(self, name: str, shape: tuple) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            if trt.execute_delay:
                time.sleep(trt.execute_delay)
            (inp, shape), = self.shapes.items()
            out = next(n for n, is_input, *_ in trt.engine_io if not is_input)
            src, dst = self.addresses[inp], self.addresses[out]
            gpu.log.append(("execute", stream_handle, shape))

            def op():
                frames = gpu.memory[src][:int(np.prod(shape))].reshape(shape)
                labels = (frames[..., 0] % classes).astype(np.uint8).reshape(-1)
                gpu.memory[dst][:labels.size] = labels
            gpu.run_on(stream_handle, op)
            if self.profiler is not None:  # TensorRT reports each layer after a run
                self.profiler.report_layer_time("stages.0.layers.0/node_Conv_1", 0.5)
            return True

    ICudaEngine, Runtime = engine_classes(lambda: trt.engine_io, dtypes, real.TensorIOMode,
                                          IExecutionContext)
    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
    return trt


# ---- the fakes against the real APIs ------------------------------------------------------

def _binding_overloads(real_cls, name: str) -> list[list[str]]:
    """Parameter names (less self) of each overload pybind11 documents for a method."""
    doc = getattr(real_cls, name).__doc__ or ""
    overloads = []
    for args in re.findall(rf"{name}\((.*?)\) ->", doc):
        names = [a.split(":")[0].strip() for a in re.split(r",\s*(?![^\[]*\])", args) if a]
        overloads.append([n for n in names if n != "self"])
    return overloads


def check_against_bindings(fake_cls, real_cls) -> list[str]:
    """Every method and property the fake defines, as the real binding has it (the fake's
    parameter names equal one documented overload's); returns what was checked."""
    checked = []
    for name, value in vars(fake_cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        real = getattr(real_cls, name, None)
        assert real is not None, f"{real_cls.__name__} has no {name}"
        if isinstance(value, property):
            assert isinstance(real, property), f"{real_cls.__name__}.{name} is not a property"
        else:
            params = [p for p in inspect.signature(value).parameters if p != "self"]
            overloads = _binding_overloads(real_cls, name)
            if name == "__init__" and not overloads:
                continue  # made by TensorRT, never by its user: the fake's own business
            assert params in overloads, (name, params, overloads)
        checked.append(f"{real_cls.__name__}.{name}")
    return checked


def check_against_module(fake: FakeCuda) -> list[str]:
    """Every name FakeCuda offers is in our cuda module with the same parameters."""
    from ssr_deploy.backends.tensorrt import cuda as real

    checked = []
    for name in ("find_gpu", "gpu_info", "set_device", "upload", "DeviceBuffer", "HostBuffer",
                 "Event", "Stream", "Graph"):
        ours, theirs = getattr(fake, name), getattr(real, name)
        if isinstance(theirs, type):
            for attr, value in vars(ours).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                assert hasattr(theirs, attr), f"cuda.{name} has no {attr}"
                if callable(value):
                    assert (list(inspect.signature(value).parameters)
                            == list(inspect.signature(getattr(theirs, attr)).parameters)), attr
                checked.append(f"{name}.{attr}")
        else:
            assert (list(inspect.signature(ours).parameters)
                    == list(inspect.signature(theirs).parameters)), name
            checked.append(name)
    return checked
