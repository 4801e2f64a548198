"""One timer per backend: each part run as that backend of the runtime runs a network."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.lut.options import IO_KEY, LutOptions
from ssr_deploy.lut.parts import Probe, example_input


# ---- timers ----------------------------------------------------------------------------
def _median_ms(run: Callable[[], Any], repeats: int, warmup: int = 2,
               sync: Callable[[], Any] = lambda: None) -> float:
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


class OnnxRuntimeTimer:
    """Each part in an onnxruntime session made as the runtime makes it."""

    exports = True

    def __init__(self, o: LutOptions) -> None:
        from ssr_deploy.runtime.backends.onnxruntime import OnnxRuntimeOptions

        self.o, self.options = o, OnnxRuntimeOptions(threads=o.threads)
        self.rng = np.random.default_rng(o.seed)

    def time(self, probe: Probe, model: bytes) -> float:
        from ssr_deploy.runtime.backends.onnxruntime import new_session

        device, _, index = self.o.device.partition(":")
        session = new_session(model, device, int(index or 0), self.options)
        feeds = {i.name: example_input(shape, dtype, self.rng)
                 for i, (shape, dtype) in zip(session.get_inputs(), probe.inputs, strict=True)}
        return _median_ms(lambda: session.run(None, feeds), self.o.repeats)

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}


class TorchTimer:
    """Each part as the torch backend runs it: eager, channels_last, fp16 autocast on a GPU
    with ``precision="fp16"``; CUDA work is waited for before the clock stops."""

    exports = False

    def __init__(self, o: LutOptions) -> None:
        self.o, self.device = o, torch.device(o.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SsrDeployError("--device cuda: no CUDA GPU is visible to PyTorch here")
        self.rng = np.random.default_rng(o.seed)

    def time(self, probe: Probe, model: bytes | None = None) -> float:
        if probe.key == IO_KEY:
            return self._copies(probe)
        module = probe.module().eval().to(self.device, memory_format=torch.channels_last)
        xs = [torch.from_numpy(example_input(shape, dtype, self.rng)).to(self.device)
              for shape, dtype in probe.inputs]
        xs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4
              and x.dtype == torch.float32 else x for x in xs]
        cuda = self.device.type == "cuda"
        fp16 = self.o.precision == "fp16"

        def run():
            with torch.inference_mode(), torch.autocast(self.device.type, torch.float16,
                                                        enabled=fp16):
                module(*xs)

        return _median_ms(run, self.o.repeats, warmup=3,
                          sync=torch.cuda.synchronize if cuda else lambda: None)

    def _copies(self, probe: Probe) -> float:
        """The torch backend's copies: the frame pinned and uploaded, the labels back."""
        (b, h, w, _), _ = probe.inputs[0]
        frame = torch.from_numpy(example_input(*probe.inputs[0], self.rng))
        labels = torch.zeros((b, h, w), dtype=torch.uint8, device=self.device)

        def run():
            frame.pin_memory().to(self.device, non_blocking=True)
            labels.cpu()

        return _median_ms(run, self.o.repeats, warmup=3, sync=torch.cuda.synchronize)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}


class TensorRTTimer:
    """Each part built into a strongly typed engine as ``export engine`` builds one (the same
    ``build_network``; fp16: the fp16 ONNX, as ``export --precision fp16`` makes it) and timed
    with CUDA events on one stream."""

    exports = True

    def __init__(self, o: LutOptions) -> None:
        from ssr_deploy.runtime import cuda
        from ssr_deploy.runtime.tensorrt_library import load_tensorrt

        self.o, self.cuda, self.library = o, cuda, load_tensorrt()
        self.index = int(o.device.partition(":")[2] or 0)
        cuda.set_device(self.index)
        trt = self.library.module
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.rng = np.random.default_rng(o.seed)

    def time(self, probe: Probe, model: bytes) -> float:
        import onnx

        from ssr_deploy.export.precision import to_fp16
        from ssr_deploy.export.tensorrt import BuildSettings, build_network
        from ssr_deploy.runtime.backends.tensorrt import DTYPES, engine_io

        trt, cuda = self.library.module, self.cuda
        if probe.key == IO_KEY:
            return self._copies(probe)
        graph = onnx.load_from_string(model)
        if self.o.precision == "fp16":
            graph = to_fp16(graph)
        built = build_network(self.library, graph, f"part {probe.key}", BuildSettings())
        trt_runtime = trt.Runtime(self.logger)
        engine = trt_runtime.deserialize_cuda_engine(built.engine)
        context = engine.create_execution_context()
        stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
        buffers = []
        try:
            inputs = iter(probe.inputs)
            for tensor in engine_io(trt, engine):
                buffer = cuda.DeviceBuffer(int(np.prod(tensor.shape))
                                           * np.dtype(DTYPES[tensor.dtype]).itemsize)
                buffers.append(buffer)
                if tensor.is_input:
                    shape, dtype = next(inputs)
                    cuda.upload(buffer.ptr, example_input(shape, dtype, self.rng)
                                .astype(DTYPES[tensor.dtype]))
                if not context.set_tensor_address(tensor.name, buffer.ptr):
                    raise SsrDeployError(f"TensorRT refused a buffer of part {probe.key}")
            times = []
            for k in range(3 + self.o.repeats):
                start.record(stream)
                if not context.execute_async_v3(stream.ptr):
                    raise SsrDeployError(f"TensorRT could not run part {probe.key}")
                end.record(stream)
                end.synchronize()
                if k >= 3:
                    times.append(end.ms_since(start))
            return statistics.median(times)
        finally:
            for buffer in buffers:
                buffer.free()
            for event in (start, end):
                event.destroy()
            stream.destroy()

    def _copies(self, probe: Probe) -> float:
        """The TensorRT backend's copies: page-locked frame in, labels out, one stream."""
        cuda = self.cuda
        (b, h, w, c), _ = probe.inputs[0]
        host_in, host_out = cuda.HostBuffer((b, h, w, c), np.uint8), cuda.HostBuffer(
            (b, h, w), np.uint8)
        dev_in, dev_out = cuda.DeviceBuffer(b * h * w * c), cuda.DeviceBuffer(b * h * w)
        stream = cuda.Stream()
        try:
            def run():
                stream.copy_to_device(dev_in.ptr, host_in.ptr, b * h * w * c)
                stream.copy_to_host(host_out.ptr, dev_out.ptr, b * h * w)
                stream.synchronize()

            return _median_ms(run, self.o.repeats, warmup=3)
        finally:
            for buffer in (host_in, host_out, dev_in, dev_out):
                buffer.free()
            stream.destroy()

    def versions(self) -> dict[str, str]:
        return {self.library.builder: self.library.version}


TIMERS = {"onnxruntime": OnnxRuntimeTimer, "torch": TorchTimer, "tensorrt": TensorRTTimer}
