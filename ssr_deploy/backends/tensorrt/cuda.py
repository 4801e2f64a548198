"""The little CUDA we need, through cuda-python (``cuda.bindings.runtime``): device memory,
page-locked host memory, streams, copies, device facts. Imported only on GPU paths."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise SsrDeployError("cuda-python is not installed: pip install 'ssr-deploy[cu12]' on "
                                 "a machine with an NVIDIA GPU") from None
    return cudart


#: CUDA errors that mean "this machine cannot run CUDA", said plainly
NO_GPU = {"cudaErrorNoDevice": "no NVIDIA GPU is visible",
          "cudaErrorInsufficientDriver": "no NVIDIA driver, or one older than this CUDA "
                                         "runtime needs",
          "cudaErrorInitializationError": "the CUDA driver could not start"}


def check(result: tuple) -> Any:
    """cuda-python calls return (err, *values): raise on error, return the value(s)."""
    err, *values = result
    cudart = _cudart()
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorName(err)[1].decode()
        if name in NO_GPU:
            raise SsrDeployError(f"no usable NVIDIA GPU here ({NO_GPU[name]}; CUDA: {name}): "
                                 "run engines on a machine with an NVIDIA GPU and its driver")
        raise SsrDeployError(f"CUDA error {name}: {cudart.cudaGetErrorString(err)[1].decode()}")
    return values[0] if len(values) == 1 else (values or None)


def gpu_info(device: int = 0) -> dict[str, str]:
    """{"name", "compute_capability" ("9.0"), "driver"} of ``device``."""
    cudart = _cudart()
    props = check(cudart.cudaGetDeviceProperties(device))
    driver = check(cudart.cudaDriverGetVersion())
    return {"name": props.name.decode().rstrip("\0"),
            "compute_capability": f"{props.major}.{props.minor}",
            "driver": f"{driver // 1000}.{driver % 1000 // 10}"}


def find_gpu(device: int = 0) -> tuple[dict[str, str] | None, str]:
    """(gpu_info(device), "") where this machine has that GPU, else (None, why not)."""
    try:
        return gpu_info(device), ""
    except SsrDeployError as e:
        return None, str(e)


def set_device(device: int) -> None:
    check(_cudart().cudaSetDevice(device))


def upload(dst: int, array: np.ndarray) -> None:
    """Synchronous host -> device copy of a C-contiguous array to address ``dst``."""
    cudart = _cudart()
    array = np.ascontiguousarray(array)
    check(cudart.cudaMemcpy(dst, array.ctypes.data, array.nbytes,
                            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))


class DeviceBuffer:
    """``nbytes`` of device memory; ``ptr`` is its address as an int."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.ptr = int(check(_cudart().cudaMalloc(max(nbytes, 1))))

    def free(self) -> None:
        if self.ptr:
            check(_cudart().cudaFree(self.ptr))
            self.ptr = 0


class HostBuffer:
    """Page-locked host memory viewed as a numpy array of ``shape`` and ``dtype``, so
    async copies overlap with compute."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * dtype.itemsize
        self.ptr = int(check(_cudart().cudaMallocHost(max(self.nbytes, 1))))
        raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self.array = None
            check(_cudart().cudaFreeHost(self.ptr))
            self.ptr = 0


class Event:
    """A CUDA event for device-side timing."""

    def __init__(self) -> None:
        self.handle = check(_cudart().cudaEventCreate())

    def record(self, stream: Stream) -> None:
        check(_cudart().cudaEventRecord(self.handle, stream.handle))

    def synchronize(self) -> None:
        check(_cudart().cudaEventSynchronize(self.handle))

    def ms_since(self, earlier: Event) -> float:
        """Milliseconds from ``earlier`` to this event (both must have completed)."""
        return float(check(_cudart().cudaEventElapsedTime(earlier.handle, self.handle)))

    def destroy(self) -> None:
        if self.handle is not None:
            check(_cudart().cudaEventDestroy(self.handle))
            self.handle = None


class Graph:
    """A CUDA graph captured from the work ``enqueue(stream)`` puts on ``stream``; ``launch``
    replays it with one call (copies + TensorRT enqueue), cutting per-frame CPU overhead."""

    def __init__(self, stream: Stream, enqueue) -> None:
        cudart = _cudart()
        check(cudart.cudaStreamBeginCapture(
            stream.handle, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))
        try:
            enqueue(stream)
        except BaseException:
            # end the capture so the stream is usable again, free the graph it returns (one
            # is returned unless the capture was invalidated), and report what broke it (the
            # end call's own error would hide that)
            _, *graph = cudart.cudaStreamEndCapture(stream.handle)
            if graph and graph[0] is not None and int(graph[0]):
                cudart.cudaGraphDestroy(graph[0])
            raise
        self.graph, self.exec = check(cudart.cudaStreamEndCapture(stream.handle)), None
        try:
            self.exec = check(cudart.cudaGraphInstantiate(self.graph, 0))
        except SsrDeployError:
            self.destroy()
            raise

    def launch(self, stream: Stream) -> None:
        check(_cudart().cudaGraphLaunch(self.exec, stream.handle))

    def destroy(self) -> None:
        cudart = _cudart()
        graph_exec, graph, self.exec, self.graph = self.exec, self.graph, None, None
        if graph_exec is not None:
            check(cudart.cudaGraphExecDestroy(graph_exec))
        if graph is not None:
            check(cudart.cudaGraphDestroy(graph))


class Stream:
    def __init__(self) -> None:
        self.handle = check(_cudart().cudaStreamCreate())

    def copy_to_device(self, dst: int, src: int, nbytes: int) -> None:
        cudart = _cudart()
        check(cudart.cudaMemcpyAsync(dst, src, nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle))

    def copy_to_host(self, dst: int, src: int, nbytes: int) -> None:
        cudart = _cudart()
        check(cudart.cudaMemcpyAsync(dst, src, nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle))

    def synchronize(self) -> None:
        check(_cudart().cudaStreamSynchronize(self.handle))

    def wait(self, event: Event) -> None:
        """Work queued after this waits for ``event`` (recorded on another stream)."""
        check(_cudart().cudaStreamWaitEvent(self.handle, event.handle, 0))

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def destroy(self) -> None:
        if self.handle is not None:
            check(_cudart().cudaStreamDestroy(self.handle))
            self.handle = None
