"""``ssr-deploy lut build``: measure a latency table on this machine, through a backend of the
runtime, in the shapes each part has in a network of the space at one input size.

How it stays minutes, not hours, on a 2-core CPU (the paper's space at 512x1024 has 2 x 10
ops x 9^3 width choices): a block's in and out widths are measured at every option (their
relation decides the residual's form, fused or sliced, and channel counts off the kernels'
blocking are slow: time is not smooth in them), its mid width on a grid of 3 and
interpolated linearly (``width_grid``); dilations other than the first are measured at the widest
widths and scale the first's width surface (``every_dilation`` measures them on the grid
too). ``check`` random off-grid blocks are then measured directly and the table records how
far the interpolation was from them.

Every measured part is published to the output at once (temp file + rename): an interrupted
build loses at most the part it was measuring, and the same command continues it.
"""

from __future__ import annotations

import json
import random
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.io import atomic_write_text
from ssr_deploy.search.latency import (
    FORMAT,
    KIND,
    LatencyTable,
    block_key,
    diagonal,
    down_key,
    grid_widths,
    head_key,
    one_hot,
)
from ssr_deploy.search.space import SearchSpace

BACKENDS = ("onnxruntime", "tensorrt", "torch")
IO_KEY = "io"  # on a GPU: a frame's copy in and its labels' copy out
BLOCK_KEY = re.compile(r"stage(\d+)\.d(\d+)\.r([\d.]+)\.(\d+)-(\d+)-(\d+)")
#: settings a build is continued under only when they are the same
SAME = ("backend", "device", "precision", "size", "batch", "num_classes", "width_grid",
        "every_dilation", "repeats", "passes", "check_points", "io", "space", "fingerprint")


@dataclass(frozen=True)
class LutOptions:
    backend: str = "onnxruntime"
    device: str = "cpu"
    size: tuple[int, int] = (512, 1024)
    batch: int = 1
    num_classes: int = 19
    precision: str = "fp32"  # tensorrt: fp32 | fp16; torch on cuda: fp16 autocast
    width_grid: tuple[int, int, int] = (9, 3, 9)  # widths measured: in, mid, out
    every_dilation: bool = False
    repeats: int = 10
    passes: int = 2  # each part timed once per pass, passes in alternating order
    check_points: int = 8
    threads: int | None = None  # onnxruntime intra-op threads (default: its own)
    seed: int = 0

    def validate(self, space: SearchSpace) -> None:
        if self.backend not in BACKENDS:
            raise UsageError(f"--backend {self.backend}: use one of {', '.join(BACKENDS)}")
        if self.precision not in ("fp32", "fp16"):
            raise UsageError(f"--precision {self.precision}: use fp32 or fp16")
        if self.precision == "fp16" and not (self.backend == "tensorrt" or (
                self.backend == "torch" and self.device.startswith("cuda"))):
            raise UsageError("--precision fp16 is for --backend tensorrt, or torch with "
                             "--device cuda; onnxruntime's CPU kernels run fp32")
        if self.backend == "tensorrt" and not self.device.startswith("cuda"):
            raise UsageError("--backend tensorrt runs on an NVIDIA GPU: add --device cuda")
        if len(self.width_grid) != 3 or min(self.width_grid) < 2:
            raise UsageError(f"--width-grid {','.join(map(str, self.width_grid))}: give three "
                             "numbers (in, mid, out), each at least 2 (the widest and narrowest "
                             "widths)")
        if min(self.repeats, self.batch, self.passes) < 1 or self.check_points < 0:
            raise UsageError("--repeats, --passes and --batch are at least 1, --check at "
                             "least 0")
        multiple = 2 ** (len(space.stages) + 2)  # the deepest stage, then a half-res block
        if self.size[0] % multiple or self.size[1] % multiple:
            raise UsageError(f"--size {self.size[0]}x{self.size[1]}: height and width must be "
                             f"multiples of {multiple} for this space")


@dataclass
class Probe:
    """One part to time: its key, a module, and the (shape, dtype) of each input."""

    key: str
    module: Callable[[], nn.Module]
    inputs: list[tuple[tuple[int, ...], str]]


# ---- what to measure -------------------------------------------------------------------

def _io(num_classes: int):
    from ssr_deploy.runtime.backends.torch import io_format

    return io_format(num_classes)


class _Stem(nn.Module):
    """The fused input conversion, then the stem downsampler."""

    def __init__(self, deploy: nn.Module, stem: nn.Module) -> None:
        super().__init__()
        self.deploy, self.stem = deploy, stem

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(self.deploy.preprocess(x))


class _Head(nn.Module):
    """The head at the input size, then the fused argmax."""

    def __init__(self, deploy: nn.Module, head: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.deploy, self.head, self.size = deploy, head, size

    def forward(self, deep: Tensor, shallow: Tensor, stem: Tensor) -> Tensor:
        return self.deploy.postprocess(self.head(deep, shallow, stem, self.size))


def probes(space: SearchSpace, o: LutOptions) -> list[Probe]:
    """Every part the table needs, then the off-grid checks (keys ``check/<block>``)."""
    from ssr_deploy.export.graph import FoldedDownsampler
    from ssr_deploy.model.blocks import Downsampler, FactorisedResidual
    from ssr_deploy.model.deploy import DeployModel
    from ssr_deploy.model.head import SegHead
    from ssr_deploy.model.net import build_model
    from ssr_deploy.search.supernet import SuperNet, decode

    eps, (h, w), b = space.bn_eps, o.size, o.batch
    genotype = decode(SuperNet(space, o.num_classes))
    deploy = DeployModel(build_model(genotype, o.num_classes), _io(o.num_classes)).eval()
    deploy.net = nn.Identity()  # its pre- and post-processing only

    def fmap(stride: int, channels: int) -> tuple[tuple[int, ...], str]:
        return (b, channels, h // stride, w // stride), "float32"

    def down(c_in: int, c_out: int) -> Callable[[], nn.Module]:
        return lambda: FoldedDownsampler(Downsampler(c_in, c_out, eps).eval())

    out = [Probe("stem", lambda: _Stem(deploy, FoldedDownsampler(Downsampler(
        3, space.stem_channels, eps).eval())), [((b, h, w, 3), "uint8")])]
    if o.device.startswith("cuda"):  # frames to the GPU and labels back, as the runtime does
        out.append(Probe(IO_KEY, nn.Identity, [((b, h, w, 3), "uint8")]))
    prev, prev_stride = [space.stem_channels], 2
    blocks: list[Probe] = []
    base = space.dilations[0]
    grid_dilations = space.dilations if o.every_dilation else (base,)
    for s, st in enumerate(space.stages):
        out += [Probe(down_key(s, c), down(c, st.channels), [fmap(prev_stride, c)])
                for c in prev]
        gi, gm, go = (grid_widths(space.widths(s), n) for n in o.width_grid)

        def block(i, m, ot, d, r, st=st):
            return lambda: FactorisedResidual(i, m, ot, d, r, st.dropout, eps).eval()

        for r in space.resolutions:
            for d in space.dilations:
                corners = [(i, m, ot) for i in gi for m in gm for ot in go] \
                    if d in grid_dilations else diagonal(gi, gm, go)
                blocks += [Probe(block_key(s, d, r, *c), block(*c, d, r), [fmap(st.stride,
                                                                                 c[0])])
                           for c in corners]
        prev, prev_stride = go, st.stride
    out += blocks
    first, last = space.stages[0], space.stages[-1]
    for f in grid_widths(space.widths(0), o.width_grid[1]):
        for la in grid_widths(space.widths(len(space.stages) - 1), o.width_grid[1]):
            def head(f=f, la=la):
                return _Head(deploy, SegHead(la, f, space.stem_channels, first.stride // 2,
                                             space.head, o.num_classes, eps).eval(), (h, w))

            out.append(Probe(head_key(f, la), head, [fmap(last.stride, la),
                                                     fmap(first.stride, f),
                                                     fmap(2, space.stem_channels)]))
    rng, measured = random.Random(o.seed), {p.key for p in out}
    tries = 0
    while sum(p.key.startswith("check/") for p in out) < o.check_points and tries < 1000:
        tries += 1
        s = rng.randrange(len(space.stages))
        options = space.widths(s)
        d, r = rng.choice([op for op in space.ops() if op != ("skip",)])
        c = tuple(rng.choice(options) for _ in range(3))
        key = block_key(s, d, r, *c)
        if key in measured:
            continue
        measured.add(key)
        out.append(Probe(f"check/{key}", block(*c, d, r, st=space.stages[s]),
                         [fmap(space.stages[s].stride, c[0])]))
    return out


# ---- to ONNX ---------------------------------------------------------------------------
def _example(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.standard_normal(shape, dtype=np.float32)


def export_part(probe: Probe, opset: int = 18) -> bytes:
    """The part's ONNX: BN folded, simplified with onnxslim, as ``export onnx`` writes a
    network. Exported with torch's TorchScript exporter where this torch has it: the same
    ONNX ops as the dynamo export of the network (checked), 5-15x faster to make; the
    dynamo exporter otherwise."""
    import io

    import onnx
    import onnxslim

    from ssr_deploy.export.onnx import _quiet

    module = probe.module().eval()
    xs = tuple(torch.zeros(shape, dtype=getattr(torch, dtype)) for shape, dtype in probe.inputs)
    with _quiet(), torch.no_grad():
        try:
            buffer = io.BytesIO()
            torch.onnx.export(module, xs, buffer, dynamo=False, opset_version=opset)
            model = onnx.load_from_string(buffer.getvalue())
        except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter
            model = torch.onnx.export(module, xs, dynamo=True, opset_version=opset,
                                      verbose=False).model_proto
    return onnxslim.slim(model).SerializeToString()


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
        feeds = {i.name: _example(shape, dtype, self.rng)
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
        xs = [torch.from_numpy(_example(shape, dtype, self.rng)).to(self.device)
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
        frame = torch.from_numpy(_example(*probe.inputs[0], self.rng))
        labels = torch.zeros((b, h, w), dtype=torch.uint8, device=self.device)

        def run():
            frame.pin_memory().to(self.device, non_blocking=True)
            labels.cpu()

        return _median_ms(run, self.o.repeats, warmup=3, sync=torch.cuda.synchronize)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}


class TensorRTTimer:
    """Each part built into a strongly typed TensorRT engine (fp16: the fp16 ONNX, as
    ``export --precision fp16`` makes it) and timed with CUDA events on one stream."""

    exports = True

    def __init__(self, o: LutOptions) -> None:
        from ssr_deploy.runtime import cuda
        from ssr_deploy.runtime.backends.tensorrt import import_tensorrt

        self.o, self.cuda, self.trt = o, cuda, import_tensorrt()
        self.index = int(o.device.partition(":")[2] or 0)
        cuda.check(cuda._cudart().cudaSetDevice(self.index))
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.rng = np.random.default_rng(o.seed)

    def time(self, probe: Probe, model: bytes) -> float:
        import onnx

        from ssr_deploy.export.precision import to_fp16
        from ssr_deploy.runtime.backends.tensorrt import DTYPES, engine_io

        trt, cuda = self.trt, self.cuda
        if probe.key == IO_KEY:
            return self._copies(probe)
        if self.o.precision == "fp16":
            model = to_fp16(onnx.load_from_string(model)).SerializeToString()
        builder = trt.Builder(self.logger)
        network = builder.create_network(
            1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(model):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise SsrDeployError(f"TensorRT cannot parse part {probe.key}: {errors}")
        config = builder.create_builder_config()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise SsrDeployError(f"TensorRT could not build part {probe.key}; see its log")
        trt_runtime = trt.Runtime(self.logger)
        engine = trt_runtime.deserialize_cuda_engine(serialized)
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
                    cuda.upload(buffer.ptr, _example(shape, dtype, self.rng)
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
        return {"tensorrt": self.trt.__version__}


TIMERS = {"onnxruntime": OnnxRuntimeTimer, "torch": TorchTimer, "tensorrt": TensorRTTimer}


# ---- the build -------------------------------------------------------------------------
def _header(space: SearchSpace, o: LutOptions, timer) -> dict[str, Any]:
    from ssr_deploy.runtime.bench import machine_info

    machine = machine_info()
    gpu = machine.get("gpu") or {}
    if o.backend == "torch" and o.device.startswith("cuda"):
        gpu = {"name": torch.cuda.get_device_name(torch.device(o.device))}
    fingerprint = {"cpu": machine.get("cpu"), "cores": machine.get("cores"),
                   "gpu": gpu.get("name") if o.device.startswith("cuda") else None,
                   **timer.versions()}
    return {"kind": KIND, "format": FORMAT, "backend": o.backend, "device": o.device,
            "precision": o.precision, "size": list(o.size), "batch": o.batch,
            "num_classes": o.num_classes, "width_grid": list(o.width_grid),
            "every_dilation": o.every_dilation, "repeats": o.repeats, "passes": o.passes,
            "check_points": o.check_points, "io": _io(o.num_classes).__dict__.copy(),
            "space": space.to_dict(), "fingerprint": fingerprint, "machine": machine,
            "method": "each part alone in its network shapes: the least over passes of the "
                      "median of --repeats runs after 2 warm-up runs; mid widths on a grid, "
                      "interpolated linearly"}


def _resume(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """The table already at ``path`` if it continues this build; refuses one of another."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SsrDeployError(f"{path} exists and is not a latency table ({e}); give another "
                             "-o or remove it") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise SsrDeployError(f"{path} exists and is not a latency table; give another -o")
    for key in SAME:
        if data.get(key) != json.loads(json.dumps(header[key])):
            raise SsrDeployError(f"{path} was measured with another {key} ({data.get(key)!r}, "
                                 f"now {header[key]!r}); give another -o to keep both")
    return data


def build_lut(space: SearchSpace, path: str | Path, o: LutOptions,
              progress: bool | None = None) -> dict[str, Any]:
    """Measure (or finish measuring) the table at ``path``; returns its JSON as a dict (with
    ``"already": True`` when the file was a complete table of these settings already)."""
    o.validate(space)
    path = Path(path)
    timer = TIMERS[o.backend](o)
    header = _header(space, o, timer)
    old = _resume(path, header)
    if old and old.get("complete"):
        return {**old, "already": True}
    # passes[k][key]: pass k's median of a part (check parts keyed "check/<block>")
    passes: list[dict[str, float]] = [dict(p) for p in old["pass_times"]] if old else []
    passes += [{} for _ in range(o.passes - len(passes))]
    elapsed = float(old.get("seconds", 0.0)) if old else 0.0
    every = probes(space, o)
    start = time.perf_counter()

    def publish(complete: bool, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        data = {**header, "complete": complete,
                "seconds": round(elapsed + time.perf_counter() - start, 1), **(extra or {}),
                "pass_times": passes}
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        return data

    models: dict[str, bytes] = {}  # each part exported once, for every pass
    total = sum(p.key not in done for done in passes for p in every)
    bar = tqdm(total=total, desc="lut", unit="part", disable=None if progress is None
               else not progress)
    with bar:  # an interrupt leaves every part measured before it in the file
        for k, done in enumerate(passes):
            for probe in every if k % 2 == 0 else every[::-1]:  # later passes: other order
                if probe.key in done:
                    continue
                if timer.exports and probe.key not in models:
                    models[probe.key] = export_part(probe)
                done[probe.key] = timer.time(probe, models.get(probe.key))
                publish(False)
                bar.update()
    # a part's time: the least of its passes' medians (a burst of other work on the machine
    # during one pass does not stay in the table)
    best = {p.key: min(done[p.key] for done in passes) for p in every}
    entries = {k: v for k, v in best.items() if not k.startswith("check/")}
    checks = {k[len("check/"):]: v for k, v in best.items() if k.startswith("check/")}
    check = interpolation_error(LatencyTable(header, entries), checks)
    return publish(True, {"check": check, "entries": entries, "check_entries": checks})


def interpolation_error(table: LatencyTable, checks: dict[str, float]) -> dict[str, Any]:
    """How far the table's interpolated blocks are from direct measurements."""
    errors = []
    for key, measured in checks.items():
        s, d, r, i, m, o = (float(v) for v in BLOCK_KEY.fullmatch(key).groups())
        s, d, i, m, o = int(s), int(d), int(i), int(m), int(o)
        options = table.space.widths(s)
        predicted = float(table.block_ms(s, d, r, float(i), one_hot(options, m),
                                         one_hot(options, o)))
        errors.append(abs(predicted - measured) / measured)
    if not errors:
        return {"points": 0}
    return {"points": len(errors), "mean_rel_error": float(np.mean(errors)),
            "max_rel_error": float(np.max(errors))}
