"""Precision lives in the graph: an fp32 ONNX -> an fp16 ONNX or an explicitly quantized
(Q/DQ) int8 ONNX, verified with onnxruntime on the CPU against the fp32 graph before anything
is written. TensorRT (strongly typed, 10.3+ and 11) then compiles exactly what was verified.

fp16: onnxruntime's own float16 converter (``onnxruntime.transformers.float16``): weights
and activations in float16, the graph's I/O as exported, chosen modules and the shape/index
arithmetic of the dynamic-size exact pooling kept as they are.
int8: onnxruntime's static quantizer in QDQ form. ``target="tensorrt"``: symmetric int8,
per-channel weights, per-tensor activations, zero points 0, on convolution inputs only (what
TensorRT accepts); ``target="openvino"``: Q/DQ on convolution inputs in the ``int8_form``
this CPU runs correctly (``backends/openvino/forms.py``: s8 as TensorRT's, u8, u8-7bit),
modules kept out of int8 staying float (OpenVINO fuses them into its int8 kernels and runs
the rest at the IR's precision); ``target="cpu"``: uint8 asymmetric activations on both
sides of each convolution, int8 weights with reduced range (what onnxruntime's CPU kernels
run fastest without VNNI). Calibration runs the runtime's own
preprocessing over ``calib_dir`` images; its tensor ranges are cached under a key made of
the fp32 ONNX's sha256, the method and the calibration images' contents.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import inspect
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ssr_deploy.errors import PrecisionCheckError, SsrDeployError, UsageError
from ssr_deploy.export.calibration import CalibrationBatches
from ssr_deploy.export.metadata import ExportResult, publish_models, read_sidecar, to_props
from ssr_deploy.export.precision_check import Fp32Check, GraphRunner, onnxruntime_graph
from ssr_deploy.io import atomic_write, cache_root, check_input_file, check_output_path
from ssr_deploy.media import find_images
from ssr_deploy.names import module_of_node
from ssr_deploy.spec import MIN_AGREEMENT, ModelSpec, file_sha256, sidecar_path

CALIB_METHODS = ("entropy", "percentile", "minmax")
FEW_CALIBRATION_IMAGES = 32
INT8_TARGETS = ("tensorrt", "cpu", "openvino")
FALLBACKS = ("none", "auto")


@dataclass(frozen=True)
class PrecisionOptions:
    """How to turn an fp32 ONNX into ``precision``. ``fp32_layers``: fnmatch patterns on the
    genotype modules node names carry (``head.psp``, ``stages.1.*``) kept in fp32.
    ``data``: a folder of images to verify on, besides street-like frames."""

    precision: str = "fp16"
    fp32_layers: tuple[str, ...] = ()
    calib_dir: str | None = None
    calib_n: int = 100
    calib_method: str = "entropy"
    calib_cache: str | None = None  # a folder; default ~/.cache/ssr-deploy/calibration
    int8_target: str = "tensorrt"  # tensorrt | cpu | openvino
    data: str | None = None
    frames: int = 8
    min_agreement: float | None = None  # default MIN_AGREEMENT[precision]
    #: int8: "auto" keeps the most sensitive genotype modules out of int8 (fp16 in the
    #: TensorRT form, fp32 in the CPU form), one at a time, until min_agreement holds
    fallback: str = "none"
    #: int8: a QAT checkpoint's record (``train/qat.py``): its learned input ranges are used
    #: instead of calibration images
    qat: dict[str, Any] | None = None
    #: int8 for OpenVINO: s8 | u8 | u8-7bit (``backends/openvino/forms.py``); None: chosen
    #: for this CPU
    int8_form: str | None = None

    @property
    def threshold(self) -> float:
        return self.min_agreement if self.min_agreement is not None else \
            MIN_AGREEMENT.get(self.precision, 1.0)

    @property
    def symmetric(self) -> bool:
        """Signed, zero-point-0 activations: TensorRT's form, and OpenVINO's s8."""
        return self.int8_target == "tensorrt" or (self.int8_target == "openvino"
                                                  and self.int8_form in (None, "s8"))

    @property
    def reduce_range(self) -> bool:
        """7-bit weights (no overflow in the 16-bit sums of CPUs without VNNI)."""
        return self.int8_target == "cpu" or self.int8_form == "u8-7bit"

    @property
    def range_form(self) -> str:
        """The calibration ranges' form: symmetric (TensorRT's, OpenVINO's s8) or not."""
        return "tensorrt" if self.symmetric else "cpu"


def precision_path(fp32_path: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx``: where a converted graph goes by default."""
    path = Path(fp32_path)
    return path.with_name(f"{path.stem}.{precision}.onnx")


# ---- validation: every check before any work -------------------------------------------
def check_options(o: PrecisionOptions) -> None:
    """What can be checked before any ONNX exists."""
    if o.precision not in ("fp16", "int8"):
        raise UsageError(f"precision {o.precision!r}: convert to fp16 or int8")
    if o.calib_method not in CALIB_METHODS:
        raise UsageError(f"--calib-method {o.calib_method!r} is not known; use "
                         f"{', '.join(CALIB_METHODS)}")
    if o.int8_target not in INT8_TARGETS:
        raise UsageError(f"--int8-target {o.int8_target!r} is not known; use "
                         f"{', '.join(INT8_TARGETS)}")
    if o.int8_form is not None:
        from ssr_deploy.backends.openvino.forms import FORMS

        if o.int8_form not in FORMS:
            raise UsageError(f"--int8-form {o.int8_form!r} is not known; use "
                             f"{', '.join(FORMS)}")
        if o.int8_target != "openvino":
            raise UsageError("--int8-form chooses an OpenVINO IR's int8: use it with "
                             "export openvino --precision int8")
    if o.fallback not in FALLBACKS:
        raise UsageError(f"--fallback {o.fallback!r} is not known; use none or auto")
    if o.fallback == "auto" and o.precision != "int8":
        raise UsageError(f"--fallback auto chooses what stays out of int8; {o.precision} has "
                         "no int8 to fall back from: drop it, or use --precision int8")
    if not 0 < o.threshold <= 1:
        raise UsageError(f"--min-agreement {o.threshold}: give a fraction in (0, 1]")
    if o.qat is not None:
        if o.precision != "int8" or not o.symmetric:
            raise UsageError("a QAT checkpoint learned int8 ranges in the TensorRT form: "
                             "export it with --precision int8 --int8-target tensorrt")
        if o.calib_dir or o.fallback != "none":
            raise UsageError("a QAT checkpoint carries its learned ranges: drop --calib and "
                             "--fallback (they apply to post-training quantization)")
    if o.data:
        find_images(o.data)
    if o.precision == "int8" and o.calib_dir:
        found = len(find_images(o.calib_dir, o.calib_n))  # names a missing or empty folder
        if found < FEW_CALIBRATION_IMAGES:
            print(f"note: {found} calibration images in {o.calib_dir}: int8 ranges from so "
                  "few frames are noisy, and the agreement measured here may not hold on "
                  "others; give ~100 representative frames", file=sys.stderr)


def check_calibration(model: onnx.ModelProto, name: str, o: PrecisionOptions) -> None:
    if o.precision == "int8" and not o.calib_dir and o.qat is None \
            and cached_ranges(model, o) is None:
        raise SsrDeployError("--precision int8 needs calibration images: --calib DIR with "
                         "representative frames (e.g. 100 from the training set); no "
                         f"calibration cache for {name} in {calibration_folder(o)}")


def validate(fp32_path: str | Path, out_path: str | Path, o: PrecisionOptions
             ) -> dict[str, Any]:
    """Return the fp32 ONNX's metadata; one clear line for anything that cannot work."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    check_options(o)
    check_input_file(fp32_path, "ONNX file")
    if out_path.resolve() == fp32_path.resolve():
        raise SsrDeployError(f"{out_path} is the input; write the {o.precision} graph elsewhere "
                         f"(e.g. {precision_path(fp32_path, o.precision)})")
    meta = read_sidecar(fp32_path)
    if (has := ModelSpec.from_dict(meta).precision) != "fp32":
        raise SsrDeployError(f"{fp32_path.name} is already {has}; convert from the "
                         "fp32 ONNX that `ssr-deploy export onnx` wrote")
    model = onnx.load(str(fp32_path))
    matching_nodes(model, o.fp32_layers)
    check_calibration(model, fp32_path.name, o)
    return meta


# ---- fp16 ---------------------------------------------------------------------------
def matching_nodes(model: onnx.ModelProto, patterns: tuple[str, ...]) -> list[str]:
    """Names of nodes whose module (or whole name) matches a pattern; a pattern matching no
    node is an error that lists the modules there are."""
    names: list[str] = []
    for pattern in patterns:
        hits = [n.name for n in model.graph.node
                if fnmatch.fnmatchcase(module_of_node(n.name), pattern)
                or fnmatch.fnmatchcase(n.name, pattern)]
        if not hits:
            modules = sorted({module_of_node(n.name) for n in model.graph.node})
            raise UsageError(f"--fp32-layers {pattern!r} matches no layer; modules are "
                                 f"{', '.join(modules[:6])}, ... (fnmatch, e.g. 'head.*')")
        names += [h for h in hits if h not in names]
    return names


def shape_arithmetic_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes that compute from shapes and constants only, never from pixels: the index and
    window arithmetic of the dynamic-size exact pooling. They keep their types in fp16."""
    data = {i.name for i in model.graph.input}
    index_nodes = []
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type != "Shape" and any(i in data for i in node.input):
            data.update(node.output)
        elif node.op_type not in ("Shape", "Constant"):  # Shape reads any float type
            index_nodes.append(node.name)
    return index_nodes


def to_fp16(model: onnx.ModelProto, fp32_layers: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The fp16 graph: I/O types as they were, ``fp32_layers`` and shape arithmetic in fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    keep = matching_nodes(model, fp32_layers) + shape_arithmetic_nodes(model)
    return _float16(model, keep, DEFAULT_OP_BLOCK_LIST)


def _float16(model: onnx.ModelProto, keep: list[str], keep_ops: list[str]) -> onnx.ModelProto:
    """onnxruntime's converter with the nodes ``keep`` and op types ``keep_ops`` as they are,
    then the casts it leaves between kept nodes taken out."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]  # stale fp32 annotations; the converter infers anew
    converted = convert_float_to_float16(copy, keep_io_types=True, node_block_list=keep,
                                         op_block_list=keep_ops)
    _skip_fp16_round_trips(converted.graph)
    _drop_identity_casts(converted)
    _sort_topologically(converted.graph)
    return converted


def modules_to_fp16(model: onnx.ModelProto, modules: set[str]) -> onnx.ModelProto:
    """``modules`` of an int8 (Q/DQ) graph in fp16, everything else as it is: TensorRT's
    int8 with fp16 fallback, where the modules are the ones kept out of int8."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    keep = [n.name for n in model.graph.node if module_of_node(n.name) not in modules]
    return _float16(model, keep + shape_arithmetic_nodes(model),
                    [*DEFAULT_OP_BLOCK_LIST, "QuantizeLinear", "DequantizeLinear"])


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None) \
        if node.op_type == "Cast" else None


def _skip_fp16_round_trips(graph: onnx.GraphProto) -> None:
    """The converter casts every kept-fp32 node's output to fp16 and back before the next
    kept node. Cast(float)(Cast(float16)(t)) -> Cast(float)(t): chains of kept nodes stay
    exact; casts left without a reader go."""
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if _cast_to(node) == onnx.TensorProto.FLOAT and first is not None \
                and _cast_to(first) == onnx.TensorProto.FLOAT16:
            node.input[0] = first.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        read = {i for node in graph.node for i in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _drop_identity_casts(model: onnx.ModelProto) -> None:
    """Casts to the type their input already has (the converter casts float to float around
    nodes it was told to keep): their readers read the input instead."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    outputs = {o.name for o in model.graph.output}
    same = {n.output[0]: n.input[0] for n in model.graph.node
            if _cast_to(n) is not None and types.get(n.input[0]) == _cast_to(n)
            and n.output[0] not in outputs}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            while name in same:
                name = same[name]
            node.input[i] = name
    for node in [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] in same]:
        model.graph.node.remove(node)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """The converter appends its casts at the end; ONNX wants producers before readers."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        left = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                left.append(node)
        if len(left) == len(pending):
            raise SsrDeployError("fp16 conversion produced a cyclic graph; report this with "
                                 "the ONNX file")
        pending = left
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# ---- int8 ---------------------------------------------------------------------------
def calibration_folder(o: PrecisionOptions) -> Path:
    if o.calib_cache:
        return Path(o.calib_cache)
    return cache_root() / "calibration"


def bytes_sha256(model: onnx.ModelProto) -> str:
    """sha256 of the serialized model: the sha256 of the file ``onnx.save`` writes."""
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def graph_key(model: onnx.ModelProto) -> str:
    """sha256 of the graph alone (weights and nodes, not the export's timestamp), so a
    re-export of the same network finds its calibration again."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()[:16]


def calibration_key(model: onnx.ModelProto, o: PrecisionOptions) -> str:
    """``<graph sha>-<method>-<form>-<n>-<images sha>``: the images' contents, not their
    names; the form, as the TensorRT form's ranges are symmetric and the CPU form's not."""
    digest = hashlib.sha256()
    for path in find_images(o.calib_dir, o.calib_n):
        digest.update(file_sha256(path).encode())
    return (f"{graph_key(model)}-{o.calib_method}-{o.range_form}-{o.calib_n}-"
            f"{digest.hexdigest()[:16]}")


def cached_ranges(model: onnx.ModelProto, o: PrecisionOptions) -> Path | None:
    """The cache file for this graph and method: the calibration set's own key when --calib
    is given, else the newest one made for this graph with this method."""
    folder = calibration_folder(o)
    if o.calib_dir:
        path = folder / f"{calibration_key(model, o)}.json"
        return path if path.is_file() else None
    found = sorted(folder.glob(f"{graph_key(model)}-{o.calib_method}-{o.range_form}-*.json"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


class _Reader:
    """onnxruntime's CalibrationDataReader over CalibrationBatches (the runtime's
    preprocessing at the model's size and batch). The quantizer reads it one batch per
    ``set_range``: its calibrators keep every intermediate tensor of what they are given, which
    for 100 frames at 512x1024 is more memory than a 24 GB machine has."""

    def __init__(self, batches: CalibrationBatches, input_name: str) -> None:
        self.batches, self.input_name = batches, input_name
        self._it: Iterator[int] = iter(range(len(batches)))

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(range(start_index, min(end_index, len(self.batches))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        i = next(self._it, None)
        return None if i is None else {self.input_name: self.batches[i]}

    def __len__(self) -> int:
        return len(self.batches)


def learned_ranges(fp32: onnx.ModelProto, qat: dict[str, Any], path: Path) -> None:
    """A QAT checkpoint's input ranges as onnxruntime's calibration cache at ``path``: each
    convolution's input tensor (found by its weight, which keeps the module's name) gets
    [-amax, amax]; a tensor read by two convolutions, the larger."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        TensorData,
        TensorsData,
        save_tensors_data,
    )

    amax: dict[str, float] = {}
    for node in fp32.graph.node:
        if node.op_type != "Conv":
            continue
        module = node.input[1].removeprefix("net.").removesuffix(".weight")
        if module not in qat["input_amax"]:
            raise SsrDeployError(f"the QAT record has no range for {module}'s input: the "
                                 "checkpoint and this ONNX hold different networks")
        tensor = node.input[0]
        amax[tensor] = max(amax.get(tensor, 0.0), qat["input_amax"][module])
    data = {t: TensorData(lowest=np.float32(-a), highest=np.float32(a)) for t, a in amax.items()}
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), path)


def quantization_settings(o: PrecisionOptions) -> dict[str, Any]:
    """What the int8 graph is, in words that go into the sidecar."""
    if o.qat is not None:
        return {"target": o.int8_target, "format": "QDQ", "method": "qat",
                "weights": "int8 symmetric per-channel", "activations": "int8 symmetric "
                "per-tensor, ranges learned by quantization-aware training", "zero_points": 0,
                "ops": ["Conv"], "qat": {k: o.qat[k] for k in ("from", "from_sha256", "epochs",
                                                               "library")}}
    bits = " (7-bit range)" if o.reduce_range else ""
    form = {"form": o.int8_form or "s8"} if o.int8_target == "openvino" else {}
    if o.symmetric:
        return {"target": o.int8_target, **form, "format": "QDQ", "method": o.calib_method,
                "weights": "int8 symmetric per-channel", "activations": "int8 symmetric "
                "per-tensor", "zero_points": 0, "ops": ["Conv"]}
    return {"target": o.int8_target, **form, "format": "QDQ", "method": o.calib_method,
            "weights": f"int8 symmetric per-channel{bits}",
            "activations": "uint8 asymmetric per-tensor", "ops": ["Conv"]}


def to_int8(fp32: onnx.ModelProto, meta: dict[str, Any], o: PrecisionOptions,
            exclude: list[str], fp16_modules: frozenset[str] = frozenset()
            ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The Q/DQ graph and {"cache": path, "cache_hit": bool}: ``exclude`` (node names) left
    unquantized, ``fp16_modules`` (whose nodes must be among them) then in fp16."""
    import tempfile

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
              "minmax": CalibrationMethod.MinMax}[o.calib_method]
    symmetric = o.symmetric
    scratch = tempfile.TemporaryDirectory(prefix="ssr-deploy-int8.")
    if o.qat is not None:  # the learned ranges, as a cache the quantizer reads
        method, cache = CalibrationMethod.MinMax, Path(scratch.name) / "learned.json"
        learned_ranges(fp32, o.qat, cache)
    else:
        cache = cached_ranges(fp32, o)
    hit = cache is not None
    reader = None
    if not hit:
        cache = calibration_folder(o) / f"{calibration_key(fp32, o)}.json"
        tensor = ModelSpec.from_dict(meta).input
        batch = max(tensor.shape[0], 1)  # a dynamic batch (-1): calibrate one at a time
        reader = _Reader(CalibrationBatches(o.calib_dir, tensor, tensor.size, batch, o.calib_n),
                         tensor.name)
    fresh = Path(scratch.name) / "ranges.json"  # published to the cache once complete
    kwargs: dict[str, Any] = {}
    if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        kwargs["calibration_cache_path"] = str(cache if hit else fresh)
    elif hit:  # an older onnxruntime cannot read the cache: calibrate again
        raise SsrDeployError("this onnxruntime cannot read calibration caches (>= 1.32 can): "
                         + ("upgrade it to export a QAT checkpoint" if o.qat is not None
                            else "pass --calib DIR"))
    source, out = Path(scratch.name) / "fp32.onnx", Path(scratch.name) / "int8.onnx"
    onnx.save(fp32, str(source))  # given a ModelProto, quantize_static rewrites it in place
    # the quantizer's own pre-processing, which it asks for (in a WARNING line with a URL
    # otherwise): ONNX shape inference; not its graph optimisation, which would rename the
    # module-prefixed nodes that --fp32-layers and the checks read, nor its symbolic shape
    # inference, written for transformers (it stops on our dynamic-size graphs)
    quant_pre_process(str(source), str(source), skip_optimization=True,
                      skip_symbolic_shape=True)
    with contextlib.redirect_stdout(None):  # the calibrator prints its progress
        quantize_static(
            str(source), str(out), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv"], per_channel=True, reduce_range=o.reduce_range,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
            extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True,
                           "QuantizeBias": False, "CalibTensorRangeSymmetric": symmetric,
                           "CalibStridedMinMax": 1,  # one batch at a time: see _Reader
                           # TensorRT, OpenVINO: Q/DQ on a convolution's inputs only, as
                           # NVIDIA's tools place them; they fuse the output quantization
                           # themselves. onnxruntime's CPU kernels need both sides.
                           "OpTypesToExcludeOutputQuantization": ["Conv"]
                           if o.int8_target != "cpu" else []},
            **kwargs)
    with scratch:
        if kwargs and not hit:
            cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache, lambda tmp: shutil.copyfile(fresh, tmp))
        quantized = onnx.load(str(out))
        if fp16_modules:
            quantized = modules_to_fp16(quantized, set(fp16_modules))
        if o.qat is not None:
            return quantized, {}
        return quantized, {
            "cache": str(cache) if "calibration_cache_path" in kwargs else None,
            "cache_hit": hit}


def int8_with_fallback(fp32: onnx.ModelProto, meta: dict[str, Any], o: PrecisionOptions,
                       pinned: list[str], check: Fp32Check, progress: bool = False
                       ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """``--fallback auto``: the int8 graph with the fewest modules kept out of int8 (fp16
    for TensorRT, fp32 for onnxruntime's CPU form, the IR's float for OpenVINO) that agrees
    with fp32 on ``o.threshold`` of the labels, its quantization record and its check.
    Calibration runs once (the first trial's); every later trial reuses its ranges."""
    from ssr_deploy.export.fallback import select

    calibration: dict[str, Any] = {}

    def quantize(kept: tuple[str, ...]) -> onnx.ModelProto:
        nodes = [n.name for n in fp32.graph.node if module_of_node(n.name) in kept]
        fp16 = frozenset(kept) if o.int8_target == "tensorrt" else frozenset()
        graph, cache = to_int8(fp32, meta, o, pinned + nodes, fp16)
        calibration.setdefault("cache", cache)
        return graph

    best, record = select(fp32, quantize, check, pinned, progress)
    record["kept_precision"] = {"tensorrt": "fp16", "cpu": "fp32",
                                "openvino": "the IR's float precision"}[o.int8_target]
    return best.graph, {**quantization_settings(o), **calibration["cache"],
                        "fallback": record}, best.report


# ---- the whole step ------------------------------------------------------------------
def convert_model(fp32: onnx.ModelProto, meta: dict[str, Any], options: PrecisionOptions,
                  progress: Callable[[str], None] | None = None,
                  run: GraphRunner = onnxruntime_graph
                  ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """fp32 graph (``meta``: its sidecar, with "file" and "sha256") -> (converted graph, its
    metadata, the check against fp32, each candidate run by ``run``). Raises, naming the
    worst layers, below the threshold."""
    step = progress or (lambda stage: None)
    spec = ModelSpec.from_dict(meta)
    check_calibration(fp32, spec.file or "the ONNX", options)
    step("convert")
    keep = matching_nodes(fp32, options.fp32_layers)
    check = Fp32Check(fp32, spec, options.threshold, options.frames,
                      options.data, run)
    quantization: dict[str, Any] = {}
    report = None
    if options.precision == "fp16":
        converted = to_fp16(fp32, options.fp32_layers)
    elif options.fallback == "auto":  # checked on the way: it raises unless one passes
        converted, quantization, report = int8_with_fallback(fp32, meta, options, keep, check,
                                                             progress is not None)
    else:
        converted, cache = to_int8(fp32, meta, options, keep)
        quantization = {**quantization_settings(options), **cache}
    step("verify")
    onnx.checker.check_model(converted, full_check=True)
    report = report or check(converted)
    if not report["passed"]:
        worst = ", ".join(f"{r['module']} ({r['relative_error']:.1e})"
                          for r in report["worst_layers"])
        remedy = ("let --fallback auto choose the modules to keep out of int8, keep them in "
                  "fp32 with --fp32-layers, or lower --min-agreement"
                  if options.precision == "int8" else
                  "keep them in fp32 with --fp32-layers, or lower --min-agreement")
        raise PrecisionCheckError(
            f"{options.precision} labels agree with fp32 on {100 * report['label_agreement']:.2f}"
            f"% of pixels, below {100 * options.threshold:.2f}%; nothing written. Largest "
            f"errors: {worst}; {remedy}")
    metadata = converted_metadata(meta, options, report, quantization)
    onnx.helper.set_model_props(converted, to_props(metadata))
    return converted, metadata, report


def converted_metadata(meta: dict[str, Any], options: PrecisionOptions, report: dict[str, Any],
                       quantization: dict[str, Any] | None) -> dict[str, Any]:
    """The sidecar of a graph converted from the fp32 one (``meta``: its sidecar)."""
    spec = ModelSpec.from_dict(meta)
    metadata = {k: v for k, v in meta.items() if k not in ("file", "sha256")}
    metadata.update({
        "precision": options.precision, "fp32_onnx": spec.file,
        "fp32_onnx_sha256": spec.sha256, "fp32_layers": list(options.fp32_layers),
        "precision_check": {k: report[k] for k in ("label_agreement", "miou_vs_fp32",
                                                    "sources", "min_agreement")},
    })
    if quantization:
        metadata["quantization"] = quantization
    return metadata


def convert_precision(fp32_path: str | Path, out_path: str | Path, options: PrecisionOptions,
                      progress: Callable[[str], None] | None = None) -> ExportResult:
    """fp32 ONNX file -> ``options.precision`` ONNX at ``out_path`` (+ sidecar), verified
    against the fp32 graph; below the agreement threshold nothing is written."""
    start = time.perf_counter()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    check_output_path(out_path)
    meta = validate(fp32_path, out_path, options)
    converted, metadata, report = convert_model(onnx.load(str(fp32_path)), meta, options,
                                                progress)
    (progress or (lambda stage: None))("write")
    publish_models([(out_path, lambda tmp: onnx.save(converted, str(tmp)), metadata)])
    return ExportResult(out_path, sidecar_path(out_path), metadata, report,
                        time.perf_counter() - start)
