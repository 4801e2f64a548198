"""Per-layer time through the backend ``bench`` times (the same graph, with its fused I/O):
each backend's own profiler (``Backend.layer_times``: onnxruntime's, OpenVINO's performance
counters, TensorRT's IProfiler, torch.profiler), summed per genotype layer, with a Chrome trace.

Exported node names start with their module (``stages.1.layers.4/node_Conv_12``, see
``names.node_name``), so every backend's rows map back to the genotype.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ssr_deploy.backends import backend_for, open_backend, takes_option
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.genotype import Genotype
from ssr_deploy.names import module_in
from ssr_deploy.preprocess import frames_to_input
from ssr_deploy.spec import ModelSpec

#: rows that are not a genotype module, and what they are
OTHER_ROWS = {"head": "upsample", "io": "pre/post-processing",
              "layout-reorder": "layout reorders"}


def summarize(times_ms: dict[str, float], iters: int, genotype: Genotype | None
              ) -> list[dict[str, Any]]:
    """{layer name: total ms over ``iters``} -> rows per genotype module, slowest first."""
    per_module: dict[str, float] = defaultdict(float)
    for name, ms in times_ms.items():
        per_module[module_in(name)] += ms / iters
    total = sum(per_module.values()) or 1.0
    ops = {**OTHER_ROWS, **genotype.modules()} if genotype else {}
    rows = [{"module": m, "op": ops.get(m, ""), "ms": ms, "share": ms / total}
            for m, ms in per_module.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def profile(model: str | Path, backend: str | None = None, iters: int = 20,
            trace: str | Path | None = None, size: tuple[int, int] = (512, 1024),
            device: str | None = None, precision: str | None = None) -> dict[str, Any]:
    """Profile ``model`` through the same backend ``bench`` times (the same graph, with its
    fused I/O; ``precision``: a backend's runtime precision, OpenVINO's); returns
    {"backend", "precision", "iters", "rows", "total_ms", "trace"}."""
    path = Path(model)
    kind = backend_for(path, backend)
    trace_path = Path(trace) if trace else None
    if trace_path:
        from ssr_deploy.io import check_output_path

        check_output_path(trace_path)
    options = {option: value for option, value in (("profile", True), ("size", size))
               if takes_option(kind, option)}
    if precision:
        if not takes_option(kind, "precision"):
            raise UsageError(f"--precision {precision} is a runtime precision of the openvino "
                             f"backend; {kind} runs the precision its graph has")
        options["precision"] = precision
    with open_backend(path, kind, device, **options) as runner:
        spec = runner.spec
        h, w = spec.input.size
        batch = frames_to_input(street_frames(spec.fixed_batch or 1, h, w), spec.input)
        measured = runner.layer_times(batch, iters, trace_path)
        precision = runner.precision
    rows = summarize(measured.times_ms, iters, _genotype_of(spec))
    if measured.host_ms is not None:
        for row in rows:
            row["host_ms"] = measured.host_ms.get(row["module"], 0.0) / iters
    return {"backend": kind, "precision": precision, "model": str(path), "iters": iters,
            "rows": rows, "total_ms": sum(r["ms"] for r in rows),
            "trace": str(trace_path or ""), **measured.details}


def _genotype_of(spec: ModelSpec) -> Genotype | None:
    """The genotype, to name each module's op: the zoo entry the spec names (None for a
    searched genotype: rows keep module names)."""
    try:
        genotype = Genotype.load(spec.genotype_name)
    except SsrDeployError:
        return None
    return genotype if genotype.hash == spec.genotype_hash else None


def format_profile(p: dict[str, Any], top: int = 15) -> str:
    host = any("host_ms" in row for row in p["rows"])
    what = (f" ({p['time']} on {p['device']}{', host time beside it' if host else ''})"
            if "time" in p else "")
    lines = [f"{p['backend']} ({p['precision']}) per-layer time{what}, mean of {p['iters']} "
             f"runs: {p['total_ms']:.2f} ms in layers",
             f"{'module':<22}{'op':<22}{'ms':>9}{'share':>8}" + (f"{'host ms':>10}" if host
                                                                   else "")]
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
