"""Per-layer time: onnxruntime's profiler, TensorRT's IProfiler, torch module hooks (+ the
torch profiler), summed per genotype layer and written as a Chrome trace.

Exported node names start with their module (``stages.1.layers.4/node_Conv_12``, see
``names.node_name``), so every backend's rows map back to the genotype.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.genotype import Genotype
from ssr_deploy.io import atomic_write, atomic_write_text
from ssr_deploy.names import module_in, module_of_node
from ssr_deploy.preprocess import frames_to_input
from ssr_deploy.runtime.backends import backend_for, open_backend
from ssr_deploy.spec import ModelSpec


def summarize(times_ms: dict[str, float], iters: int, genotype: Genotype | None
              ) -> list[dict[str, Any]]:
    """{layer name: total ms over ``iters``} -> rows per genotype module, slowest first."""
    per_module: dict[str, float] = defaultdict(float)
    for name, ms in times_ms.items():
        per_module[module_in(name)] += ms / iters
    total = sum(per_module.values()) or 1.0
    ops = _module_ops(genotype) if genotype else {}
    rows = [{"module": m, "op": ops.get(m, ""), "ms": ms, "share": ms / total}
            for m, ms in per_module.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def _module_ops(genotype: Genotype) -> dict[str, str]:
    ops = {"stem": "downsampler", "head": "upsample", "io": "pre/post-processing",
           "layout-reorder": "onnxruntime NCHWc"}
    for i, stage in enumerate(genotype.stages):
        ops[f"stages.{i}.down"] = "downsampler"
        for j, layer in enumerate(stage.layers):
            ops[f"stages.{i}.layers.{j}"] = layer.describe()
    ops.update({"head.psp": "psp", "head.low": "low-level conv3x3", "head.fuse": "fusion",
                "head.classifier": "classifier"})
    return ops


def profile_onnxruntime(backend, batch: np.ndarray, iters: int, trace: Path | None,
                        model_path: Path) -> dict[str, float]:
    """onnxruntime's own per-node profile of the session the backend runs."""
    for _ in range(iters):
        backend.infer(batch)
    events = Path(backend.end_profiling())
    try:
        try:
            recorded = json.loads(events.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SsrDeployError(f"onnxruntime's profile {events} is incomplete: its folder's "
                                 "disk is full or the file exceeds the size limit; free space "
                                 "or lower --iters") from None
        if trace:  # onnxruntime writes the Chrome trace format already
            atomic_write(trace, lambda t: shutil.copyfile(events, t))
        times: dict[str, float] = defaultdict(float)
        owner = _tensor_modules(model_path)
        for event in recorded:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                name = event["name"][: -len("_kernel_time")]
                times[_ort_node(name, owner)] += event["dur"] / 1e3
    finally:
        events.unlink(missing_ok=True)
    return dict(times)


def _tensor_modules(path: Path) -> dict[str, str]:
    """Output tensor name -> module, from the module-prefixed node names of our export."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {out: module_of_node(node.name) for node in graph.node
            if module_of_node(node.name, None) for out in node.output}


def _ort_node(name: str, owner: dict[str, str]) -> str:
    """onnxruntime renames the nodes it fuses after their output tensor (``relu_29_nchwc``)
    and adds layout reorders; give each a ``module/name`` row."""
    if "/" in name:
        return name
    base = name.removesuffix("_nchwc")
    while base:  # fused names add suffixes to a tensor name: add_2_mul_nchwc -> add_2
        if base in owner:
            return f"{owner[base]}/{name}"
        base = base.rpartition("_")[0]
    return f"{'layout-reorder' if name.startswith('Reorder') else 'other'}/{name}"


def profile_tensorrt(backend, batch: np.ndarray, iters: int, trace: Path | None
                     ) -> dict[str, float]:
    """TensorRT's IProfiler on the backend's execution context."""
    trt = backend.library.module
    times: dict[str, float] = defaultdict(float)
    order: list[str] = []

    class LayerTimes(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            if layer_name not in times:
                order.append(layer_name)
            times[layer_name] += ms

    backend.context.profiler = LayerTimes()  # reports after each synchronized run
    for _ in range(iters):
        backend.infer(batch)
    if trace:
        _write_trace(trace, [(name, times[name] / iters) for name in order])
    return dict(times)


def _write_trace(path: Path, layers: list[tuple[str, float]]) -> None:
    """A Chrome trace (chrome://tracing, Perfetto) of one average run, layer after layer."""
    events, t = [], 0.0
    for name, ms in layers:
        events.append({"name": name, "ph": "X", "ts": t * 1e3, "dur": ms * 1e3, "pid": 0,
                       "tid": 0, "cat": module_in(name)})
        t += ms
    atomic_write_text(path, json.dumps({"traceEvents": events}))


def profile(model: str | Path, backend: str | None = None, iters: int = 20,
            trace: str | Path | None = None, size: tuple[int, int] = (512, 1024),
            device: str | None = None) -> dict[str, Any]:
    """Profile ``model`` through the same backend ``bench`` times (the same graph, with its
    fused I/O); returns {"backend", "iters", "rows", "total_ms", "trace"}."""
    path = Path(model)
    kind = backend_for(path, backend)
    trace_path = Path(trace) if trace else None
    if trace_path and not trace_path.resolve().parent.is_dir():
        raise UsageError(f"cannot write {trace}: its folder does not exist")
    options = {"onnxruntime": {"profile": True}, "torch": {"size": size}}.get(kind, {})
    with open_backend(path, kind, device, **options) as runner:
        spec = runner.spec
        h, w = spec.input.size
        batch = frames_to_input(street_frames(spec.fixed_batch or 1, h, w), spec.input)
        if kind == "onnxruntime":
            times = profile_onnxruntime(runner, batch, iters, trace_path, path)
        elif kind == "tensorrt":
            times = profile_tensorrt(runner, batch, iters, trace_path)
        else:  # torch.profiler: kernels (ops on the CPU) in each genotype module's range
            genotype_modules = set(_module_ops(runner.genotype)) - {"head", "io"}
            torch_profile = runner.kernel_profile(batch, iters, genotype_modules, trace_path)
            times = {f"{name}/": ms for name, ms in torch_profile["device_ms"].items()}
    rows = summarize(times, iters, _genotype_of(spec))
    result = {"backend": kind, "model": str(path), "iters": iters, "rows": rows,
              "total_ms": sum(r["ms"] for r in rows), "trace": str(trace_path or "")}
    if kind == "torch":
        host = torch_profile["host_ms"]
        for row in rows:
            row["host_ms"] = host.get(row["module"], 0.0) / iters
        result.update({k: torch_profile[k] for k in ("device", "time", "top_ops",
                                                     "top_kernels", "device_total_ms")})
    return result


def _genotype_of(spec: ModelSpec) -> Genotype | None:
    """The genotype, to name each module's op: the zoo entry the spec names (None for a
    searched genotype: rows keep module names)."""
    try:
        genotype = Genotype.load(spec.genotype_name)
    except SsrDeployError:
        return None
    return genotype if genotype.hash == spec.genotype_hash else None


def format_profile(p: dict[str, Any], top: int = 15) -> str:
    what = f" ({p['time']} on {p['device']}, host time beside it)" if "time" in p else ""
    lines = [f"{p['backend']} per-layer time{what}, mean of {p['iters']} runs: "
             f"{p['total_ms']:.2f} ms in layers",
             f"{'module':<22}{'op':<22}{'ms':>9}{'share':>8}"
             + (f"{'host ms':>10}" if "time" in p else "")]
    for row in p["rows"][:top]:
        lines.append(f"{row['module']:<22}{row['op']:<22}{row['ms']:>9.3f}"
                     f"{100 * row['share']:>7.1f}%"
                     + (f"{row['host_ms']:>10.3f}" if "host_ms" in row else ""))
    for key, title in (("top_kernels", "top kernels"), ("top_ops", "top ops")):
        if p.get(key):
            basis = "device" if key == "top_kernels" or p["time"].startswith("CUDA") else "op"
            lines.append(f"{title} by {basis} time (ms per run; {p['device_total_ms']:.2f} ms "
                         "in all):")
            for k in p[key][:top]:
                shapes = f"  {k['input_shapes'][:70]}" if "input_shapes" in k else ""
                lines.append(f"  {k['device_ms']:>8.3f}  {k['name'][:60]}{shapes}")
    if p["trace"]:
        lines.append(f"Chrome trace: {p['trace']} (open in chrome://tracing or Perfetto)")
    return "\n".join(lines)
