"""cuda.py's own logic where no GPU is needed: what it does when CUDA says no. cudart is a
stand-in whose functions record their calls (each name and its arguments checked against
the real cuda-python binding); the enums and error names are the real ones."""

from __future__ import annotations

import inspect
import types

import pytest

from ssr_deploy.backends.tensorrt import cuda
from ssr_deploy.errors import SsrDeployError

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed")
SUCCESS = runtime.cudaError_t.cudaSuccess


class Cudart(types.SimpleNamespace):
    """The real module's enums and error strings; the listed functions recorded."""

    def __init__(self, **functions) -> None:
        super().__init__(calls=[], cudaError_t=runtime.cudaError_t,
                         cudaStreamCaptureMode=runtime.cudaStreamCaptureMode,
                         cudaGetErrorName=runtime.cudaGetErrorName,
                         cudaGetErrorString=runtime.cudaGetErrorString)
        for name, result in functions.items():
            real = getattr(runtime, name)  # the binding has it...
            arity = len(inspect.signature(real).parameters) if _has_signature(real) else None

            def record(*args, _name=name, _result=result, _arity=arity):
                assert _arity is None or len(args) == _arity, (_name, args)  # ...so called
                self.calls.append(_name)
                return _result() if callable(_result) else _result
            setattr(self, name, record)


def _has_signature(function) -> bool:
    try:
        inspect.signature(function)
        return True
    except (TypeError, ValueError):
        return False


def test_a_capture_that_raises_frees_the_graph_cuda_returns(monkeypatch):
    graph = runtime.cudaGraph_t(0x1234) if _takes_pointer() else object()
    fake = Cudart(cudaStreamBeginCapture=(SUCCESS,), cudaStreamEndCapture=(SUCCESS, graph),
                  cudaGraphDestroy=(SUCCESS,))
    monkeypatch.setattr(cuda, "_cudart", lambda: fake)
    stream = types.SimpleNamespace(handle=7)

    def enqueue(s):
        raise SsrDeployError("TensorRT execution failed")

    with pytest.raises(SsrDeployError, match="TensorRT execution failed"):
        cuda.Graph(stream, enqueue)
    assert fake.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphDestroy"]


def test_an_invalidated_capture_has_no_graph_to_free(monkeypatch):
    invalidated = runtime.cudaError_t.cudaErrorStreamCaptureInvalidated
    fake = Cudart(cudaStreamBeginCapture=(SUCCESS,),
                  cudaStreamEndCapture=(invalidated, runtime.cudaGraph_t()),
                  cudaGraphDestroy=(SUCCESS,))
    monkeypatch.setattr(cuda, "_cudart", lambda: fake)

    def enqueue(s):
        raise SsrDeployError("CUDA error cudaErrorStreamCaptureUnsupported")

    with pytest.raises(SsrDeployError, match="StreamCaptureUnsupported"):
        cuda.Graph(types.SimpleNamespace(handle=7), enqueue)
    assert fake.calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture"]


@pytest.mark.parametrize("error", ["cudaErrorNoDevice", "cudaErrorInsufficientDriver"])
def test_no_gpu_is_said_plainly(monkeypatch, error):
    fake = Cudart(cudaGetDeviceProperties=(getattr(runtime.cudaError_t, error), None))
    monkeypatch.setattr(cuda, "_cudart", lambda: fake)
    with pytest.raises(SsrDeployError, match=rf"^no usable NVIDIA GPU here \(.*; CUDA: {error}\)"
                                             ": run engines on a machine with an NVIDIA GPU"):
        cuda.gpu_info(0)


def _takes_pointer() -> bool:
    try:
        return int(runtime.cudaGraph_t(0x1234)) == 0x1234
    except TypeError:
        return False
