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

A TensorRT-RTX engine (its sidecar names the builder) is opened with ``tensorrt_rtx``: its
validity checked first, its JIT-compiled kernels kept in a runtime cache under the user's
cache folder and reused on the next load, and ``cuda_graph=True`` handed to TensorRT-RTX as
its own whole-graph capture strategy.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssr_deploy.backends.base import Backend, LayerTimes, write_layer_trace
from ssr_deploy.backends.tensorrt.engine import (
    DTYPES,
    TensorIO,
    buffer_plan,
    check_engine_io,
    check_in_profile,
    check_rtx_validity,
    engine_io,
)
from ssr_deploy.backends.tensorrt.library import (
    RTX_MAGIC,
    TensorRT,
    check_compatibility,
    check_engine_builder,
    load_tensorrt,
    shared_logger,
)
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.io import atomic_write_bytes, cache_root
from ssr_deploy.spec import ModelSpec, file_sha256


@dataclass(frozen=True)
class TensorRTOptions:
    """``cuda_graph``: capture copy-in + execute + copy-out once per input shape and replay
    it with one launch. For an ONNX (its engine built on first use and cached, see
    ``cache.cached_engine``): ``builder`` "tensorrt" or "tensorrt-rtx" (None: full TensorRT
    where it imports), ``engine_cache`` the folder (None: ``~/.cache/ssr-deploy/engines``)."""

    cuda_graph: bool = False
    builder: str | None = None
    engine_cache: str | None = None


class RtxRuntimeCache:
    """TensorRT-RTX's runtime config for one engine: its JIT-compiled kernels cached in
    ``~/.cache/ssr-deploy/tensorrt-rtx/`` (keyed by the engine and the GPU), loaded at open
    and written back at close, so the second load of an engine starts without compiling."""

    def __init__(self, library: TensorRT, engine, engine_sha256: str, gpu: dict[str, str],
                 cuda_graph: bool) -> None:
        trt = library.module
        key = engine_sha256[:16]
        board = "".join(c if c.isalnum() else "-" for c in gpu.get("name", "gpu"))
        self.path = cache_root() / "tensorrt-rtx" / f"{key}-{board}.cache"
        self.runtime_config = engine.create_runtime_config()
        self.rtx_cache = self.runtime_config.create_runtime_cache()
        if self.path.is_file():  # a cache of another environment is refused, left unchanged
            self.rtx_cache.deserialize(self.path.read_bytes())
        if not self.runtime_config.set_runtime_cache(self.rtx_cache):
            raise SsrDeployError(f"{library.title} refused its runtime cache; remove "
                                 f"{self.path} and load the engine again")
        if cuda_graph:
            self.runtime_config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE

    def save(self) -> None:
        data = bytes(self.rtx_cache.serialize())
        if data:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, data)


class _Slot:
    """Host and device buffers for one frame in flight, and the events that order it."""

    def __init__(self, cuda, plan: list[TensorIO]) -> None:
        self.host, self.device, self.events = {}, {}, []
        try:  # one at a time, so an allocation that fails frees the ones before it
            for t in plan:
                self.host[t.name] = cuda.HostBuffer(t.shape, DTYPES[t.dtype])
                self.device[t.name] = cuda.DeviceBuffer(t.nbytes)
            for _ in range(3):
                self.events.append(cuda.Event())
        except BaseException:
            self.free()
            raise
        self.copied_in, self.computed, self.copied_out = self.events

    def view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.host[name].array.reshape(-1)[:int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        for buffer in (*self.host.values(), *self.device.values()):
            buffer.free()
        for event in self.events:
            event.destroy()


class TensorRTBackend(Backend):
    name = "tensorrt"
    Options = TensorRTOptions
    default_device = "cuda"
    on_gpu = True
    # what close() frees: None/empty until made, so a half-finished open closes cleanly
    engine = context = runtime_cache = start = None
    compute = upload = download = None
    slots: list = []
    cuda_graph = False

    def __init__(self, path: str | Path, device: str = "cuda", index: int = 0,
                 options: TensorRTOptions | None = None) -> None:
        from ssr_deploy.backends.tensorrt import cuda

        if device != "cuda":
            raise UsageError("a TensorRT engine runs on a GPU: use --device cuda (or cuda:N)")
        self._cuda = cuda
        self.index = device = index
        self._here = threading.local()  # .set: this thread's current CUDA device is ours
        # one inference at a time: a context and the buffer slots serve one caller (TensorRT's
        # contexts must not be used from two threads at once); ``_busy`` refuses a call made
        # inside this backend's own infer_stream, on its thread, instead of corrupting it
        self._lock, self._busy = threading.RLock(), False
        self._graphs, self._contexts = {}, {}  # per captured shape, each its own context
        try:
            self._open(Path(path), device, options or TensorRTOptions())
        except BaseException:  # what a half-finished open allocated is freed
            self.close()
            raise

    def _open(self, path: Path, device: int, options: TensorRTOptions) -> None:
        cuda = self._cuda
        notes = []
        if path.suffix.lower() == ".onnx":
            if cuda.find_gpu(device)[0] is not None:  # (else the cache says why, in one line)
                self._on_this_thread()  # before a build: TensorRT builds on the current device
            from ssr_deploy.backends.tensorrt.cache import cached_engine

            onnx_spec = ModelSpec.load(path)
            if onnx_spec.precision == "fp32":
                notes.append(f"{path.name} is fp32, and so is its engine: for fp16, give the "
                             "fp16 ONNX (ssr-deploy export onnx --precision fp16, or "
                             "ssr_deploy.export.engine_for)")
            path = cached_engine(path, options.builder, device=device,
                                 folder=options.engine_cache, to_run=True)
        elif options.builder or options.engine_cache:
            raise UsageError("builder and engine_cache are for an .onnx (its engine is built "
                             f"on first use); {path.name} is built already")
        self.path = path
        self.spec = ModelSpec.load(path)
        if self.spec.profile is None:
            raise UsageError(f"{path.name}'s sidecar has no optimisation profile: it is not an "
                             "engine's; build one with `ssr-deploy export engine`")
        builder = self.spec.engine.builder if self.spec.engine else "tensorrt"
        data = path.read_bytes()
        check_engine_builder(path.name, builder, data[:len(RTX_MAGIC)])
        self.library = load_tensorrt(builder)
        trt = self.library.module
        gpu, why = cuda.find_gpu(device)
        self.notes = notes + check_compatibility(self.spec, self.library, gpu, path.name, why)
        self._on_this_thread()
        self.device_name = gpu["name"]
        self.trt_runtime = trt.Runtime(shared_logger(self.library))
        if self.library.is_rtx:
            check_rtx_validity(self.library, self.trt_runtime, data, path.name)
        self.engine = self.trt_runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise SsrDeployError(f"{self.library.title} could not load {path}; rebuild it with "
                                 "`ssr-deploy export engine`")
        check_engine_io(self.spec, engine_io(trt, self.engine), path.name)
        cuda_graph = options.cuda_graph
        # the sidecar's sha256 was checked against the file when it loaded
        sha256 = self.spec.sha256 or file_sha256(path)
        self.runtime_cache = RtxRuntimeCache(self.library, self.engine, sha256, gpu, cuda_graph) \
            if self.library.is_rtx else None
        self.context = self._new_context()
        self.plan = buffer_plan(self.spec)
        self.compute = cuda.Stream()  # each kept as made: a failed open frees what it made
        self.upload = cuda.Stream()
        self.download = cuda.Stream()
        self.slots = []
        for _ in range(2):
            self.slots.append(_Slot(cuda, self.plan))
        self.start = cuda.Event()
        # TensorRT-RTX captures and replays CUDA graphs itself (its runtime config)
        self.cuda_graph = cuda_graph and not self.library.is_rtx

    def _on_this_thread(self) -> None:
        """CUDA's current device is per thread: the thread that runs an inference (the
        video's inference thread, Triton's model thread) is set to this engine's GPU once,
        before its first call (else ``cuda:1``'s work would go to device 0's context). Kept in
        thread-local storage, which a new thread never inherits (a thread id is reused)."""
        if not getattr(self._here, "set", False):
            self._cuda.set_device(self.index)
            self._here.set = True

    @contextlib.contextmanager
    def _turn(self):
        """This caller's turn at the context and buffers (other threads wait)."""
        with self._lock:
            if self._busy:
                raise SsrDeployError("this TensorRT backend is inside its own infer_stream on "
                                     "this thread: finish (or close) that stream first")
            self._busy = True
            try:
                self._on_this_thread()
                yield
            finally:
                self._busy = False

    def _new_context(self):
        if self.runtime_cache is not None:
            context = self.engine.create_execution_context(self.runtime_cache.runtime_config)
        else:
            context = self.engine.create_execution_context()
        if context is None:
            raise SsrDeployError("TensorRT could not create an execution context (out of GPU "
                                 "memory?); close other GPU work or build a smaller profile")
        return context

    # ---- the one copy-in -> execute -> copy-out -------------------------------------
    def _bind(self, context, slot: _Slot, shape: tuple[int, ...]) -> None:
        inp, out = self.plan
        if not context.set_input_shape(inp.name, shape):
            raise SsrDeployError(f"TensorRT refused input shape {shape} (profile "
                                 f"{self.spec.profile[0]} to {self.spec.profile[2]})")
        for name in (inp.name, out.name):
            if not context.set_tensor_address(name, slot.device[name].ptr):
                raise SsrDeployError(f"TensorRT refused the buffer of {name}; rebuild the "
                                     "engine with `ssr-deploy export engine`")

    def _enqueue(self, context, slot: _Slot, shape: tuple[int, ...], upload, compute,
                 download) -> None:
        """Copy in on ``upload``, execute on ``compute``, copy out on ``download``, each
        waiting for the one before; one stream for all three is what a CUDA graph holds."""
        inp, out = self.plan
        upload.copy_to_device(slot.device[inp.name].ptr, slot.host[inp.name].ptr,
                              int(np.prod(shape)) * np.dtype(DTYPES[inp.dtype]).itemsize)
        slot.copied_in.record(upload)
        if compute is not upload:
            compute.wait(slot.copied_in)
        if not context.execute_async_v3(compute.ptr):
            raise SsrDeployError("TensorRT execution failed; see the TensorRT log above")
        slot.computed.record(compute)
        if download is not compute:
            download.wait(slot.computed)
        out_shape = self.spec.output_shape(shape)
        download.copy_to_host(slot.host[out.name].ptr, slot.device[out.name].ptr,
                              int(np.prod(out_shape)) * np.dtype(DTYPES[out.dtype]).itemsize)
        slot.copied_out.record(download)

    def _stage(self, slot: _Slot, batch: np.ndarray) -> tuple[int, ...]:
        check_in_profile(self.spec, batch.shape)
        shape = tuple(batch.shape)
        np.copyto(slot.view(self.plan[0].name, shape), batch, casting="no")
        return shape

    def _collect(self, slot: _Slot, shape: tuple[int, ...]) -> np.ndarray:
        slot.copied_out.synchronize()
        return slot.view(self.plan[1].name, self.spec.output_shape(shape)).copy()

    # ---- one batch, synchronous ----------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self._turn():
            return self._infer(batch, self.cuda_graph)

    def _infer(self, batch: np.ndarray, graphs: bool) -> np.ndarray:
        slot = self.slots[0]
        shape = self._stage(slot, batch)
        stream = self.compute
        self.start.record(stream)
        if graphs and shape not in self._graphs:
            self._capture(slot, shape, stream)
        graphs = graphs and self.cuda_graph  # (a refused capture turned graphs off)
        if graphs:
            self._graphs[shape].launch(stream)
            slot.copied_out.record(stream)
        else:
            self._bind(self.context, slot, shape)
            self._enqueue(self.context, slot, shape, stream, stream, stream)
        out = self._collect(slot, shape)
        if not graphs:  # events inside a graph are not ours to time
            self.last_timing = {
                "compute_ms": slot.computed.ms_since(slot.copied_in),
                "copy_ms": slot.copied_in.ms_since(self.start)
                + slot.copied_out.ms_since(slot.computed)}
        return out

    def _capture(self, slot: _Slot, shape: tuple[int, ...], stream) -> None:
        """A CUDA graph of copy-in + enqueue + copy-out for ``shape``, on a context of its
        own. A capture TensorRT or the driver refuses turns graphs off for this backend
        (said in ``notes``): the frame runs as without them, never an error."""
        context = self._contexts[shape] = self._new_context()
        self._bind(context, slot, shape)
        self._enqueue(context, slot, shape, stream, stream, stream)  # sets up its state
        stream.synchronize()
        try:
            self._graphs[shape] = self._cuda.Graph(stream, lambda s: self._enqueue(
                context, slot, shape, s, s, s))
        except SsrDeployError as e:
            self.cuda_graph = False
            note = f"CUDA graph capture failed ({str(e)[:160]}); running without graphs"
            self.notes = [*self.notes, note]
            warnings.warn(note, RuntimeWarning, stacklevel=3)

    # ---- a stream of batches, double-buffered ---------------------------------------
    def infer_stream(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Outputs in order; batch i+1 is copied in (upload stream) while batch i computes
        and i-1 is copied out (download stream). The backend is this stream's until it ends
        (other threads' calls wait)."""
        with self._turn():
            pending: list[tuple[_Slot, tuple[int, ...]]] = []
            for i, batch in enumerate(batches):
                slot = self.slots[i % 2]
                if len(pending) == 2:  # this slot's previous frame must be out before reuse
                    yield self._collect(*pending.pop(0))
                shape = self._stage(slot, batch)
                self._bind(self.context, slot, shape)
                self._enqueue(self.context, slot, shape, self.upload, self.compute,
                              self.download)
                pending.append((slot, shape))
            for slot, shape in pending:
                yield self._collect(slot, shape)

    # ---- per-layer time ---------------------------------------------------------------
    def layer_times(self, batch: np.ndarray, iters: int, trace: Path | None = None
                    ) -> LayerTimes:
        """TensorRT's IProfiler on the execution context (it reports after each synchronized
        run); ``trace``: one average run, layer after layer. The runs are plain launches on
        that context even where CUDA graphs are on (a graph's replay runs on a context of its
        own, which the profiler would not see)."""
        trt = self.library.module
        times: dict[str, float] = defaultdict(float)
        order: list[str] = []

        class Recorder(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                if layer_name not in times:
                    order.append(layer_name)
                times[layer_name] += ms

        with self._turn():
            self.context.profiler = Recorder()
            for _ in range(iters):
                self._infer(batch, graphs=False)
        if trace:
            write_layer_trace(trace, [(name, times[name] / iters) for name in order])
        return LayerTimes(dict(times))

    def close(self) -> None:
        """Wait for the work queued on every stream, then free each resource once (a second
        close frees nothing; a half-finished open frees what it made). A CUDA error on the
        way is raised after everything else has been freed."""
        with self._lock:  # an inference in flight on another thread finishes first
            self._close()

    def _close(self) -> None:
        errors: list[SsrDeployError] = []

        def attempt(call) -> None:
            try:
                call()
            except SsrDeployError as e:
                errors.append(e)

        streams = [s for s in (self.compute, self.upload, self.download) if s is not None]
        for stream in streams:  # a copy still in flight must not meet freed memory
            attempt(stream.synchronize)
        graphs, self._graphs = self._graphs, {}
        slots, self.slots = self.slots, ()
        start, self.start = self.start, None
        self.compute = self.upload = self.download = None
        for graph in graphs.values():
            attempt(graph.destroy)
        for slot in slots:
            attempt(slot.free)
        for resource in (*streams, *([start] if start is not None else [])):
            attempt(resource.destroy)
        self._contexts = {}
        self.context = None
        cache, self.runtime_cache = self.runtime_cache, None
        if cache is not None:
            cache.save()
        self.engine = None
        if errors:
            raise errors[0]
