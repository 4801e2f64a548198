"""PyTorch: a checkpoint run in eager mode on CPU or CUDA, optionally FP16, channels_last,
CUDA graphs or torch.compile. The network gets the same fused uint8-in / labels-out wrapper
an exported graph has, so every backend takes and returns the same arrays."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssr_deploy.backends.base import Backend, LayerTimes
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.model.checkpoint import load_model
from ssr_deploy.model.deploy import DeployModel
from ssr_deploy.model.net import SSRNet
from ssr_deploy.spec import Dynamic, ModelSpec, build_metadata, runtime_io


@dataclass(frozen=True)
class TorchOptions:
    """``size``: the input size frames are resized to (a checkpoint does not fix one).
    ``fp16`` (autocast), ``cuda_graphs`` need a CUDA device; ``channels_last`` is faster on
    most CPUs and GPUs; ``compile`` runs torch.compile first."""

    size: tuple[int, int] = (512, 1024)
    fp16: bool = False
    channels_last: bool = True
    cuda_graphs: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.size, tuple | list) and len(self.size) == 2
                and all(isinstance(v, int) and v > 0 for v in self.size)):
            raise UsageError(f"size={self.size!r}: give (height, width) in pixels")


class TorchBackend(Backend):
    name = "torch"
    Options = TorchOptions

    def __init__(self, model: str | Path | SSRNet, device: str = "cpu", index: int = 0,
                 options: TorchOptions | None = None) -> None:
        o = options or TorchOptions()
        size, fp16, channels_last = tuple(o.size), o.fp16, o.channels_last
        cuda_graphs, compile = o.cuda_graphs, o.compile
        net = model if isinstance(model, SSRNet) else load_model(model)
        self.device = torch.device(device if device == "cpu" else f"cuda:{index}")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise SsrDeployError("--device cuda: no CUDA GPU is visible to PyTorch here; use "
                                 "--device cpu")
        if (fp16 or cuda_graphs) and self.device.type != "cuda":
            raise UsageError("FP16 and CUDA graphs need --device cuda")
        genotype = self.genotype = net.genotype
        genotype.check_input_size(*size)
        multiple, minimum = genotype.size_rule()
        io = runtime_io(net.num_classes)
        self.spec = ModelSpec.from_dict(build_metadata(
            genotype, io, 1, size, net.num_classes,
            Dynamic(batch=(1, 1, 64), size=((minimum, minimum), size, (8192, 8192))), opset=None,
            producer={"torch": torch.__version__}), "the checkpoint's genotype")
        self.model = DeployModel(net.eval(), io).eval().to(self.device)
        self.dtype = torch.float16 if fp16 else torch.float32  # via autocast: BN stays FP32
        if channels_last:  # NHWC input permuted to NCHW is channels_last already
            self.model = self.model.to(memory_format=torch.channels_last)
        if compile:
            self.model = torch.compile(self.model)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple] = {}
        self.on_gpu = self.device.type == "cuda"
        self.device_name = (torch.cuda.get_device_name(self.device)
                            if self.on_gpu else "cpu")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.float16,
                            enabled=self.dtype == torch.float16):
            return self.model(x)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type != "cuda":
                return self._forward(x).numpy()
            events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
            events[0].record()
            x = x.pin_memory().to(self.device, non_blocking=True)
            events[1].record()
            labels = self._replay(x) if self.cuda_graphs else self._forward(x)
            events[2].record()
            out = labels.cpu()
            events[3].record()
            events[3].synchronize()
            self.last_timing = {
                "compute_ms": events[1].elapsed_time(events[2]),
                "copy_ms": events[0].elapsed_time(events[1]) + events[2].elapsed_time(events[3])}
            return out.numpy()

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        """One CUDA graph per input shape: capture once, then copy in and replay."""
        key = tuple(x.shape)
        if key not in self._graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm up kernels and the allocator before capture
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out

    def layer_times(self, batch: np.ndarray, iters: int, trace: Path | None = None
                    ) -> LayerTimes:
        """torch.profiler: the kernels (ops on the CPU) in each genotype module's range, the
        host time beside them, the top kernels and ops (``kernel_profile``)."""
        p = self.kernel_profile(batch, iters, set(self.genotype.modules()), trace)
        return LayerTimes({f"{name}/": ms for name, ms in p["device_ms"].items()},
                          host_ms=p["host_ms"],
                          details={k: p[k] for k in ("device", "time", "top_ops", "top_kernels",
                                                     "device_total_ms")})

    def kernel_profile(self, batch: np.ndarray, iters: int, modules: set[str],
                       trace: Path | None = None, top: int = 15) -> dict[str, Any]:
        """torch.profiler over ``iters`` runs of the backend's forward (after a warm-up run):
        each genotype module's forward inside a ``record_function`` range, so the kernels it
        launches are its device time (on the CPU: its op time), with the host time beside it;
        the top ops by device time with their input shapes and, on a GPU, the top kernels.
        ``trace``: torch.profiler's Chrome trace. CUDA graphs are off while profiling (a replay
        runs no module, so nothing could be attributed); the kernels are the same."""
        from torch.profiler import ProfilerActivity, record_function

        from ssr_deploy.io import atomic_write

        net, cuda = self.model.net, self.device.type == "cuda"
        ranges: dict[str, Any] = {}

        def enter(name: str):
            def hook(module, args) -> None:  # returning anything would replace the input
                ranges[name] = record_function(f"module:{name}")
                ranges[name].__enter__()
            return hook

        def leave(name: str):
            def hook(module, args, out) -> None:
                ranges.pop(name).__exit__(None, None, None)
            return hook

        handles = []
        for name, module in net.named_modules():
            if name in modules:
                handles += [module.register_forward_pre_hook(enter(name)),
                            module.register_forward_hook(leave(name))]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        graphs, self.cuda_graphs = self.cuda_graphs, False
        try:
            self.infer(batch)  # warm-up: cuDNN's choices and allocations out of the profile
            with _without_lines(b"USDT:"), torch.profiler.profile(
                    activities=activities, record_shapes=True) as prof:
                for _ in range(iters):
                    self.infer(batch)
                if cuda:
                    torch.cuda.synchronize()
        finally:
            self.cuda_graphs = graphs
            for handle in handles:
                handle.remove()
        if trace is not None:
            atomic_write(trace, lambda t: prof.export_chrome_trace(str(t)))

        def device_us(event, own: bool = False) -> float:
            if not cuda:
                return event.self_cpu_time_total if own else event.cpu_time_total
            names = ("self_device_time_total", "self_cuda_time_total") if own else \
                ("device_time_total", "cuda_time_total")
            return next((getattr(event, n) for n in names if hasattr(event, n)), 0.0)

        device, host = {}, {}
        for event in prof.key_averages():
            if event.key.startswith("module:"):
                device[event.key[7:]] = device_us(event) / 1e3
                host[event.key[7:]] = event.cpu_time_total / 1e3
        ops = [e for e in prof.key_averages(group_by_input_shape=True)
               if not e.key.startswith(("module:", "ProfilerStep")) and e.key.startswith("aten::")]
        ops.sort(key=lambda e: -device_us(e, own=True))
        top_ops = [{"name": e.key, "input_shapes": str(e.input_shapes), "calls": e.count / iters,
                    "device_ms": device_us(e, own=True) / 1e3 / iters,
                    "host_ms": e.self_cpu_time_total / 1e3 / iters} for e in ops[:top]]
        kernels = []
        if cuda:
            kernels = [e for e in prof.key_averages()
                       if str(getattr(e, "device_type", "")).endswith("CUDA")]
            kernels.sort(key=lambda e: -device_us(e, own=True))
        total = sum(device_us(e, own=True) for e in kernels) / 1e3 / iters if cuda else \
            sum(device_us(e, own=True) for e in ops) / 1e3 / iters
        top_kernels = [{"name": e.key[:160], "calls": e.count / iters,
                        "device_ms": device_us(e, own=True) / 1e3 / iters,
                        "share": device_us(e, own=True) / 1e3 / iters / total if total else 0.0}
                       for e in kernels[:top]]
        return {"device_ms": device, "host_ms": host, "top_ops": top_ops,
                "top_kernels": top_kernels, "device_total_ms": total, "device": str(self.device),
                "time": "CUDA kernel time" if cuda else "CPU op time"}

    def close(self) -> None:
        self._graphs.clear()
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


@contextlib.contextmanager
def _without_lines(prefix: bytes):
    """stderr as it is, but for the lines starting with ``prefix``: torch's profiler (Kineto)
    writes a ``USDT:`` line at each start and stop from C++, which no Python setting stops."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().splitlines(keepends=True):
                if not line.startswith(prefix):
                    os.write(2, line)
