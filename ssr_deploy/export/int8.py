"""int8 graphs: onnxruntime's static quantizer in QDQ form, in the form a runtime runs
(``PrecisionOptions.int8_target``/``int8_form``: TensorRT's symmetric int8, onnxruntime's CPU
form, OpenVINO's forms), calibrated on the runtime's own preprocessing of ``calib_dir``
images, the tensor ranges cached under a key made of the graph, the method, the form and the
images' contents; and ``--fallback auto``'s search for the modules to keep float."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.export.calibration import CalibrationBatches
from ssr_deploy.export.fp16 import modules_to_fp16
from ssr_deploy.export.precision_check import Fp32Check
from ssr_deploy.io import atomic_write, cache_root
from ssr_deploy.media import find_images
from ssr_deploy.names import module_of_node
from ssr_deploy.spec import ModelSpec, file_sha256

if TYPE_CHECKING:
    from ssr_deploy.export.precision import PrecisionOptions


def check_calibration(model: onnx.ModelProto, name: str, o: PrecisionOptions) -> None:
    if o.precision == "int8" and not o.calib_dir and o.qat is None \
            and cached_ranges(model, o) is None:
        raise SsrDeployError("--precision int8 needs calibration images: --calib DIR with "
                         "representative frames (e.g. 100 from the training set); no "
                         f"calibration cache for {name} in {calibration_folder(o)}")


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


def quantizer_settings(o: PrecisionOptions) -> dict[str, Any]:
    """onnxruntime ``quantize_static``'s settings for ``o``'s int8 form: every int8 graph
    here (an export's, a latency table part's) is made with them."""
    from onnxruntime.quantization import QuantFormat, QuantType

    symmetric = o.symmetric
    return {"quant_format": QuantFormat.QDQ, "op_types_to_quantize": ["Conv"],
            "per_channel": True, "reduce_range": o.reduce_range,
            "activation_type": QuantType.QInt8 if symmetric else QuantType.QUInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {
                "ActivationSymmetric": symmetric, "WeightSymmetric": True,
                "QuantizeBias": False, "CalibTensorRangeSymmetric": symmetric,
                "CalibStridedMinMax": 1,  # one batch at a time: see _Reader
                # TensorRT, OpenVINO: Q/DQ on a convolution's inputs only, as NVIDIA's tools
                # place them; they fuse the output quantization themselves. onnxruntime's
                # CPU kernels need both sides.
                "OpTypesToExcludeOutputQuantization": ["Conv"] if o.int8_target != "cpu"
                else []}}


def to_int8(fp32: onnx.ModelProto, meta: dict[str, Any], o: PrecisionOptions,
            exclude: list[str], fp16_modules: frozenset[str] = frozenset()
            ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The Q/DQ graph and {"cache": path, "cache_hit": bool}: ``exclude`` (node names) left
    unquantized, ``fp16_modules`` (whose nodes must be among them) then in fp16."""
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, quant_pre_process, quantize_static

    method = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
              "minmax": CalibrationMethod.MinMax}[o.calib_method]
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
        quantize_static(str(source), str(out), reader, nodes_to_exclude=exclude,
                        calibrate_method=method, **quantizer_settings(o), **kwargs)
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
