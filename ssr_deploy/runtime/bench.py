"""End-to-end speed: host frames in -> host labels out, per backend and batch, side by side.

Backends are timed in interleaved rounds within one process, so drift (thermal, other
load) hits them alike and their ratio is fair. Latency is per batch, in ms; FPS is frames
per second (batch / mean latency).
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.errors import UsageError
from ssr_deploy.media import figure_writer, save_figure
from ssr_deploy.progress import Progress
from ssr_deploy.runs import publish_files
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.spec import CPU_GATE

PAPER_FPS = 175.0  # SSR-Net at 512x1024 on an RTX 2080Ti (Ye et al., IJCV 2022)


@dataclass
class BenchResult:
    backend: str
    model: str
    device: str
    batch: int
    size: list[int]
    iters: int
    fps: float
    latency_ms: dict[str, float]
    compute_ms: dict[str, float] | None = None  # device time, where the backend measures it
    copy_share: float | None = None  # host<->device copies / (copies + compute)
    precision: str = "fp32"  # what the model computes in (backend.precision)
    on_gpu: bool = False
    samples_ms: list[float] = field(default_factory=list, repr=False)
    #: a converted model's labels against its fp32 graph, as its export measured them
    agreement: float | None = None

    @property
    def verified(self) -> bool | None:
        """Whether its export measured it at the CPU gate or above (None: not converted)."""
        return None if self.agreement is None else self.agreement >= CPU_GATE

    @property
    def paper_comparable(self) -> bool:
        """The paper's 175 FPS is at 512x1024 on a GPU: only such a figure is set against it."""
        return self.on_gpu and list(self.size) == [512, 1024]


def latency_stats(samples_ms: list[float]) -> dict[str, float]:
    """mean / p50 / p90 / p99 / max of latencies in ms."""
    a = np.asarray(samples_ms, np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def check_batches(label: str, seg: Segmenter, batches: list[int],
                  frame_size: tuple[int, int] | None = None) -> None:
    """Refuse a batch the model cannot take in one inference (it would be chunked, and the
    figure reported under a batch that never ran), and batches whose frames and activations
    cannot fit in memory, before anything is allocated."""
    from ssr_deploy.io import check_memory

    low, high = seg.spec.batch_range
    for batch in batches:
        if batch > high:
            hint = ("re-export with --dynamic-batch --max-batch " + str(batch)
                    if high > 1 else "re-export with --dynamic-batch")
            raise UsageError(f"--batch {batch}: {label} takes batches of at most {high}; bench "
                             f"--batch {high} or less, or {hint}")
    h, w = seg.size
    fh, fw = frame_size or (h, w)
    # per image: the frame, the model's float input, and two of its largest activations (the
    # stem's output: 64 float32 channels at half the input's height and width)
    per_image = 3 * fh * fw + 4 * 3 * h * w + 2 * 4 * 64 * (h // 2) * (w // 2)
    check_memory(max(batches) * per_image, f"batch {max(batches)} at {fh}x{fw}",
                 "lower --batch or --frame-size")


def run(entries: list[tuple[str, Segmenter]], batches: list[int], iters: int = 50,
        warmup: int = 10, frame_size: tuple[int, int] | None = None, rounds: int = 5,
        progress: bool = False) -> list[BenchResult]:
    """Time each (label, segmenter) at each batch size; ``frame_size`` defaults to the model's
    input size (no resize); a camera-sized frame adds the resize to the measurement."""
    results = []
    bar = Progress("bench", len(batches) * len(entries) * (warmup + iters), "run",
                   enabled=progress)
    for batch in batches:
        size = frame_size or entries[0][1].size
        frames = list(street_frames(batch, *size, seed=batch))
        samples: dict[str, list[float]] = {label: [] for label, _ in entries}
        device_ms: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in entries}
        for _label, seg in entries:
            for _ in range(warmup):
                seg.predict_batch(frames)
                bar.update(1)
        per_round = [iters // rounds + (r < iters % rounds) for r in range(rounds)]
        for count in per_round:
            for label, seg in entries:
                for _ in range(count):
                    start = time.perf_counter()
                    seg.predict_batch(frames)
                    samples[label].append((time.perf_counter() - start) * 1e3)
                    timing = getattr(seg.backend, "last_timing", None)
                    if timing:
                        device_ms[label].append((timing["compute_ms"], timing["copy_ms"]))
                    bar.update(1)
        for label, seg in entries:
            stats = latency_stats(samples[label])
            result = BenchResult(
                backend=label, model=seg.spec.file or "",
                device=getattr(seg.backend, "device_name", "cpu"), batch=batch,
                size=list(size), iters=iters, fps=batch * 1e3 / stats["mean"],
                latency_ms=stats, precision=seg.backend.precision,
                on_gpu=seg.backend.on_gpu, samples_ms=samples[label],
                agreement=seg.spec.precision_check.label_agreement
                if seg.spec.precision_check else None)
            if device_ms[label]:
                compute, copy = (np.asarray(v) for v in zip(*device_ms[label], strict=True))
                result.compute_ms = latency_stats(list(compute))
                result.copy_share = float(copy.sum() / (copy.sum() + compute.sum()))
            results.append(result)
    bar.close()
    return results


def machine_info() -> dict[str, Any]:
    """CPU, GPU (if any) and library versions, for the JSON next to the figures."""
    import contextlib
    import importlib.metadata
    import sys

    import ssr_deploy
    from ssr_deploy.cpu import this_cpu

    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(),
                            "cpu_kind": this_cpu().to_dict(),
                            "platform": platform.platform(), "gpu": None,
                            "versions": {"ssr_deploy": ssr_deploy.__version__,
                                         "python": platform.python_version(),
                                         "numpy": np.__version__}}
    for name, dists in (("opencv", ("opencv-python-headless", "opencv-python")),
                        ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
                        ("openvino", ("openvino",)), ("torch", ("torch",)),
                        ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"))):
        for dist in dists:  # read from the installed metadata: nothing is imported
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                info["versions"][name] = importlib.metadata.version(dist)
                break
    torch = sys.modules.get("torch")  # CUDA facts from torch only where it is loaded already
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                       "memory_gib": round(props.total_memory / 2**30, 1),
                       "cuda": torch.version.cuda, "driver": _driver_version()}
    else:
        info["gpu"] = _nvidia_smi_gpu()
    return info


def _nvidia_smi_gpu() -> dict[str, Any] | None:
    """The first GPU as nvidia-smi reports it, for machines without torch."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return None
    try:
        line = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                               "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=10).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
    name, driver, memory = (part.strip() for part in line.split(","))
    return {"name": name, "driver": driver, "memory_gib": round(float(memory) / 1024, 1)}


def _driver_version() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(results: list[BenchResult], machine: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: machine, results (without raw samples), ratios to the first."""
    base = {r.batch: r.fps for r in results if r.backend == results[0].backend}
    return {
        "machine": machine, "paper_fps": PAPER_FPS,
        "results": [{**{k: v for k, v in asdict(r).items() if k != "samples_ms"},
                     "paper_comparable": r.paper_comparable, "verified": r.verified}
                    for r in results],
        "ratios": [{"backend": r.backend, "batch": r.batch, "vs": results[0].backend,
                    "fps_ratio": r.fps / base[r.batch]} for r in results],
    }


def format_results(results: list[BenchResult]) -> str:
    """The table: one row per model and batch; ``vs fp32``: a converted model's labels
    against its fp32 graph as its export measured them (verified at the CPU gate or not);
    ``vs paper`` only where a figure is the paper's peer (512x1024 on a GPU)."""
    first = results[0].backend
    paper = any(r.paper_comparable for r in results)
    lines = [f"{'backend':<28}{'precision':>12}{'batch':>6}{'FPS':>9}{'mean':>9}{'p50':>9}"
             f"{'p90':>9}{'p99':>9}{'max':>9}  vs {first}   vs fp32"
             + ("  vs paper" if paper else "")]
    base = {r.batch: r.fps for r in results if r.backend == first}
    for r in results:
        lat = r.latency_ms
        agreement = "-" if r.agreement is None else (
            f"{100 * r.agreement:.2f}%" + ("" if r.verified else " (below the gate)"))
        row = (f"{r.backend:<28}{r.precision:>12}{r.batch:>6}{r.fps:>9.1f}"
               f"{lat['mean']:>9.2f}{lat['p50']:>9.2f}{lat['p90']:>9.2f}{lat['p99']:>9.2f}"
               f"{lat['max']:>9.2f}  {r.fps / base[r.batch]:>6.2f}x  {agreement:>8}")
        if paper:
            row += f"  {r.fps / PAPER_FPS:>6.2f}x" if r.paper_comparable else f"  {'-':>7}"
        lines.append(row)
        if r.compute_ms:
            lines.append(f"{'':<28}device compute {r.compute_ms['mean']:.2f} ms, copies "
                         f"{100 * r.copy_share:.0f}% of device time")
    lines.append(f"latency in ms per batch, end to end (frames in, labels out); vs fp32: "
                 f"labels as fp32 when exported, verified at {100 * CPU_GATE:.1f}%"
                 + (f"; paper: {PAPER_FPS:.0f} FPS at 512x1024 on an RTX 2080Ti" if paper
                    else ""))
    return "\n".join(lines)


def write_outputs(results: list[BenchResult], json_path: str | Path | None = None,
                  plot_path: str | Path | None = None) -> None:
    """The JSON report and the histogram, published together or not at all."""
    writers = {}
    if json_path:
        text = json.dumps(report(results, machine_info()), indent=2) + "\n"
        writers[json_path] = lambda tmp: tmp.write_text(text)
    fig = histogram_figure(results) if plot_path else None
    if plot_path:
        writers[plot_path] = figure_writer(fig)
    publish_files(writers, fig)


def plot_histogram(results: list[BenchResult], path: str | Path) -> Path:
    """Per-frame latency histograms, one per backend and batch, with the paper's 175 FPS
    where the figures are its peers (512x1024 on a GPU)."""
    return save_figure(histogram_figure(results), path)


def histogram_figure(results: list[BenchResult]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for r in results:
        per_frame = np.asarray(r.samples_ms) / r.batch
        ax.hist(per_frame, bins=30, alpha=0.6, label=f"{r.backend} b{r.batch}: {r.fps:.1f} FPS")
    size = f"{results[0].size[0]}x{results[0].size[1]}"
    if any(r.paper_comparable for r in results):
        ax.axvline(1e3 / PAPER_FPS, color="k", linestyle="--",
                   label=f"paper: {PAPER_FPS:.0f} FPS at 512x1024 (RTX 2080Ti)")
        title = f"ssr-deploy bench, {size}"
    else:  # another size or a CPU: the paper's figure is not this measurement's peer
        title = (f"ssr-deploy bench, {size} on {results[0].device}\n(the paper's "
                 f"{PAPER_FPS:.0f} FPS is at 512x1024 on a GPU: not drawn)")
    ax.set_xlabel("latency per frame (ms), end to end")
    ax.set_ylabel("iterations")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    return fig
