"""Which TensorRT: the full library (``tensorrt``, 10.3+ and 11, engines for the GPU they are
built on) or TensorRT for RTX (``tensorrt_rtx``, 1.7+, engines built ahead of time on any
machine, GPU or not, for a list of compute capabilities, and JIT-specialised on the RTX GPU
that runs them). Their Python APIs are one lineage; what differs is decided here and only
here: which module, its version, the compute capabilities an engine targets, and whether
this machine's GPU can run an engine.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from typing import Any

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.spec import EngineBuild, Gpu, ModelSpec

BUILDERS = ("tensorrt", "tensorrt-rtx")
MODULES = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
NAMES = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}
MIN_VERSIONS = {"tensorrt": (10, 3), "tensorrt-rtx": (1, 7)}
INSTALL = {
    "tensorrt": "pip install 'ssr-deploy[cu12]' (driver >= 525) or 'ssr-deploy[cu13]' "
                "(driver >= 580), or use the docker/Dockerfile image",
    "tensorrt-rtx": "pip install 'ssr-deploy[rtx]' (CUDA 13, driver >= 580; for CUDA 12: "
                    "pip install tensorrt-rtx-cu12 'cuda-python>=12.6,<13')",
}
#: What TensorRT-RTX builds for when no --compute-capability is given: its support matrices
#: (1.0 to 1.5, and the current one for 1.7) say portable across 8.6, 8.9 and 12.0 by
#: default; Turing (7.5), 8.0 and 12.1 only when named.
RTX_DEFAULT_TARGETS = ("8.6", "8.9", "12.0")
#: What --compute-capability can name (TensorRT-RTX 1.7's ComputeCapability: SM75 ... SM121)
RTX_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
#: The first bytes of every TensorRT-RTX engine (seen in 1.7's engines; full TensorRT's differ).
RTX_MAGIC = b"vtrt"


@dataclass(frozen=True)
class TensorRT:
    """One imported TensorRT library: ``module`` is ``tensorrt`` or ``tensorrt_rtx``."""

    builder: str
    module: Any

    @property
    def version(self) -> str:
        return self.module.__version__

    @property
    def is_rtx(self) -> bool:
        return self.builder == "tensorrt-rtx"

    @property
    def title(self) -> str:
        """``TensorRT 10.16.1.11`` / ``TensorRT-RTX 1.7.1.116``."""
        return f"{NAMES[self.builder]} {self.version}"


def _try_import(builder: str) -> Any | None:
    try:
        return importlib.import_module(MODULES[builder])
    except (ImportError, OSError):  # OSError: bindings without their libraries
        return None


def load_tensorrt(builder: str | None = None) -> TensorRT:
    """The library ``builder`` names, or (None) full TensorRT where it imports, else
    TensorRT-RTX; one line naming the install(s) when it is not here."""
    if builder is not None and builder not in BUILDERS:
        raise UsageError(f"--builder {builder}: use {' or '.join(BUILDERS)}")
    for name in (builder,) if builder else BUILDERS:
        module = _try_import(name)
        if module is not None:
            library = TensorRT(name, module)
            check_version(library.builder, library.version)
            if not hasattr(module.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
                raise SsrDeployError(f"{library.title} has no strongly typed networks; "
                                     "install TensorRT >= 10.3")
            return library
    if builder:
        raise SsrDeployError(f"{NAMES[builder]} is not installed: {INSTALL[builder]}")
    raise SsrDeployError(f"TensorRT is not installed: for any NVIDIA GPU, "
                         f"{INSTALL['tensorrt']}; to build RTX engines on any machine (no GPU "
                         f"needed), {INSTALL['tensorrt-rtx']}")


def check_version(builder: str, version: str) -> None:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    least = MIN_VERSIONS[builder]
    if parts < least:
        need = ".".join(map(str, least))
        why = "builds strongly typed engines, which need" if builder == "tensorrt" else "needs"
        raise SsrDeployError(f"{NAMES[builder]} {version} is too old: ssr-deploy {why} "
                             f"{NAMES[builder]} >= {need}")


def rtx_targets(library: TensorRT) -> dict[str, Any]:
    """{"8.6": trt.ComputeCapability.SM86, ...}: what this TensorRT-RTX builds for."""
    trt = library.module
    members = trt.ComputeCapability.__members__
    return {f"{name[2:-1]}.{name[-1]}": value for name, value in members.items()
            if name.startswith("SM")}


def parse_compute_capabilities(text: str | None, library: TensorRT) -> tuple[str, ...]:
    """``"7.5,8.6"`` -> ("7.5", "8.6"), each one TensorRT-RTX builds for; () for its default.
    Full TensorRT builds for the GPU it runs on, so it takes none."""
    if not text:
        return ()
    if not library.is_rtx:
        raise UsageError("--compute-capability is for --builder tensorrt-rtx; full TensorRT "
                         "builds for the GPU it runs on (build on the GPU that will run it)")
    known = rtx_targets(library)
    wanted = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    for cc in wanted:
        if cc not in known:
            raise UsageError(f"--compute-capability {cc}: {library.title} builds for "
                             f"{', '.join(known)} (Turing 7.5, Ampere 8.0/8.6, Ada 8.9, "
                             "Blackwell 12.x); Hopper (9.0) and others need --builder tensorrt")
    return wanted


def engine_targets(built: EngineBuild) -> tuple[str, ...]:
    """The compute capabilities an engine's sidecar says it runs on."""
    if built.builder == "tensorrt-rtx":
        return built.compute_capabilities or RTX_DEFAULT_TARGETS
    cc = built.gpu.compute_capability if built.gpu else None
    return (cc,) if cc else ()


def sm(cc: str | None) -> str:
    return f"sm_{(cc or '?').replace('.', '')}"


def check_engine_builder(engine_name: str, builder: str, header: bytes) -> None:
    """The engine's bytes must be of the library its sidecar names."""
    is_rtx = header.startswith(RTX_MAGIC)
    if is_rtx != (builder == "tensorrt-rtx"):
        made_by = NAMES["tensorrt-rtx" if is_rtx else "tensorrt"]
        raise SsrDeployError(f"{engine_name} is a {made_by} engine but its sidecar says "
                             f"{NAMES[builder]}: the sidecar belongs to another engine; build "
                             "it again with `ssr-deploy export engine`")


def check_gpu_runs(engine_name: str, built: EngineBuild, gpu: dict[str, str] | None,
                   gpu_error: str = "") -> None:
    """One line saying what the engine needs and what this machine has, when it cannot run
    here. ``gpu`` None: no usable NVIDIA GPU (``gpu_error`` says why)."""
    builder = built.builder
    targets = engine_targets(built)
    needs = (f"a {NAMES[builder]} engine for {', '.join(sm(cc) for cc in targets)}"
             if targets else f"a {NAMES[builder]} engine")
    if gpu is None:
        raise SsrDeployError(f"{engine_name} is {needs}; this machine has no usable NVIDIA GPU"
                             f"{f' ({gpu_error})' if gpu_error else ''}: run it on such a GPU, "
                             "or run the .onnx with onnxruntime")
    cc = gpu.get("compute_capability")
    if builder == "tensorrt-rtx" and cc not in targets:
        if cc not in RTX_TARGETS:
            fix = "TensorRT-RTX does not run on it: build with --builder tensorrt on this machine"
        else:
            fix = f"build it again with --compute-capability {cc}"
        raise SsrDeployError(f"{engine_name} is {needs}; this GPU is {gpu.get('name')} "
                             f"({sm(cc)}): {fix}")


def check_compatibility(spec: ModelSpec, library: TensorRT, gpu: dict[str, str] | None,
                        engine_name: str = "the engine", gpu_error: str = "") -> list[str]:
    """Refuse an engine built with another release, or for a GPU other than this one (full
    TensorRT: its compute capability; TensorRT-RTX: not among its targets), with one line
    that says which and how to rebuild; return warnings (same chip, other board)."""
    built = spec.engine or EngineBuild()
    built_version = built.version
    rebuild = (f"rebuild it here: ssr-deploy export engine {spec.onnx or 'model.onnx'} -o "
               f"{engine_name}{' --builder tensorrt-rtx' if library.is_rtx else ''}")
    if built_version != library.version:
        raise SsrDeployError(f"{engine_name} was built with {NAMES[library.builder]} "
                             f"{built_version}, this machine has {library.title}; engines do "
                             f"not move between releases: {rebuild}")
    check_gpu_runs(engine_name, built, gpu, gpu_error)
    if library.is_rtx:
        return []
    built_gpu = built.gpu or Gpu()
    if built_gpu.compute_capability != gpu.get("compute_capability"):
        raise SsrDeployError(f"{engine_name} was built for {built_gpu.name} "
                             f"({sm(built_gpu.compute_capability)}), this GPU is "
                             f"{gpu.get('name')} ({sm(gpu.get('compute_capability'))}); {rebuild}")
    if built_gpu.name != gpu.get("name"):
        return [f"{engine_name} was tuned on {built_gpu.name}, running on {gpu.get('name')}"
                " (same compute capability): it runs, but rebuilding here may be faster"]
    return []


def shared_logger(library: TensorRT):
    """The process's one logger for ``library`` (TensorRT keeps the first logger it is given,
    so every Builder and Runtime gets this one): it prints warnings as TensorRT's own does and
    keeps the errors for the one line that reports a failure. TensorRT-RTX on a machine with
    no GPU logs a CUDA driver error while parsing that does not stop the build: left out."""
    return _loggers(library.builder, library.module, library.title, library.is_rtx)


@functools.cache
def _loggers(builder: str, trt, title: str, is_rtx: bool):
    class Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:
            if is_rtx and "CUDA driver version is insufficient" in msg:
                return
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg.split(" In ")[0].strip())
            elif severity == trt.ILogger.Severity.WARNING:
                print(f"[{title}] {msg}", file=sys.stderr)

    return Log()
