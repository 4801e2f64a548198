"""``ModelSpec``: what an exported model is, typed, the one contract between export and the
runtime. Export writes it as the sidecar ``<model file>.json`` (and, for ONNX, as
``metadata_props``); every backend reads only it. No torch, no export/train imports here.

    spec = ModelSpec.load("model.onnx")      # reads and validates model.onnx.json
    spec.input.size, spec.batch_range, spec.output_shape((4, 512, 1024, 3))
"""

from __future__ import annotations

import hashlib
import math
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ssr_deploy
from ssr_deploy.errors import SpecError, SsrDeployError, UsageError
from ssr_deploy.genotype import Genotype, default_palette
from ssr_deploy.io import atomic_write_text, dumps_compact, read_json
from ssr_deploy.limits import MAX_BATCH, MAX_SIDE
from ssr_deploy.names import NAME, TENSOR_NAME, name_problem

SPEC_FORMAT = 1  # the sidecar layout ssr-deploy 0.1 wrote; still read and written as is
DTYPES = ("uint8", "int32", "int64", "float16", "float32")
LAYOUTS = {"NHWC": 4, "NCHW": 4, "NHW": 3}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: an ONNX graph's, and so a TensorRT engine's (built in its ONNX's precision)
ONNX_PRECISIONS = ("fp32", "fp16", "int8")
#: an OpenVINO IR's
IR_PRECISIONS = ("fp32", "bf16", "int8")
#: what OpenVINO computes in (its INFERENCE_PRECISION_HINT)
HINT_PRECISIONS = ("fp32", "bf16")
#: default label agreement with fp32 each precision must reach (fp32: another runtime's)
MIN_AGREEMENT = {"fp32": 0.999, "fp16": 0.999, "bf16": 0.995, "int8": 0.995}
#: what a CPU path must reach to be called verified, by the exports, the demo and bench
CPU_GATE = MIN_AGREEMENT["int8"]


INPUT_FORMATS = ("float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb")
OUTPUT_FORMATS = ("logits", "labels")
LABEL_DTYPES = ("uint8", "int32")


@dataclass(frozen=True)
class IOFormat:
    """What the exported graph takes and returns."""

    input: str = "float-nchw"
    output: str = "logits"
    label_dtype: str = "uint8"

    def __post_init__(self) -> None:
        for value, allowed, flag in ((self.input, INPUT_FORMATS, "--input"),
                                     (self.output, OUTPUT_FORMATS, "--output"),
                                     (self.label_dtype, tuple(LABEL_DTYPES), "--label-dtype")):
            if value not in allowed:
                raise UsageError(f"{flag} {value!r} is not known; use one of "
                                 f"{', '.join(allowed)}")

    @property
    def input_name(self) -> str:
        return "images"

    @property
    def output_name(self) -> str:
        return self.output

    @property
    def uint8_input(self) -> bool:
        return self.input.startswith("uint8")

    @property
    def color(self) -> str | None:
        """The channel order of uint8 frames (bgr, rgb); None for float-nchw, whose order is
        the genotype's (``InputSpec.color``)."""
        return self.input.rsplit("-", 1)[-1] if self.uint8_input else None

    @property
    def dtype(self) -> str:
        return "uint8" if self.uint8_input else "float32"


#: what the runtime moves fastest: uint8 BGR frames in (1.5 MB per 512x1024 frame, against
#: 6 MB as float), class ids out (argmax in the graph)
RUNTIME_IO = IOFormat("uint8-nhwc-bgr", "labels")


def runtime_io(num_classes: int) -> IOFormat:
    """``RUNTIME_IO`` with class ids wide enough for ``num_classes`` (int32 past 256)."""
    return IOFormat(RUNTIME_IO.input, RUNTIME_IO.output,
                    "uint8" if num_classes <= 256 else "int32")


@dataclass(frozen=True)
class Dynamic:
    """Dynamic ranges of an export: None where the dimension is fixed."""

    batch: tuple[int, int, int] | None = None  # (min, opt, max)
    size: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batch": None, "size": None}
        if self.batch:
            out["batch"] = dict(zip(("min", "opt", "max"), self.batch, strict=True))
        if self.size:
            out["size"] = {k: list(v) for k, v in zip(("min", "opt", "max"), self.size,
                                                      strict=True)}
        return out


def tensor_specs(io: IOFormat, genotype: Genotype, batch: int, size: tuple[int, int],
                 num_classes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output specs: name, layout, dtype, static shape (-1 where dynamic is decided
    by the caller), colour order and normalisation."""
    spec = genotype.input
    multiple, minimum = genotype.size_rule()
    h, w = size
    if io.uint8_input:
        inp = {"name": io.input_name, "layout": "NHWC", "dtype": "uint8", "color": io.color,
               "shape": [batch, h, w, 3], "normalization": "in-graph"}
    else:
        inp = {"name": io.input_name, "layout": "NCHW", "dtype": "float32", "color": spec.color,
               "shape": [batch, 3, h, w], "normalization": "by-caller"}
    inp.update({"size": [h, w], "mean": list(spec.mean), "std": list(spec.std), "scale": 1 / 255,
                "size_multiple": multiple, "min_size": minimum})
    if io.output == "logits":
        out = {"name": io.output_name, "kind": "logits", "layout": "NCHW", "dtype": "float32",
               "shape": [batch, num_classes, h, w]}
    else:
        out = {"name": io.output_name, "kind": "labels", "layout": "NHW", "dtype": io.label_dtype,
               "shape": [batch, h, w]}
    return inp, out


def build_metadata(genotype: Genotype, io: IOFormat, batch: int, size: tuple[int, int],
                   num_classes: int, dynamic: Dynamic, opset: int | None,
                   producer: dict[str, str] | None = None) -> dict[str, Any]:
    """The sidecar content of a model exported from ``genotype`` with ``io``."""
    inp, out = tensor_specs(io, genotype, batch, size, num_classes)
    for spec in (inp, out):  # -1 marks a dynamic dimension, as ONNX Runtime and Triton do
        if dynamic.batch:
            spec["shape"][0] = -1
        if dynamic.size:
            first = 1 if spec["layout"] in ("NHWC", "NHW") else 2
            spec["shape"][first:first + 2] = [-1, -1]
    classes = list(genotype.classes) if num_classes == genotype.num_classes else [
        f"class {i}" for i in range(num_classes)]
    palette = [list(c) for c in genotype.palette] if num_classes == genotype.num_classes else [
        list(c) for c in default_palette(num_classes)]
    return {
        "metadata_format": SPEC_FORMAT,
        "genotype": {"name": genotype.name, "hash": genotype.hash},
        "classes": classes,
        "palette": palette,
        "input": inp,
        "output": out,
        "dynamic": dynamic.to_dict(),
        "opset": opset,
        "producer": {"ssr_deploy": ssr_deploy.__version__, "python": platform.python_version(),
                     **(producer or {})},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``; ``model.engine`` -> ``model.engine.json`` (one
    rule, so an engine built beside its ONNX never overwrites the ONNX's sidecar)."""
    path = Path(model_path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise SpecError(f"{where}.{key} is missing; export the model again")
    value = d[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SpecError(f"{where}.{key} is {value!r}, not {names}; export the model again")
    return value


def _choice(value: Any, allowed: tuple[str, ...] | dict, where: str) -> str:
    if value not in allowed:
        raise SpecError(f"{where} is {value!r}; one of {', '.join(allowed)} was expected")
    return value


def _ranges(value: Any, where: str, source: str, limit: int, pair: bool | None = False
            ) -> dict | None:
    """``{"min", "opt", "max"}`` of ints (``pair``: [h, w]; None: a shape of any rank),
    each within 1..``limit`` and min <= opt <= max; None where absent."""
    if value is None:
        return None

    def ok(v: Any) -> bool:
        if pair is False:
            return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit
        return (isinstance(v, list) and (pair is None or len(v) == 2) and 0 < len(v) <= 8
                and all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= limit
                        for x in v))

    if not isinstance(value, dict) or not all(ok(value.get(k)) for k in ("min", "opt", "max")):
        raise SpecError(f"{source}: {where} is {str(value)[:60]}; it must hold min, opt and max, "
                        f"each {'a number' if pair is False else 'a shape'} of 1 to {limit:,}; "
                        "export the model again")
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(
        value)


def _triple(value: Any, where: str, source: str, positive: bool = False
            ) -> tuple[float, float, float]:
    """Three finite numbers (per channel), above 0 where ``positive``."""
    if not (isinstance(value, list) and len(value) == 3 and all(_finite(v) for v in value)
            and (not positive or all(v > 0 for v in value))):
        rule = "three finite numbers above 0" if positive else "three finite numbers"
        raise SpecError(f"{source}: {where} is {str(value)[:40]}; it must be {rule}, one per "
                        "channel: export the model again")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _positive(value: Any, where: str, source: str) -> float:
    if not (_finite(value) and value > 0):
        raise SpecError(f"{source}: {where} is {str(value)[:40]}; it must be a finite number "
                        "above 0: export the model again")
    return float(value)


def _bounded(value: int, where: str, low: int, high: int, source: str) -> int:
    if not low <= value <= high:
        raise SpecError(f"{source}: {where} is {value}; it must be {low} to {high}: export the "
                        "model again")
    return value


def _check_shape_matches_size(inp: InputTensor, source: str) -> None:
    """The input's fixed dims must be its size (and 3 channels), as the export writes them."""
    h_at, w_at, c_at = (1, 2, 3) if inp.layout == "NHWC" else (2, 3, 1)
    for at, want, what in ((h_at, inp.size[0], "height"), (w_at, inp.size[1], "width"),
                           (c_at, 3, "channels")):
        if inp.shape[at] not in (-1, want):
            raise SpecError(f"{source}: input.shape {list(inp.shape)} has {what} "
                            f"{inp.shape[at]}, its size says {want}; export the model again")


def _shape(value: Any, rank: int, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != rank or not all(
            isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1)
            for d in value):
        raise SpecError(f"{where} is {value!r}; {rank} dimensions, each > 0 or -1 (dynamic)")
    return tuple(value)


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor. ``shape`` has -1 where a dimension is dynamic."""

    name: str
    dtype: str
    layout: str  # NHWC | NCHW (input, logits) or NHW (labels)
    shape: tuple[int, ...]

    @property
    def hw_axes(self) -> tuple[int, int]:
        return (1, 2) if self.layout in ("NHWC", "NHW") else (2, 3)


@dataclass(frozen=True)
class InputTensor(TensorSpec):
    """The frames a model takes: uint8 NHWC with normalisation in the graph, or float32 NCHW
    normalised by the caller as ``(pixel * scale - mean) / std``."""

    color: str = "bgr"
    normalization: str = "in-graph"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    size: tuple[int, int] = (512, 1024)  # the export (or profile optimum) size, (H, W)
    size_multiple: int = 8
    min_size: int = 16

    def batch_shape(self, batch: int, h: int, w: int) -> tuple[int, ...]:
        return (batch, h, w, 3) if self.layout == "NHWC" else (batch, 3, h, w)


@dataclass(frozen=True)
class OutputTensor(TensorSpec):
    kind: str = "labels"  # labels (N, H, W) | logits (N, classes, H, W)


@dataclass(frozen=True)
class OpenVinoIR:
    """What an OpenVINO IR's sidecar says about it: the OpenVINO that wrote it, the float
    precision it was verified at and runs at (``fp32`` | ``bf16``; an int8 IR's float parts),
    and the sha256 of its weights file (``model.bin``, beside the .xml)."""

    version: str
    inference_precision: str
    bin_sha256: str
    verified_on: str | None = None  # the CPU it was verified on

    @classmethod
    def from_dict(cls, d: Any, source: str) -> OpenVinoIR:
        if not isinstance(d, dict):
            raise SpecError(f"{source}: openvino is {str(d)[:40]}, not an object; export the "
                            "model again")
        where = f"{source}: openvino"
        return cls(version=_need(d, "version", str, where),
                   inference_precision=_choice(_need(d, "inference_precision", str, where),
                                               HINT_PRECISIONS, f"{where}.inference_precision"),
                   bin_sha256=_need(d, "bin_sha256", str, where),
                   verified_on=_text(d.get("verified_on")))


@dataclass(frozen=True)
class Gpu:
    name: str | None = None
    compute_capability: str | None = None  # "8.9"


@dataclass(frozen=True)
class EngineBuild:
    """What a TensorRT engine's sidecar (``tensorrt``) says it is tied to: the library and
    its version, and the GPU it was built on (full TensorRT) or the compute capabilities it
    targets (TensorRT-RTX; as recorded at the build, defaults included)."""

    builder: str = "tensorrt"  # tensorrt | tensorrt-rtx
    version: str | None = None
    gpu: Gpu | None = None
    compute_capabilities: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Any, source: str) -> EngineBuild:
        if not isinstance(d, dict):
            raise SpecError(f"{source}: tensorrt is {str(d)[:40]}, not an object; build the "
                            "engine again")
        gpu = d.get("gpu")
        ccs = d.get("compute_capabilities") or ()
        if not (gpu is None or isinstance(gpu, dict)) or not isinstance(ccs, (list, tuple)):
            raise SpecError(f"{source}: tensorrt.gpu or .compute_capabilities is malformed; "
                            "build the engine again")
        version = d.get("version")
        return cls(builder=_choice(d.get("builder", "tensorrt"), ("tensorrt", "tensorrt-rtx"),
                                   f"{source}: tensorrt.builder"),
                   version=None if version is None else str(version),
                   gpu=None if gpu is None else Gpu(
                       _text(gpu.get("name")), _text(gpu.get("compute_capability"))),
                   compute_capabilities=tuple(str(c) for c in ccs))


@dataclass(frozen=True)
class PrecisionCheck:
    """A converted model's check against its fp32 graph (``precision_check``)."""

    label_agreement: float
    miou_vs_fp32: float | None = None
    min_agreement: float | None = None

    @classmethod
    def from_dict(cls, d: Any, source: str) -> PrecisionCheck:
        if not isinstance(d, dict) or not _finite(d.get("label_agreement")):
            raise SpecError(f"{source}: precision_check is malformed; export the model again")
        miou, low = d.get("miou_vs_fp32"), d.get("min_agreement")
        return cls(float(d["label_agreement"]), float(miou) if _finite(miou) else None,
                   float(low) if _finite(low) else None)


@dataclass(frozen=True)
class Quantization:
    """An int8 model's record (``quantization``): the runtime it was made for (``tensorrt``
    | ``cpu`` | ``openvino``), an OpenVINO IR's int8 ``form`` (``s8`` | ``u8`` | ``u8-7bit``)
    and the ``cpu`` it was chosen and verified on (``ssr_deploy.cpu.Cpu.to_dict``), the
    forms tried there, and, with ``--fallback auto``, what was kept out of int8."""

    target: str | None = None
    method: str | None = None
    fallback: dict[str, Any] | None = None
    form: str | None = None
    cpu: dict[str, Any] | None = None
    candidates: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, d: Any, source: str) -> Quantization:
        if not isinstance(d, dict) or not isinstance(d.get("fallback") or {}, dict) or not \
                isinstance(d.get("cpu") or {}, dict) or not isinstance(
                    d.get("candidates") or [], list):
            raise SpecError(f"{source}: quantization is malformed; export the model again")
        return cls(_text(d.get("target")), _text(d.get("method")), d.get("fallback"),
                   _text(d.get("form")), d.get("cpu"),
                   tuple(c for c in d.get("candidates") or () if isinstance(c, dict)))


def _records(d: dict[str, Any], source: str) -> dict[str, Any]:
    """What a sidecar records beside the tensors: the file facts, and each target's own
    section (an IR's, an engine's, a converted or quantized model's), typed."""
    return {
        "openvino": OpenVinoIR.from_dict(d["openvino"], source) if "openvino" in d else None,
        "engine": EngineBuild.from_dict(d["tensorrt"], source) if "tensorrt" in d else None,
        "precision_check": PrecisionCheck.from_dict(d["precision_check"], source)
        if d.get("precision_check") else None,
        "quantization": Quantization.from_dict(d["quantization"], source)
        if d.get("quantization") else None,
        **{k: _text(d.get(k)) for k in ("file", "sha256", "onnx", "onnx_sha256", "fp32_onnx",
                                        "fp32_onnx_sha256")},
        "build_seconds": float(d["build_seconds"]) if _finite(d.get("build_seconds"))
        else None,
        "cache": dict(d["cache"]) if isinstance(d.get("cache"), dict) else None}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class ModelSpec:
    """An exported model, as every backend sees it."""

    input: InputTensor
    output: OutputTensor
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    genotype_name: str
    genotype_hash: str
    precision: str = "fp32"
    batch: tuple[int, int, int] | None = None  # dynamic (min, opt, max); None: fixed
    sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None  # engine
    openvino: OpenVinoIR | None = None  # an OpenVINO IR's
    engine: EngineBuild | None = None  # a TensorRT engine's (the sidecar's ``tensorrt``)
    precision_check: PrecisionCheck | None = None  # a converted model's
    quantization: Quantization | None = None  # an int8 model's
    file: str | None = None  # the model file the sidecar names, and its sha256
    sha256: str | None = None
    onnx: str | None = None  # an engine's ONNX, and its sha256
    onnx_sha256: str | None = None
    fp32_onnx: str | None = None  # a converted model's fp32 ONNX, and its sha256
    fp32_onnx_sha256: str | None = None
    build_seconds: float | None = None
    #: an engine the engine cache built: the key it was built for (``backends/tensorrt/
    #: cache.py``), compared whole
    cache: dict[str, Any] | None = None
    producer: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # ---- derived facts, defined once ---------------------------------------------------
    @property
    def batch_range(self) -> tuple[int, int]:
        """(smallest, largest) batch the model takes: its engine profile, its dynamic range,
        or its fixed batch."""
        if self.profile:
            return self.profile[0][0], self.profile[2][0]
        if self.batch:
            return self.batch[0], self.batch[2]
        return (self.input.shape[0],) * 2

    @property
    def fixed_batch(self) -> int | None:
        """The batch a static-batch model needs every input padded to, else None: a graph
        exported with a fixed batch, or an engine whose profile allows one batch only (an
        engine built from a batch-4 ONNX takes 4 and nothing else)."""
        low, high = self.batch_range
        fixed = self.input.shape[0] > 0 or self.profile is not None
        return low if low == high and fixed else None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input shape."""
        b = input_shape[0]
        h, w = (input_shape[i] for i in self.input.hw_axes)
        return (b, len(self.classes), h, w) if self.output.layout == "NCHW" else (b, h, w)

    @property
    def largest_input(self) -> tuple[int, ...]:
        """The largest input shape (buffers are sized for it)."""
        if self.profile:
            return self.profile[2]
        h, w = self.sizes[2] if self.sizes else self.input.size
        return self.input.batch_shape(self.batch_range[1], h, w)

    # ---- dict <-> spec -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = "sidecar") -> ModelSpec:
        """Validate a sidecar's content; a clear line naming the field for anything wrong."""
        if not isinstance(d, dict):
            raise SpecError(f"{source} is not a JSON object; export the model again")
        fmt = d.get("metadata_format")
        if fmt != SPEC_FORMAT:
            raise SpecError(f"{source} is metadata format {fmt!r}, this ssr-deploy reads "
                            f"{SPEC_FORMAT}; export again with this ssr-deploy")
        i = _need(d, "input", dict, "input")
        o = _need(d, "output", dict, "output")
        in_layout = _choice(_need(i, "layout", str, "input"), ("NHWC", "NCHW"), "input.layout")
        out_layout = _choice(_need(o, "layout", str, "output"), LAYOUTS, "output.layout")
        size = _shape(_need(i, "size", list, "input"), 2, "input.size")
        inp = InputTensor(
            name=_need(i, "name", str, "input"),
            dtype=_choice(_need(i, "dtype", str, "input"), DTYPES, "input.dtype"),
            layout=in_layout, shape=_shape(i.get("shape"), LAYOUTS[in_layout], "input.shape"),
            color=_choice(_need(i, "color", str, "input"), ("bgr", "rgb"), "input.color"),
            normalization=_choice(i.get("normalization", "in-graph"), ("in-graph", "by-caller"),
                                  "input.normalization"),
            mean=_triple(i.get("mean"), "input.mean", source),
            std=_triple(i.get("std"), "input.std", source, positive=True),
            scale=_positive(i.get("scale", 1 / 255), "input.scale", source),
            size=size,  # type: ignore[arg-type]
            size_multiple=_bounded(_need(i, "size_multiple", int, "input"),
                                   "input.size_multiple", 1, 1024, source),
            min_size=_bounded(_need(i, "min_size", int, "input"), "input.min_size", 1,
                              MAX_SIDE, source))
        kind = _choice(_need(o, "kind", str, "output"), ("labels", "logits"), "output.kind")
        out = OutputTensor(name=_need(o, "name", str, "output"),
                         dtype=_choice(_need(o, "dtype", str, "output"), DTYPES, "output.dtype"),
                         layout=out_layout,
                         shape=_shape(o.get("shape"), LAYOUTS[out_layout], "output.shape"),
                         kind=kind)
        classes = _need(d, "classes", list, "spec")
        palette = _need(d, "palette", list, "spec")
        if not classes or not all(isinstance(c, str) for c in classes):
            raise SpecError("classes must be a non-empty list of names; export the model again")
        if len(palette) < len(classes) or not all(
                isinstance(c, list) and len(c) == 3 and all(
                    isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette):
            raise SpecError("palette must hold an RGB triple of 0-255 for every class; export "
                            "the model again")
        if out.layout == "NCHW" and out.shape[1] not in (-1, len(classes)):
            raise SpecError(f"{source}: the output has {out.shape[1]} channels and the sidecar "
                            f"lists {len(classes)} classes; it belongs to another model: export "
                            "again")
        producer = d.get("producer") or {}
        if not isinstance(producer, dict):
            raise SpecError(f"{source}: producer is {str(producer)[:30]}, not an object; export "
                            "the model again")
        if kind == "labels" and out.dtype == "uint8" and len(classes) > 256:
            raise SpecError(f"{len(classes)} classes do not fit uint8 labels; export with "
                            "--label-dtype int32")
        genotype = _need(d, "genotype", dict, "spec")
        for where, value, pattern in (("genotype.name", genotype.get("name"), NAME),
                                      ("input.name", inp.name, TENSOR_NAME),
                                      ("output.name", out.name, TENSOR_NAME),
                                      *((f"classes[{k}]", c, NAME) for k, c in
                                        enumerate(classes))):
            if isinstance(value, str) and (problem := name_problem(value, pattern)):
                raise SpecError(f"{source}: {where} {problem}; export the model again")
        _check_shape_matches_size(inp, source)
        dynamic = d.get("dynamic") or {}
        if not isinstance(dynamic, dict):
            raise SpecError(f"{source}: dynamic is {type(dynamic).__name__}, not an object; "
                            "export the model again")
        batch = _ranges(dynamic.get("batch"), "dynamic.batch", source, MAX_BATCH)
        sizes = _ranges(dynamic.get("size"), "dynamic.size", source, MAX_SIDE, pair=True)
        profile = _ranges(d.get("profile"), "profile", source, MAX_SIDE, pair=None)
        return cls(
            input=inp, output=out, classes=tuple(classes),
            palette=tuple(tuple(c) for c in palette),  # type: ignore[misc]
            genotype_name=_need(genotype, "name", str, "genotype"),
            genotype_hash=_need(genotype, "hash", str, "genotype"),
            precision=_choice(d.get("precision", "fp32"), PRECISIONS, "precision"),
            batch=(batch["min"], batch["opt"], batch["max"]) if batch else None,
            sizes=tuple(tuple(sizes[k]) for k in ("min", "opt", "max"))  # type: ignore[arg-type]
            if sizes else None,
            profile=tuple(tuple(profile[k]) for k in ("min", "opt", "max"))  # type: ignore
            if profile else None,
            producer={str(k): str(v) for k, v in producer.items()}, raw=dict(d),
            **_records(d, source))

    def to_dict(self) -> dict[str, Any]:
        """The sidecar content (the fields it was read from, as written)."""
        return dict(self.raw)

    # ---- files -----------------------------------------------------------------------
    @classmethod
    def load(cls, model_path: str | Path, verify_hash: bool = True) -> ModelSpec:
        """The spec of ``model_path`` from its sidecar; refused if missing, broken, or if the
        model file changed after export."""
        model_path, path = Path(model_path), sidecar_path(model_path)
        if not path.is_file():
            raise SsrDeployError(f"{model_path} has no metadata sidecar {path.name}; keep the "
                                 ".json that `ssr-deploy export` wrote next to it, or export "
                                 "again")
        data = read_json(path, "sidecar")
        spec = cls.from_dict(data, f"sidecar {path.name}")
        named = data.get("file")  # a renamed pair is fine where the sha256 vouches for it
        if isinstance(named, str) and named != model_path.name and not data.get("sha256"):
            raise SsrDeployError(f"sidecar {path.name} describes {named!r}, not "
                                 f"{model_path.name}: it belongs to another file; keep each "
                                 "model with its own sidecar (rename both together and edit "
                                 "\"file\"), or export again")
        if verify_hash and data.get("sha256") and data["sha256"] != file_sha256(model_path):
            raise SsrDeployError(f"sidecar {path.name} does not describe {model_path.name}: the "
                                 "model file changed after export (sha256 differs); export "
                                 "again")
        return spec

    @staticmethod
    def save(model_path: str | Path, metadata: dict[str, Any]) -> Path:
        """Validate ``metadata`` and write it as ``<model>.json`` with the model file's name
        and sha256, atomically."""
        text = ModelSpec.sidecar_text(Path(model_path).name, file_sha256(model_path), metadata)
        return atomic_write_text(sidecar_path(model_path), text)

    @staticmethod
    def sidecar_text(file_name: str, sha256: str, metadata: dict[str, Any]) -> str:
        """The sidecar of a model file named ``file_name`` with that sha256, validated."""
        full = {**metadata, "file": file_name, "sha256": sha256}
        ModelSpec.from_dict(full, f"metadata for {file_name}")
        return dumps_compact(full) + "\n"
