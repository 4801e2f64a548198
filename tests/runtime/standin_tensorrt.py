"""A stand-in TensorRT for driving ``TensorRTBackend`` on a real GPU that has no TensorRT
(the lent H100/H200s): the backend's own buffers, streams, events, double buffering and CUDA
graphs run for real through cuda-python, and the engine's "execution" is real device work
enqueued on the stream it is given: a strided device-to-device copy that writes, for each
image of the batch, the first H*W bytes of its uint8 BGR data as its labels. So every label
map says which frame's bytes reached which output, batch by batch.

Its names are the ones the backend calls (``Runtime``, ``deserialize_cuda_engine``,
``create_execution_context``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``, ``DataType``, ``TensorIOMode``, ``ILogger``); the fakes of
``tests/backends/tensorrt_fakes.py`` check the same names against the real bindings.
"""

from __future__ import annotations

import enum
import types

import numpy as np

VERSION = "10.16.1.11"


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    UINT8 = 5
    INT64 = 9


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class ILogger:
    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self) -> None:
        pass


def expected_labels(frames: np.ndarray) -> np.ndarray:
    """What the stand-in engine returns for a (N, H, W, 3) uint8 batch."""
    n, h, w, _ = frames.shape
    return frames.reshape(n, -1)[:, :h * w].reshape(n, h, w)


def module(io: list[tuple[str, bool, str, tuple[int, ...]]]) -> types.ModuleType:
    """A ``tensorrt`` module whose engines have the I/O ``io``: (name, is_input, dtype
    name, shape with -1 for dynamic dimensions), as the sidecar describes them."""
    from cuda.bindings import runtime as cudart

    from tests.backends.tensorrt_fakes import engine_classes

    trt = types.ModuleType("standin_tensorrt")
    trt.__version__ = VERSION
    trt.DataType, trt.TensorIOMode, trt.ILogger = DataType, TensorIOMode, ILogger
    dtypes = {"uint8": DataType.UINT8, "int32": DataType.INT32, "float32": DataType.FLOAT,
              "float16": DataType.HALF}
    trt.executions = []  # (stream, shape) of each execution, in order

    class IExecutionContext:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.profiler = None

        def set_input_shape(self, name: str, shape) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name: str, memory: int) -> bool:
            self.addresses[name] = int(memory)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            (name, shape), = self.shapes.items()
            out = next(n for n, is_input, *_ in io if not is_input)
            n, h, w, c = shape
            err, = cudart.cudaMemcpy2DAsync(
                self.addresses[out], h * w, self.addresses[name], h * w * c, h * w, n,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                cudart.cudaStream_t(stream_handle))
            trt.executions.append((int(stream_handle), shape))
            return err == cudart.cudaError_t.cudaSuccess

    ICudaEngine, Runtime = engine_classes(lambda: io, dtypes, TensorIOMode, IExecutionContext)
    trt.Runtime, trt.ICudaEngine, trt.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
    return trt
