"""Precision lives in the graph: an fp32 ONNX -> an fp16 ONNX (``fp16.py``) or an explicitly
quantized (Q/DQ) int8 ONNX (``int8.py``), verified with onnxruntime on the CPU (or in
OpenVINO, for ``export openvino``) against the fp32 graph before anything is written.
TensorRT (strongly typed, 10.3+ and 11) then compiles exactly what was verified. Here: the
options, every check before any work, and the step from an fp32 file to a verified one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.errors import PrecisionCheckError, SsrDeployError, UsageError
from ssr_deploy.export.fp16 import matching_nodes, to_fp16
from ssr_deploy.export.int8 import (
    check_calibration,
    int8_with_fallback,
    quantization_settings,
    to_int8,
)
from ssr_deploy.export.metadata import ExportResult, publish_models, read_sidecar, to_props
from ssr_deploy.export.precision_check import Fp32Check, GraphRunner, onnxruntime_graph
from ssr_deploy.io import check_input_file, check_output_path
from ssr_deploy.media import find_images
from ssr_deploy.spec import MIN_AGREEMENT, ModelSpec, sidecar_path

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
