"""TensorRT engines from verified ONNX: strongly typed networks, built by full TensorRT
(10.3+ and 11, on the GPU that will run them) or TensorRT-RTX (1.7+, on any machine, for RTX
GPUs of the compute capabilities asked for).

The precision is the ONNX's: an fp16 ONNX builds an fp16 engine, a Q/DQ int8 ONNX an int8
one (``precision.py`` makes and verifies both on any CPU). There are no precision builder
flags and no calibrators: TensorRT 11 removed them, and 10.x honours the graph's types with
the STRONGLY_TYPED network flag. Asking for a precision the ONNX does not have converts it
first, so one command still does the job.

Everything that needs no TensorRT (options, profiles, the ONNX the parser gets, metadata,
compatibility) is tested on any machine; ``build_network`` is the one place an ONNX becomes
an engine (``export engine`` and the latency table's TensorRT timer both call it), and runs
for real wherever TensorRT-RTX is installed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export import precision as prec
from ssr_deploy.export.metadata import publish_models, read_sidecar
from ssr_deploy.export.onnx_file import check_onnx_file
from ssr_deploy.export.trt_profiles import Profile, optimization_profile
from ssr_deploy.io import atomic_write, check_input_file
from ssr_deploy.runtime.backends.tensorrt import TensorIO, check_engine_io, dtype_names
from ssr_deploy.runtime.tensorrt_library import (
    RTX_DEFAULT_TARGETS,
    TensorRT,
    load_tensorrt,
    parse_compute_capabilities,
    rtx_targets,
)
from ssr_deploy.spec import ModelSpec

PRECISIONS = ("fp32", "fp16", "int8")
STAGES = ("precision", "parse", "build", "write")


@dataclass(frozen=True)
class EngineOptions:
    """``precision`` None: fp16 from an fp32 ONNX, else the ONNX's own. The calibration and
    ``fp32_layers`` fields only matter when an fp32 ONNX is converted first."""

    precision: str | None = None
    calib_dir: str | None = None
    calib_n: int = 100
    calib_method: str = "entropy"
    calib_cache: str | None = None
    fp32_layers: tuple[str, ...] = ()
    min_agreement: float | None = None
    fallback: str = "none"  # int8: "auto" keeps the most sensitive modules in fp16
    min_shape: str | None = None  # BxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int = 3
    builder: str | None = None  # tensorrt | tensorrt-rtx; None: tensorrt where it imports
    compute_capabilities: str | None = None  # TensorRT-RTX targets, "7.5,8.6"

    def precision_options(self, precision: str) -> prec.PrecisionOptions:
        return prec.PrecisionOptions(
            precision=precision, fp32_layers=self.fp32_layers, calib_dir=self.calib_dir,
            calib_n=self.calib_n, calib_method=self.calib_method, calib_cache=self.calib_cache,
            int8_target="tensorrt", min_agreement=self.min_agreement, fallback=self.fallback)


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
    if o.precision is not None and o.precision not in PRECISIONS:
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
    meta = read_sidecar(onnx_path)
    has = meta.get("precision", "fp32")
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
            prec.validate(onnx_path, convert_to, o.precision_options(wanted))
    elif o.fp32_layers or o.calib_dir or o.fallback != "none":
        raise UsageError(f"{onnx_path.name} is already {has}: --fp32-layers, --calib and "
                         "--fallback apply when converting an fp32 ONNX; pass that one instead")
    if has == "int8" and meta.get("quantization", {}).get("target") != "tensorrt":
        raise UsageError(f"{onnx_path.name} is quantized for onnxruntime on CPUs (uint8 "
                         "activations); TensorRT needs symmetric int8: export it again "
                         "with --precision int8 --int8-target tensorrt")
    profile = optimization_profile(meta, o.min_shape, o.opt_shape, o.max_shape)
    return EnginePlan(meta, wanted, convert_to, profile)


def _check_onnx_file(path: Path) -> None:
    model, _ = check_onnx_file(path)
    check_uint8_inputs(model)


def check_uint8_inputs(model: onnx.ModelProto) -> None:
    """A uint8 input must feed only Casts: TensorRT takes uint8 into no other layer. An ONNX
    exported before that rule is refused in one line."""
    graph = model.graph
    for tensor in graph.input:
        if tensor.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
            others = [n for n in graph.node if tensor.name in n.input and n.op_type != "Cast"]
            if others:
                raise SsrDeployError(f"the uint8 input {tensor.name!r} feeds {others[0].op_type} "
                                     f"({others[0].name}) before its Cast, which TensorRT "
                                     "refuses; export the ONNX again with this ssr-deploy")


def onnx_for_tensorrt(model: onnx.ModelProto, meta: dict[str, Any] | None = None
                      ) -> tuple[onnx.ModelProto, dict[str, Any] | None]:
    """The graph TensorRT parses, and the metadata the engine gets. uint8 label maps come
    out of an ArgMax -> Cast(uint8); TensorRT's uint8 is meant for I/O of plain data, so the
    engine returns int32 labels (the runtime narrows them) instead of trusting that cast.
    A uint8 input must feed only Casts (TensorRT takes uint8 into nothing else): an ONNX
    exported before that rule is refused in one line."""
    check_uint8_inputs(model)
    graph = model.graph
    narrowed = [o.name for o in graph.output
                if o.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    if not narrowed:
        return model, meta
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in narrowed:
        cast = next((n for n in copy.graph.node if name in n.output and n.op_type == "Cast"),
                    None)
        if cast is None:
            raise SsrDeployError(f"the uint8 output {name!r} does not come from a Cast; export "
                                 "the ONNX again with `ssr-deploy export onnx`")
        for attribute in cast.attribute:
            if attribute.name == "to":
                attribute.i = onnx.TensorProto.INT32
        for output in copy.graph.output:
            if output.name == name:
                output.type.tensor_type.elem_type = onnx.TensorProto.INT32
    if meta is not None and meta["output"]["name"] in narrowed:
        meta = {**meta, "output": {**meta["output"], "dtype": "int32"}}
    return copy, meta


@dataclass(frozen=True)
class BuildSettings:
    """What the builder is told besides the graph. ``compute_capabilities``: TensorRT-RTX's
    targets (() for its default); ``timing_cache``: full TensorRT only (TensorRT-RTX's has no
    effect and would query a GPU)."""

    workspace_gib: float = 4.0
    opt_level: int = 3
    compute_capabilities: tuple[str, ...] = ()
    timing_cache: str | None = None


@dataclass
class BuiltNetwork:
    """A serialized engine, the network's I/O as the builder saw it, and the metadata of the
    graph it compiled (``onnx_for_tensorrt``'s)."""

    engine: bytes
    io: list[TensorIO]
    meta: dict[str, Any] | None


def network_io(trt, network) -> list[TensorIO]:
    """The parsed network's I/O tensors (-1 for a dynamic dimension), as the builder sees
    them."""
    names = dtype_names(trt)
    tensors = [(network.get_input(i), True) for i in range(network.num_inputs)]
    tensors += [(network.get_output(i), False) for i in range(network.num_outputs)]
    return [TensorIO(t.name, is_input, names.get(t.dtype, str(t.dtype)), tuple(t.shape))
            for t, is_input in tensors]


def build_network(library: TensorRT, model: onnx.ModelProto, source: str | Path,
                  settings: BuildSettings, profile: Profile | None = None,
                  meta: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> BuiltNetwork:
    """The one way an ONNX becomes an engine: the graph rewritten for TensorRT, parsed into a
    strongly typed network, built with ``settings`` and one optimisation ``profile`` (None
    for a static graph). ``source``: the ONNX's path, for messages and external data."""
    trt = library.module
    model, meta = onnx_for_tensorrt(model, meta)
    logger = _logger(library)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(source)):
        errors = "; ".join(logger.errors[:1] or [str(parser.get_error(i)).splitlines()[0]
                                                  for i in range(parser.num_errors)])
        raise SsrDeployError(f"{library.title} cannot parse {source}: {errors}")
    if progress:
        progress("build")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gib * 2**30))
    config.builder_optimization_level = settings.opt_level
    if profile is not None:
        trt_profile = builder.create_optimization_profile()
        trt_profile.set_shape(profile.name, profile.min, profile.opt, profile.max)
        config.add_optimization_profile(trt_profile)
    timing_cache = None
    if library.is_rtx:
        targets = rtx_targets(library)
        config.num_compute_capabilities = len(settings.compute_capabilities)
        for i, cc in enumerate(settings.compute_capabilities):
            if not config.set_compute_capability(targets[cc], i):
                raise SsrDeployError(f"{library.title} refused compute capability {cc}")
    else:
        timing_cache = config.create_timing_cache(_read_bytes(settings.timing_cache) or b"")
        config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SsrDeployError(f"{library.title} could not build an engine from {source}: "
                             f"{'; '.join(logger.errors) or 'no reason given'}"
                             + ("; Turing runs fp16 engines: build fp16 for 7.5" if any(
                                 "Turing" in e for e in logger.errors) else ""))
    if timing_cache is not None and settings.timing_cache:
        data = bytes(timing_cache.serialize())
        atomic_write(settings.timing_cache, lambda tmp: tmp.write_bytes(data))
    return BuiltNetwork(bytes(serialized), network_io(trt, network), meta)


def _logger(library: TensorRT):
    """A TensorRT logger that prints warnings as TensorRT's own does and keeps the errors for
    the one line that reports a failure. TensorRT-RTX on a machine with no GPU logs a CUDA
    driver error while parsing that does not stop the build: it is left out."""
    trt = library.module

    class Log(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg: str) -> None:
            if library.is_rtx and "CUDA driver version is insufficient" in msg:
                return
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg.split(" In ")[0].strip())
            elif severity == trt.ILogger.Severity.WARNING:
                print(f"[{library.title}] {msg}", file=sys.stderr)

    return Log()


def engine_metadata(onnx_meta: dict[str, Any], onnx_path: Path, library: TensorRT,
                    gpu: dict[str, str] | None, o: EngineOptions, profile: Profile,
                    targets: tuple[str, ...], build_seconds: float) -> dict[str, Any]:
    """The ONNX's metadata (minus its file facts) plus what the engine is tied to: the
    builder and its version, and the GPU it was built on (full TensorRT) or the compute
    capabilities it targets (TensorRT-RTX)."""
    meta = {k: v for k, v in onnx_meta.items() if k not in ("file", "sha256")}
    built = {"builder": library.builder, "version": library.version, "gpu": gpu,
             "opt_level": o.opt_level, "workspace_gib": o.workspace_gib, "strongly_typed": True}
    if library.is_rtx:
        built["compute_capabilities"] = list(targets or RTX_DEFAULT_TARGETS)
        built["compute_capabilities_default"] = not targets
    meta.update({
        "onnx": onnx_path.name, "onnx_sha256": onnx_meta.get("sha256"),
        "precision": onnx_meta.get("precision", "fp32"), "profile": profile.to_dict(),
        "tensorrt": built, "build_seconds": round(build_seconds, 2),
    })
    return meta


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
        from ssr_deploy.runtime.cuda import gpu_info

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
    meta = engine_metadata(built.meta, onnx_path, library, gpu, options, plan.profile, targets,
                           time.perf_counter() - start)
    check_engine_io(ModelSpec.from_dict(meta), built.io, engine_path.name)
    publish_models([(engine_path, lambda tmp: tmp.write_bytes(built.engine), meta)])
    return read_sidecar(engine_path)


def _read_bytes(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path and Path(path).is_file() else None
