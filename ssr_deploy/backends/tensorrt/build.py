"""An ONNX becomes a TensorRT engine here, and only here: the graph rewritten for what
TensorRT takes (uint8 only into Casts, int32 labels), parsed into a strongly typed network
(TensorRT 10.3+ and 11, TensorRT-RTX 1.7+), built with one optimisation profile, and the
sidecar block that ties the engine to its builder and GPU. ``export engine`` and the latency
table's part timer both call ``build_network``; it runs for real wherever TensorRT-RTX is
installed (no GPU needed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.backends.tensorrt.engine import TensorIO, dtype_names
from ssr_deploy.backends.tensorrt.library import (
    RTX_DEFAULT_TARGETS,
    TensorRT,
    rtx_targets,
    shared_logger,
)
from ssr_deploy.backends.tensorrt.profiles import Profile
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.io import atomic_write
from ssr_deploy.spec import ModelSpec


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


def onnx_for_tensorrt(model: onnx.ModelProto, meta: dict[str, Any] | None = None,
                      int32_labels: bool = False
                      ) -> tuple[onnx.ModelProto, dict[str, Any] | None]:
    """The graph TensorRT parses, and the metadata the engine gets. uint8 label maps come
    out of an ArgMax -> Cast(uint8), which TensorRT's Cast takes (every conversion between
    its types since 10.x; TensorRT-RTX 1.7 builds it, checked here): the engine returns uint8
    labels, a quarter of int32's download. ``int32_labels``: the cast widened to int32
    instead (the runtime narrows them), the fallback for a TensorRT that refuses it. A uint8
    input must feed only Casts (TensorRT takes uint8 into nothing else): an ONNX exported
    before that rule is refused in one line."""
    check_uint8_inputs(model)
    graph = model.graph
    narrowed = [o.name for o in graph.output
                if o.type.tensor_type.elem_type == onnx.TensorProto.UINT8]
    if not narrowed or not int32_labels:
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
    if meta is not None and ModelSpec.from_dict(meta).output.name in narrowed:
        meta = {**meta, "output": {**meta["output"], "dtype": "int32"}}  # the sidecar written
    return copy, meta


def has_uint8_outputs(model: onnx.ModelProto) -> bool:
    return any(o.type.tensor_type.elem_type == onnx.TensorProto.UINT8 for o in model.graph.output)


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
    for a static graph). ``source``: the ONNX's path, for messages and external data. uint8
    labels stay uint8; where the library refuses that, the build is retried once with int32
    labels (said on stderr)."""
    try:
        return _build(library, model, source, settings, profile, meta, progress, False)
    except SsrDeployError as e:
        if not has_uint8_outputs(model):
            raise
        print(f"[{library.title}] uint8 labels refused ({str(e)[:120]}); building with int32 "
              "labels, which the runtime narrows", file=sys.stderr)
        return _build(library, model, source, settings, profile, meta, progress, True)


def _build(library: TensorRT, model: onnx.ModelProto, source: str | Path,
           settings: BuildSettings, profile: Profile | None, meta: dict[str, Any] | None,
           progress: Callable[[str], None] | None, int32_labels: bool) -> BuiltNetwork:
    trt = library.module
    model, meta = onnx_for_tensorrt(model, meta, int32_labels)
    logger = shared_logger(library)
    logger.errors.clear()
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


def engine_metadata(onnx_meta: dict[str, Any], onnx_path: Path, library: TensorRT,
                    gpu: dict[str, str] | None, settings: BuildSettings, profile: Profile,
                    build_seconds: float) -> dict[str, Any]:
    """The ONNX's metadata (minus its file facts) plus what the engine is tied to: the
    builder and its version, and the GPU it was built on (full TensorRT) or the compute
    capabilities it targets (TensorRT-RTX)."""
    onnx_spec = ModelSpec.from_dict(onnx_meta)
    meta = {k: v for k, v in onnx_meta.items() if k not in ("file", "sha256")}
    built = {"builder": library.builder, "version": library.version, "gpu": gpu,
             "opt_level": settings.opt_level, "workspace_gib": settings.workspace_gib,
             "strongly_typed": True}
    if library.is_rtx:
        targets = settings.compute_capabilities
        built["compute_capabilities"] = list(targets or RTX_DEFAULT_TARGETS)
        built["compute_capabilities_default"] = not targets
    meta.update({
        "onnx": onnx_path.name, "onnx_sha256": onnx_spec.sha256,
        "precision": onnx_spec.precision, "profile": profile.to_dict(),
        "tensorrt": built, "build_seconds": round(build_seconds, 2),
    })
    return meta


def _read_bytes(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path and Path(path).is_file() else None
