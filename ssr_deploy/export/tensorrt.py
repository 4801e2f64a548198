"""TensorRT engines from verified ONNX: strongly typed networks (TensorRT 10.3+ and 11).

The precision is the ONNX's: an fp16 ONNX builds an fp16 engine, a Q/DQ int8 ONNX an int8
one (``precision.py`` makes and verifies both on any CPU). There are no precision builder
flags and no calibrators: TensorRT 11 removed them, and 10.x honours the graph's types with
the STRONGLY_TYPED network flag. Asking for a precision the ONNX does not have converts it
first, so one command still does the job.

Everything that needs no TensorRT (options, profiles, the ONNX the parser gets, metadata,
compatibility) is tested on any machine; ``build_engine`` is the part that needs TensorRT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export import precision as prec
from ssr_deploy.export.metadata import publish_models, read_sidecar
from ssr_deploy.export.trt_profiles import Profile, optimization_profile
from ssr_deploy.io import atomic_write, check_input_file
from ssr_deploy.runtime.backends.tensorrt import import_tensorrt

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
    min_shape: str | None = None  # BxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int = 3

    def precision_options(self, precision: str) -> prec.PrecisionOptions:
        return prec.PrecisionOptions(
            precision=precision, fp32_layers=self.fp32_layers, calib_dir=self.calib_dir,
            calib_n=self.calib_n, calib_method=self.calib_method, calib_cache=self.calib_cache,
            int8_target="tensorrt", min_agreement=self.min_agreement)


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
    convert_to = None
    if has != wanted:
        if has != "fp32":
            raise UsageError(f"{onnx_path.name} is {has}; build a {wanted} engine from the "
                             "fp32 ONNX (or drop --precision to build it as it is)")
        if wanted != "fp32":
            convert_to = engine_path.with_name(f"{onnx_path.stem}.{wanted}.onnx")
            prec.validate(onnx_path, convert_to, o.precision_options(wanted))
    elif o.fp32_layers or o.calib_dir:
        raise UsageError(f"{onnx_path.name} is already {has}: --fp32-layers and --calib "
                         "apply when converting an fp32 ONNX; pass that one instead")
    if has == "int8" and meta.get("quantization", {}).get("target") != "tensorrt":
        raise UsageError(f"{onnx_path.name} is quantized for onnxruntime on CPUs (uint8 "
                         "activations); TensorRT needs symmetric int8: export it again "
                         "with --precision int8 --int8-target tensorrt")
    profile = optimization_profile(meta, o.min_shape, o.opt_shape, o.max_shape)
    return EnginePlan(meta, wanted, convert_to, profile)


def _check_onnx_file(path: Path) -> None:
    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise SsrDeployError(f"{path} is not a readable ONNX file ({type(e).__name__}); "
                             "export it again with `ssr-deploy export onnx`") from None


def onnx_for_tensorrt(model: onnx.ModelProto, meta: dict[str, Any]
                      ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The graph TensorRT parses, and the metadata the engine gets. uint8 label maps come
    out of an ArgMax -> Cast(uint8); TensorRT's uint8 is meant for I/O of plain data, so the
    engine returns int32 labels (the runtime narrows them) instead of trusting that cast."""
    if meta["output"].get("kind") != "labels" or meta["output"]["dtype"] != "uint8":
        return model, meta
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    name = meta["output"]["name"]
    cast = next((n for n in copy.graph.node if name in n.output and n.op_type == "Cast"), None)
    if cast is None:
        raise SsrDeployError(f"the labels output {name!r} does not come from a Cast; export "
                             "the ONNX again with `ssr-deploy export onnx`")
    for attribute in cast.attribute:
        if attribute.name == "to":
            attribute.i = onnx.TensorProto.INT32
    for output in copy.graph.output:
        if output.name == name:
            output.type.tensor_type.elem_type = onnx.TensorProto.INT32
    return copy, {**meta, "output": {**meta["output"], "dtype": "int32"}}


def engine_metadata(onnx_meta: dict[str, Any], onnx_path: Path, trt_version: str,
                    gpu: dict[str, str], o: EngineOptions, profile: Profile,
                    build_seconds: float) -> dict[str, Any]:
    """The ONNX's metadata (minus its file facts) plus what the engine is tied to."""
    meta = {k: v for k, v in onnx_meta.items() if k not in ("file", "sha256")}
    meta.update({
        "onnx": onnx_path.name, "onnx_sha256": onnx_meta.get("sha256"),
        "precision": onnx_meta.get("precision", "fp32"), "profile": profile.to_dict(),
        "tensorrt": {"version": trt_version, "gpu": gpu, "opt_level": o.opt_level,
                     "workspace_gib": o.workspace_gib, "strongly_typed": True},
        "build_seconds": round(build_seconds, 2),
    })
    return meta


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: EngineOptions,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert the ONNX to the asked precision if needed, parse it into a strongly typed
    network, build, and write the engine and its sidecar atomically.

    Returns the engine's metadata. Reuses and updates ``options.timing_cache``."""
    step = progress or (lambda stage: None)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    plan = validate(onnx_path, engine_path, options)
    trt = import_tensorrt()
    from ssr_deploy.runtime.cuda import gpu_info

    start = time.perf_counter()
    step("precision")
    onnx_meta = plan.onnx_meta
    if plan.convert_to is not None:
        converted = prec.convert_precision(onnx_path, plan.convert_to,
                                           options.precision_options(plan.precision))
        onnx_path, onnx_meta = converted.path, read_sidecar(converted.path)
    model, engine_meta = onnx_for_tensorrt(onnx.load(str(onnx_path)), onnx_meta)

    step("parse")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SsrDeployError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 2**30))
    config.builder_optimization_level = options.opt_level
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(plan.profile.name, plan.profile.min, plan.profile.opt,
                          plan.profile.max)
    config.add_optimization_profile(trt_profile)
    timing_cache = config.create_timing_cache(_read_bytes(options.timing_cache) or b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    step("build")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SsrDeployError(f"TensorRT could not build an engine from {onnx_path}; rerun with "
                             "a larger --workspace, and see the TensorRT log above")
    step("write")
    if options.timing_cache:
        data = bytes(timing_cache.serialize())
        atomic_write(options.timing_cache, lambda tmp: tmp.write_bytes(data))
    meta = engine_metadata(engine_meta, onnx_path, trt.__version__, gpu_info(), options,
                           plan.profile, time.perf_counter() - start)
    publish_models([(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)), meta)])
    return read_sidecar(engine_path)


def _read_bytes(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path and Path(path).is_file() else None

