"""TensorRT engines from verified ONNX: strongly typed networks, built by full TensorRT
(10.3+ and 11, on the GPU that will run them) or TensorRT-RTX (1.7+, on any machine, for RTX
GPUs of the compute capabilities asked for).

The precision is the ONNX's: an fp16 ONNX builds an fp16 engine, a Q/DQ int8 ONNX an int8
one (``precision.py`` makes and verifies both on any CPU). There are no precision builder
flags and no calibrators: TensorRT 11 removed them, and 10.x honours the graph's types with
the STRONGLY_TYPED network flag. Asking for a precision the ONNX does not have converts it
first, so one command still does the job.

This is the export's orchestration (options, the checks before any work, the precision
conversion, publishing); how an ONNX becomes an engine is the TensorRT backend's
(``ssr_deploy.backends.tensorrt.build``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.backends.tensorrt.build import (
    BuildSettings,
    build_network,
    check_uint8_inputs,
    engine_metadata,
)
from ssr_deploy.backends.tensorrt.engine import check_engine_io
from ssr_deploy.backends.tensorrt.library import load_tensorrt, parse_compute_capabilities
from ssr_deploy.backends.tensorrt.profiles import Profile, optimization_profile
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export import precision as prec
from ssr_deploy.export.metadata import check_companion, publish_models, read_sidecar
from ssr_deploy.export.onnx_file import check_onnx_file
from ssr_deploy.io import OutputError, check_input_file
from ssr_deploy.spec import ONNX_PRECISIONS, ModelSpec, file_sha256

STAGES = ("precision", "parse", "build", "write")


@dataclass(frozen=True)
class EngineOptions(prec.PrecisionOptions):
    """The precision fields (``PrecisionOptions``': calibration, ``fp32_layers``, fallback,
    agreement; they matter when an fp32 ONNX is converted first), then the build's.
    ``precision`` None: fp16 from an fp32 ONNX, else the ONNX's own."""

    precision: str | None = None
    min_shape: str | None = None  # BxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int = 3
    builder: str | None = None  # tensorrt | tensorrt-rtx; None: tensorrt where it imports
    compute_capabilities: str | None = None  # TensorRT-RTX targets, "7.5,8.6"

    def precision_options(self, precision: str) -> prec.PrecisionOptions:
        return dataclasses.replace(self, precision=precision)


@dataclass(frozen=True)
class EnginePlan:
    """What ``validate`` decided: the ONNX to compile (after conversion), its precision."""

    onnx_meta: dict[str, Any]
    precision: str
    convert_to: Path | None  # where the converted ONNX goes, None if the ONNX is used as is
    profile: Profile


def validate(onnx_path: str | Path, engine_path: str | Path, o: EngineOptions) -> EnginePlan:
    """Every check that needs no TensorRT, before any work."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if o.precision is not None and o.precision not in ONNX_PRECISIONS:
        raise UsageError(f"precision {o.precision!r} is not known; use fp32, fp16 or int8")
    check_input_file(onnx_path, "ONNX file")
    if not engine_path.parent.is_dir():
        raise UsageError(f"cannot write {engine_path}: folder {engine_path.parent} does not "
                         "exist; create it first or choose another output path")
    if engine_path.resolve() == onnx_path.resolve():
        raise UsageError(f"{engine_path} is the input ONNX; write the engine elsewhere "
                         f"(e.g. {onnx_path.with_suffix('.engine')})")
    if not 0 <= o.opt_level <= 5:
        raise UsageError(f"--opt-level {o.opt_level}: TensorRT takes 0 to 5 (default 3)")
    if o.workspace_gib <= 0:
        raise UsageError(f"--workspace {o.workspace_gib}: give a size in GiB above 0")
    _check_onnx_file(onnx_path)
    spec = ModelSpec.load(onnx_path)
    has = spec.precision
    wanted = o.precision or ("fp16" if has == "fp32" else has)
    if o.fallback != "none" and wanted != "int8":
        raise UsageError(f"--fallback {o.fallback} chooses what stays out of int8; an {wanted} "
                         "engine has no int8: drop it, or use --precision int8")
    convert_to = None
    if has != wanted:
        if has != "fp32":
            raise UsageError(f"{onnx_path.name} is {has}; build a {wanted} engine from the "
                             "fp32 ONNX (or drop --precision to build it as it is)")
        if wanted != "fp32":
            convert_to = engine_path.with_name(f"{onnx_path.stem}.{wanted}.onnx")
            check_companion(convert_to, f"{wanted} graph", engine_path, convert_to, onnx_path)
            prec.validate(onnx_path, convert_to, o.precision_options(wanted))
    elif o.fp32_layers or o.calib_dir or o.fallback != "none":
        raise UsageError(f"{onnx_path.name} is already {has}: --fp32-layers, --calib and "
                         "--fallback apply when converting an fp32 ONNX; pass that one instead")
    if has == "int8" and (spec.quantization is None or spec.quantization.target != "tensorrt"):
        raise UsageError(f"{onnx_path.name} is quantized for onnxruntime on CPUs (uint8 "
                         "activations); TensorRT needs symmetric int8: export it again "
                         "with --precision int8 --int8-target tensorrt")
    profile = optimization_profile(spec, o.min_shape, o.opt_shape, o.max_shape)
    return EnginePlan(spec.to_dict(), wanted, convert_to, profile)


def _check_onnx_file(path: Path) -> None:
    model, _ = check_onnx_file(path)
    check_uint8_inputs(model)


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: EngineOptions,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert the ONNX to the asked precision if needed, parse it into a strongly typed
    network, build, check the network's I/O against the sidecar it gets, and write the
    engine and its sidecar atomically.

    Returns the engine's metadata. Reuses and updates ``options.timing_cache``."""
    step = progress or (lambda stage: None)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    plan = validate(onnx_path, engine_path, options)
    library = load_tensorrt(options.builder)
    targets = parse_compute_capabilities(options.compute_capabilities, library)
    if library.is_rtx and options.timing_cache:
        raise UsageError("--timing-cache is for full TensorRT: TensorRT-RTX's has no effect "
                         "on its engines and would query a GPU; drop it")
    gpu = None
    if not library.is_rtx:
        from ssr_deploy.backends.tensorrt.cuda import gpu_info

        gpu = gpu_info()
    start = time.perf_counter()
    step("precision")
    onnx_meta = plan.onnx_meta
    if plan.convert_to is not None:
        converted = prec.convert_precision(onnx_path, plan.convert_to,
                                           options.precision_options(plan.precision))
        onnx_path, onnx_meta = converted.path, read_sidecar(converted.path)
    step("parse")
    settings = BuildSettings(options.workspace_gib, options.opt_level, targets,
                             options.timing_cache)
    built = build_network(library, onnx.load(str(onnx_path)), onnx_path, settings,
                          plan.profile, onnx_meta, step)
    step("write")
    meta = engine_metadata(built.meta, onnx_path, library, gpu, settings, plan.profile,
                           time.perf_counter() - start)
    check_engine_io(ModelSpec.from_dict(meta), built.io, engine_path.name)
    publish_models([(engine_path, lambda tmp: tmp.write_bytes(built.engine), meta)])
    return read_sidecar(engine_path)




def engine_for(onnx_path: str | Path, precision: str = "fp16", builder: str = "auto",
               compute_capability: str | None = None, min_shape: str | None = None,
               opt_shape: str | None = None, max_shape: str | None = None,
               cache_dir: str | Path | None = None) -> Path:
    """The TensorRT engine of ``onnx_path`` for this machine, built on first use and cached
    (``backends/tensorrt/cache.py``: keyed by the graph's sha256, precision, profile, builder
    and its version, and the GPU; rebuilt, with one line saying why, when any of them no longer
    matches or the file is damaged). Ship the ONNX; call this at the application's first start.

    An fp32 ONNX asked for ``precision="fp16"`` is converted and verified against fp32 first
    (once: the fp16 graph is cached too); an int8 engine comes from an int8 ONNX (its
    calibration frames are the exporter's). ``builder``: "auto" (full TensorRT where it
    imports, else TensorRT-RTX), "tensorrt" or "tensorrt-rtx"; ``compute_capability``:
    TensorRT-RTX's targets ("8.9" or "8.6,8.9"; None: this GPU's, or its defaults where there
    is none); ``min/opt/max_shape``: the profile as BxHxW (default: the ONNX's ranges)."""
    from ssr_deploy.backends.tensorrt.cache import cached_engine, engine_cache_folder

    if precision not in ONNX_PRECISIONS:
        raise UsageError(f"precision {precision!r} is not known; use fp32, fp16 or int8")
    if builder not in ("auto", "tensorrt", "tensorrt-rtx"):
        raise UsageError(f"builder {builder!r} is not known; use auto, tensorrt or tensorrt-rtx")
    onnx_path = check_input_file(onnx_path, "ONNX file")
    _check_onnx_file(onnx_path)
    spec = ModelSpec.load(onnx_path)
    folder = Path(cache_dir) if cache_dir is not None else engine_cache_folder()
    source = onnx_path
    if spec.precision != precision:
        if spec.precision != "fp32":
            raise UsageError(f"{onnx_path.name} is {spec.precision}; an {precision} engine "
                             "comes from the fp32 ONNX (or give the ONNX of that precision)")
        if precision == "int8":
            raise UsageError("an int8 engine needs calibration frames: make the int8 ONNX with "
                             "`ssr-deploy export onnx ... --precision int8 --int8-target "
                             "tensorrt --calib DIR` and give that one here")
        source = _converted(onnx_path, spec, precision, folder)
    return cached_engine(source, None if builder == "auto" else builder, compute_capability,
                         shapes=(min_shape, opt_shape, max_shape), folder=folder)


def _converted(onnx_path: Path, spec: ModelSpec, precision: str, folder: Path) -> Path:
    """The ``precision`` graph of the fp32 ``onnx_path``, converted and verified once, kept
    beside the engines (found again by the fp32 graph's sha256 its sidecar records)."""
    from ssr_deploy.backends.tensorrt.cache import say, scratch_folder

    sha = spec.sha256 or file_sha256(onnx_path)
    path = folder / f"{onnx_path.stem}-{sha[:16]}.{precision}.onnx"
    try:
        cached = ModelSpec.load(path)
        if cached.fp32_onnx_sha256 == sha and cached.precision == precision:
            return path
    except SsrDeployError:
        pass
    say(f"converting {onnx_path.name} to {precision} (verified against fp32; once)")
    options = prec.PrecisionOptions(precision)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return prec.convert_precision(onnx_path, path, options).path
    except (OSError, OutputError):  # the engine's step says the cache will not be kept
        return prec.convert_precision(onnx_path, scratch_folder() / path.name, options).path
