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
    """The graph TensorRT parses, and the metadata the engine gets. uint8 label maps come out
    of an ArgMax -> Cast(uint8); TensorRT converts uint8 only to and from fp32 and fp16 (its
    ``DataType.UINT8``), so a Cast to float goes in between: ArgMax -> Cast(float) ->
    Cast(uint8) (class ids are exact in fp32), and the engine returns uint8 labels, a quarter
    of int32's download. ``int32_labels``: the labels' cast widened to int32 instead (the
    runtime narrows them), the fallback for a TensorRT that still refuses. A uint8 input must
    feed only Casts (TensorRT takes uint8 into nothing else): an ONNX exported before that
    rule is refused in one line."""
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
        if int32_labels:
            for attribute in cast.attribute:
                if attribute.name == "to":
                    attribute.i = onnx.TensorProto.INT32
            for output in copy.graph.output:
                if output.name == name:
                    output.type.tensor_type.elem_type = onnx.TensorProto.INT32
        else:
            _through_float(copy.graph, cast)
    if int32_labels and meta is not None and ModelSpec.from_dict(meta).output.name in narrowed:
        meta = {**meta, "output": {**meta["output"], "dtype": "int32"}}  # the sidecar written
    return copy, meta


def _through_float(graph: onnx.GraphProto, cast: onnx.NodeProto) -> None:
    """Put a Cast(float) before ``cast`` (a Cast to uint8), unless its input is already one."""
    source = cast.input[0]
    if any(source in n.output and n.op_type == "Cast" and onnx.helper.get_attribute_value(
            next(a for a in n.attribute if a.name == "to")) == onnx.TensorProto.FLOAT
           for n in graph.node):
        return
    widened = f"{source}__float"
    to_float = onnx.helper.make_node("Cast", [source], [widened], name=f"{cast.name}__float",
                                     to=onnx.TensorProto.FLOAT)
    graph.node.insert(list(graph.node).index(cast), to_float)
    cast.input[0] = widened


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
    elif settings.timing_cache:
        timing_cache = full_tensorrt_timing_cache(config, settings.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SsrDeployError(f"{library.title} could not build an engine from {source}: "
                             f"{'; '.join(logger.errors) or 'no reason given'}"
                             + ("; Turing runs fp16 engines: build fp16 for 7.5" if any(
                                 "Turing" in e for e in logger.errors) else ""))
    if timing_cache is not None:
        data = bytes(timing_cache.serialize())
        atomic_write(settings.timing_cache, lambda tmp: tmp.write_bytes(data))
    return BuiltNetwork(bytes(serialized), network_io(trt, network), meta)


def full_tensorrt_timing_cache(config, path: str | Path):
    """(Named ``full_tensorrt_*``: the names test checks it against full TensorRT's.) Full
    TensorRT's timing cache from ``path`` (empty where there is none yet), attached to
    the build; the cache to write back after it, or None where ``path`` holds another
    TensorRT release's or GPU's cache: TensorRT refuses it (``set_timing_cache`` returns
    False), the build runs without it, said, and the file is left as it is."""
    saved = _read_bytes(path) or b""
    cache = config.create_timing_cache(saved)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    print(f"note: the timing cache {path} was made by another TensorRT release or GPU: this "
          "build runs without it and leaves it as it is (give another --timing-cache for this "
          "GPU)", file=sys.stderr)
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise SsrDeployError("TensorRT refused an empty timing cache; build without "
                             "--timing-cache")
    return None


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
