"""Latency-table parts built into strongly typed engines as ``export engine`` builds one (the
same ``build_network``; an fp16 table gets fp16 graphs, an int8 one Q/DQ graphs) and timed
with CUDA events on one stream; the frame's and labels' copies as the TensorRT backend makes
them."""

from __future__ import annotations

import statistics

import numpy as np
import onnx

from ssr_deploy.backends.base import Part, PartTimer, median_ms
from ssr_deploy.backends.tensorrt.build import BuildSettings, build_network
from ssr_deploy.backends.tensorrt.engine import DTYPES, engine_io
from ssr_deploy.backends.tensorrt.library import load_tensorrt, rtx_targets, shared_logger
from ssr_deploy.errors import SsrDeployError


class TensorRTTimer(PartTimer):
    precisions = {"cuda": ("fp32", "fp16", "int8")}
    int8_target = "tensorrt"

    def __init__(self, device: str, precision: str, repeats: int,
                 threads: int | None = None) -> None:
        from ssr_deploy.backends.tensorrt import cuda

        super().__init__(device, precision, repeats, threads)
        self.cuda, self.library = cuda, load_tensorrt()
        self.index = int(device.partition(":")[2] or 0)
        self.gpu = cuda.gpu_info(self.index)
        cc = self.gpu["compute_capability"]
        self.settings = BuildSettings()
        if self.library.is_rtx:  # parts built for this GPU, which TensorRT-RTX must run on
            if cc not in rtx_targets(self.library):
                raise SsrDeployError(f"{self.library.title} does not run on {self.gpu['name']} "
                                     f"(sm_{cc.replace('.', '')}): time parts with full "
                                     "TensorRT there (pip install 'ssr-deploy[cu12]'), or "
                                     "--backend torch")
            self.settings = BuildSettings(compute_capabilities=(cc,))
        cuda.set_device(self.index)

    def time(self, part: Part, inputs: list[np.ndarray]) -> float:
        trt = self.library.module
        cuda = self.cuda
        built = build_network(self.library, onnx.load_from_string(part), "a latency part",
                              self.settings)
        engine = trt.Runtime(shared_logger(self.library)).deserialize_cuda_engine(built.engine)
        context = engine.create_execution_context() if engine is not None else None
        if context is None:
            raise SsrDeployError(f"{self.library.title} could not load a part's engine here "
                                 "(out of GPU memory, or a GPU it does not support)")
        stream, start, end = cuda.Stream(), cuda.Event(), cuda.Event()
        buffers = []
        try:
            given = iter(inputs)
            for tensor in engine_io(trt, engine):
                buffer = cuda.DeviceBuffer(int(np.prod(tensor.shape))
                                           * np.dtype(DTYPES[tensor.dtype]).itemsize)
                buffers.append(buffer)
                if tensor.is_input:
                    cuda.upload(buffer.ptr, next(given).astype(DTYPES[tensor.dtype]))
                if not context.set_tensor_address(tensor.name, buffer.ptr):
                    raise SsrDeployError("TensorRT refused a buffer of a latency part")
            times = []
            for k in range(3 + self.repeats):
                start.record(stream)
                if not context.execute_async_v3(stream.ptr):
                    raise SsrDeployError("TensorRT could not run a latency part")
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

    def time_copies(self, frame: np.ndarray, labels_shape: tuple[int, ...]) -> float:
        """The TensorRT backend's copies: page-locked frame in, labels out, one stream."""
        cuda = self.cuda
        n_in, n_out = frame.nbytes, int(np.prod(labels_shape))
        host_in, host_out = cuda.HostBuffer(frame.shape, np.uint8), cuda.HostBuffer(
            labels_shape, np.uint8)
        dev_in, dev_out = cuda.DeviceBuffer(n_in), cuda.DeviceBuffer(n_out)
        stream = cuda.Stream()
        try:
            def run():
                stream.copy_to_device(dev_in.ptr, host_in.ptr, n_in)
                stream.copy_to_host(host_out.ptr, dev_out.ptr, n_out)
                stream.synchronize()

            return median_ms(run, self.repeats, warmup=3)
        finally:
            for buffer in (host_in, host_out, dev_in, dev_out):
                buffer.free()
            stream.destroy()

    def versions(self) -> dict[str, str]:
        return {self.library.builder: self.library.version}

    def device_label(self) -> str | None:
        return self.gpu["name"]
