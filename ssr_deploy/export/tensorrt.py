"""TensorRT engines from verified ONNX, with the TensorRT >= 10 Python API.

Everything that needs no TensorRT (options, profiles, calibration batches and cache,
metadata, compatibility) lives in ``profiles.py`` and ``calibration.py`` and is tested on
any machine; this module is the part that needs TensorRT and a GPU.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.export.calibration import CalibrationBatches, CalibrationCache
from ssr_deploy.export.metadata import read_sidecar, write_sidecar
from ssr_deploy.export.profiles import Profile, optimization_profile
from ssr_deploy.io import atomic_write

PRECISIONS = ("fp32", "fp16", "int8")
STAGES = ("parse", "build", "write")


@dataclass(frozen=True)
class EngineOptions:
    precision: str = "fp16"  # fp32 | fp16 | int8 (int8 also allows fp16 kernels)
    calib_dir: str | None = None
    calib_n: int = 500
    calib_cache: str | None = None  # default: <engine>.calib-cache
    min_shape: str | None = None  # BxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    workspace_gib: float = 4.0
    timing_cache: str | None = None
    opt_level: int = 3
    fp32_layers: tuple[str, ...] = ()  # fnmatch patterns of layer names pinned to FP32


def validate(onnx_path: str | Path, engine_path: str | Path, o: EngineOptions
             ) -> tuple[dict[str, Any], Profile]:
    """Every check that needs no TensorRT, before any work: returns (ONNX metadata, profile)."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if o.precision not in PRECISIONS:
        raise SsrDeployError(f"precision {o.precision!r} is not known; use fp32, fp16 or int8")
    if not onnx_path.is_file():
        raise SsrDeployError(f"ONNX file {onnx_path} does not exist")
    if not engine_path.parent.is_dir():
        raise SsrDeployError(f"cannot write {engine_path}: folder {engine_path.parent} does not "
                             "exist; create it first or choose another output path")
    if o.precision == "int8" and not (o.calib_dir or calib_cache(engine_path, o).read()):
        raise SsrDeployError("--int8 needs calibration data: --calib DIR with representative "
                             "images (or an existing --calib-cache FILE)")
    if not 0 <= o.opt_level <= 5:
        raise SsrDeployError(f"--opt-level {o.opt_level}: TensorRT takes 0 to 5 (default 3)")
    if o.workspace_gib <= 0:
        raise SsrDeployError(f"--workspace {o.workspace_gib}: give a size in GiB above 0")
    _check_onnx_file(onnx_path)
    meta = read_sidecar(onnx_path)
    return meta, optimization_profile(meta, o.min_shape, o.opt_shape, o.max_shape)


def calib_cache(engine_path: str | Path, o: EngineOptions) -> CalibrationCache:
    return CalibrationCache(o.calib_cache or f"{engine_path}.calib-cache")


def _check_onnx_file(path: Path) -> None:
    import onnx

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise SsrDeployError(f"{path} is not a readable ONNX file ({type(e).__name__}); "
                             "export it again with `ssr-deploy export onnx`") from None


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise SsrDeployError("TensorRT is not installed: on a machine with an NVIDIA GPU, pip "
                             "install 'ssr-deploy[gpu]', or use the docker/Dockerfile image"
                             ) from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise SsrDeployError(f"TensorRT {trt.__version__} is too old: ssr-deploy needs "
                             "TensorRT >= 10")
    return trt


def engine_metadata(onnx_meta: dict[str, Any], onnx_path: Path, trt_version: str,
                    gpu: dict[str, str], o: EngineOptions, profile: Profile,
                    build_seconds: float) -> dict[str, Any]:
    """The ONNX's metadata (minus its file facts) plus what the engine is tied to."""
    meta = {k: v for k, v in onnx_meta.items() if k not in ("file", "sha256")}
    meta.update({
        "onnx": onnx_path.name, "onnx_sha256": onnx_meta.get("sha256"),
        "precision": o.precision, "profile": profile.to_dict(),
        "tensorrt": {"version": trt_version, "gpu": gpu, "opt_level": o.opt_level,
                     "workspace_gib": o.workspace_gib, "fp32_layers": list(o.fp32_layers)},
        "build_seconds": round(build_seconds, 2),
    })
    return meta


def build_engine(onnx_path: str | Path, engine_path: str | Path, options: EngineOptions,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Parse ``onnx_path``, build a serialized engine, write it and its sidecar atomically.

    Returns the engine's metadata. Reuses and updates ``options.timing_cache``."""
    step = progress or (lambda stage: None)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    onnx_meta, profile = validate(onnx_path, engine_path, options)
    trt = import_tensorrt()
    from ssr_deploy.runtime.cuda import gpu_info

    start = time.perf_counter()
    step("parse")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SsrDeployError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * 2**30))
    config.builder_optimization_level = options.opt_level
    if options.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(profile.name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    _pin_fp32_layers(trt, network, config, options.fp32_layers)

    cache_bytes = _read_bytes(options.timing_cache)
    timing_cache = config.create_timing_cache(cache_bytes or b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)

    calibrator = None
    if options.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(trt, onnx_meta, profile, options.calib_dir,
                                     options.calib_n, calib_cache(engine_path, options))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(trt_profile)

    step("build")
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if serialized is None:
        raise SsrDeployError(f"TensorRT could not build an engine from {onnx_path}; rerun with "
                             "a larger --workspace or --fp32, and see the TensorRT log above")
    step("write")
    if options.timing_cache:
        data = bytes(timing_cache.serialize())
        atomic_write(options.timing_cache, lambda tmp: tmp.write_bytes(data))
    atomic_write(engine_path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    meta = engine_metadata(onnx_meta, onnx_path, trt.__version__, gpu_info(), options, profile,
                           time.perf_counter() - start)
    try:
        write_sidecar(engine_path, meta)
    except BaseException:
        engine_path.unlink(missing_ok=True)
        raise
    return read_sidecar(engine_path)


def _read_bytes(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path and Path(path).is_file() else None


def matching_layers(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    """Layer names matching any fnmatch pattern; a pattern matching none is an error."""
    matched = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise SsrDeployError(f"--fp32-layers {pattern!r} matches no layer; names look like "
                                 f"{', '.join(names[:3])} (see `ssr-deploy profile`)")
        matched += [n for n in hits if n not in matched]
    return matched


def _pin_fp32_layers(trt, network, config, patterns: tuple[str, ...]) -> None:
    if not patterns:
        return
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    pinned = set(matching_layers([layer.name for layer in layers], patterns))
    for layer in layers:
        if layer.name in pinned:
            layer.precision = trt.float32
            for i in range(layer.num_outputs):
                layer.set_output_type(i, trt.float32)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)


def make_calibrator(trt, meta: dict[str, Any], profile: Profile, calib_dir: str | None,
                    calib_n: int, cache: CalibrationCache):
    """An IInt8EntropyCalibrator2 feeding CalibrationBatches. With dynamic shapes TensorRT
    calibrates at the calibration profile's opt shape, so batches have that batch and size."""
    from ssr_deploy.runtime.cuda import DeviceBuffer, upload

    batch = profile.opt[0]
    batches = None if cache.read() else CalibrationBatches(
        calib_dir, meta["input"], _hw(profile.opt, meta), batch, calib_n)

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches) if batches else iter(())
            self.buffer = DeviceBuffer(batches.nbytes) if batches else None

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names):
            data = next(self.batches, None)
            if data is None:
                return None
            upload(self.buffer.ptr, data)
            return [self.buffer.ptr]

        def read_calibration_cache(self):
            return cache.read()

        def write_calibration_cache(self, data) -> None:
            cache.write(bytes(data))

        def free(self) -> None:
            if self.buffer is not None:
                self.buffer.free()

    return EntropyCalibrator()


def _hw(shape: tuple[int, ...], meta: dict[str, Any]) -> tuple[int, int]:
    return (shape[1], shape[2]) if meta["input"]["layout"] == "NHWC" else (shape[2], shape[3])
