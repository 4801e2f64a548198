"""``export openvino``: an OpenVINO IR (``model.xml`` + ``model.bin`` + ``model.xml.json``)
from an fp32 ONNX we exported (or a checkpoint, exported to one first), verified against the
fp32 graph by running the IR as it was written, in OpenVINO on this CPU, at its precision:

- ``fp32``: the graph as it is, computed in fp32;
- ``bf16``: the same IR, computed in bf16 (a runtime precision; this CPU must have bf16);
- ``int8``: int8 Q/DQ on convolution inputs in the form this CPU runs correctly and
  fastest (``openvino_int8.py``: each candidate form verified and timed here), its float
  parts in bf16 where the CPU has it, else fp32; with ``fallback="auto"`` the modules int8
  hurts most stay float until the labels hold, each candidate checked in OpenVINO.

Below the agreement threshold nothing is written. How the IR is read, compiled and run is
the OpenVINO backend's (``ssr_deploy.backends.openvino``).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from ssr_deploy.backends.openvino import library as ov
from ssr_deploy.cpu import this_cpu
from ssr_deploy.errors import PrecisionCheckError, UsageError
from ssr_deploy.export.int8 import check_calibration
from ssr_deploy.export.metadata import ExportResult, read_sidecar
from ssr_deploy.export.onnx_file import check_onnx_file
from ssr_deploy.export.precision import PrecisionOptions, check_options
from ssr_deploy.export.precision_check import Fp32Check
from ssr_deploy.io import atomic_write_many, check_input_file, check_outputs_spare_inputs
from ssr_deploy.spec import IR_PRECISIONS, ModelSpec, file_sha256, sidecar_path

STAGES = ("read", "convert", "verify", "write")


@dataclass(frozen=True)
class IROptions(PrecisionOptions):
    """What IR to write: ``precision`` fp32 | bf16 | int8, and ``PrecisionOptions``' fields
    (int8: calibration images, fallback, fp32 layers; ``min_agreement``: label agreement with
    fp32 below which nothing is written, default 0.999 fp32, 0.995 bf16, 0.99 int8; ``data``:
    images to verify on besides street-like frames). ``size`` and ``max_batch``: the ONNX a
    checkpoint is exported to first."""

    precision: str = "fp32"
    int8_target: str = "openvino"  # and int8_form: None (chosen here) | s8 | u8 | u8-7bit
    size: tuple[int, int] = (512, 1024)
    max_batch: int = 32

    def int8(self) -> PrecisionOptions:
        return dataclasses.replace(self, precision="int8")


def check(source: str | Path, out: Path, o: IROptions) -> str:
    """Every check before any work; the float precision the IR will compute in."""
    if o.precision not in IR_PRECISIONS:
        raise UsageError(f"--precision {o.precision!r}: use fp32, bf16 or int8")
    if out.suffix.lower() != ".xml":
        raise UsageError(f"-o {out}: an OpenVINO IR is an .xml file (its weights go beside it "
                         f"as .bin): use -o {out.with_suffix('.xml').name}")
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: folder {out.parent} does not exist; create it "
                         "first or choose another output path")
    check_outputs_spare_inputs([("-o", out), ("-o (its weights)", out.with_suffix(".bin"))],
                               [source])
    if not 0 < o.threshold <= 1:
        raise UsageError(f"--min-agreement {o.threshold}: give a fraction in (0, 1]")
    ov.import_openvino()
    if o.precision == "int8":
        check_options(o.int8())
        _check_calibration(source, o.int8())
    elif o.calib_dir or o.fp32_layers or o.fallback != "none" or o.int8_form:
        raise UsageError("--calib, --fp32-layers, --fallback and --int8-form choose what int8 "
                         f"quantizes; an {o.precision} IR has no int8: drop them, or use "
                         "--precision int8")
    if o.precision == "bf16":
        ov.check_bf16("--precision bf16")
    return ov.float_precision("bf16" if o.precision == "bf16" else
                              None if o.precision == "int8" else "fp32")


def _check_calibration(source: str | Path, o: PrecisionOptions) -> None:
    """int8 needs calibration images, or ranges cached for this very graph."""
    if o.calib_dir:
        return
    path = Path(source)
    if path.suffix.lower() == ".onnx" and path.is_file():
        check_calibration(onnx.load(str(path), load_external_data=False), path.name, o)
        return
    raise UsageError("--precision int8 needs calibration images: --calib DIR with "
                     "representative frames (e.g. 100 from the training set)")


def fp32_source(source: str | Path, o: IROptions, scratch: Path) -> Path:
    """The fp32 ONNX to convert: ``source`` itself, or a checkpoint exported into
    ``scratch`` (uint8 BGR in, labels out, dynamic batch, verified against PyTorch)."""
    path = check_input_file(source, "model")
    if path.suffix.lower() in (".pt", ".pth"):
        from ssr_deploy.export.onnx import export_onnx, load_source
        from ssr_deploy.spec import runtime_io

        net = load_source(str(path))
        return export_onnx(net, scratch / "model.onnx", size=o.size, dynamic_batch=True,
                           max_batch=o.max_batch, io=runtime_io(net.num_classes)).path
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"{path.name}: export openvino takes an .onnx that `ssr-deploy export "
                         "onnx` wrote, or a checkpoint (.pt)")
    check_onnx_file(path)
    precision = ModelSpec.load(path).precision
    if precision != "fp32":
        raise UsageError(f"{path.name} is {precision}; export openvino converts the fp32 ONNX "
                         "(its sidecar names it: fp32_onnx) and verifies against it")
    return path


def export_openvino(source: str | Path, out: str | Path, options: IROptions | None = None,
                    progress: Callable[[str], None] | None = None) -> ExportResult:
    """Write the IR of ``source`` at ``out`` (.xml; .bin and .xml.json beside it), verified
    in OpenVINO against the fp32 graph; nothing is written if the check fails."""
    o = options or IROptions()
    step = progress or (lambda stage: None)
    start = time.perf_counter()
    out = Path(out)
    float_precision = check(source, out, o)
    scratch = Path(tempfile.mkdtemp(prefix=".ssr-deploy-ir.", dir=out.parent))
    try:
        step("read")
        fp32_path = fp32_source(source, o, scratch)
        meta = read_sidecar(fp32_path)
        fp32 = onnx.load(str(fp32_path))
        graph, metadata = fp32, {k: v for k, v in meta.items() if k not in ("file", "sha256")}
        step("convert")
        if o.precision == "int8":
            from ssr_deploy.export.openvino_int8 import int8_for_this_cpu

            graph, metadata, _ = int8_for_this_cpu(fp32, meta, o.int8(), float_precision,
                                                   progress is not None)
        ir = scratch / "model.xml"
        ov.import_openvino().save_model(ov.read_model(graph.SerializeToString()), str(ir),
                                        compress_to_fp16=False)
        step("verify")  # the IR as written, run as the backend runs it
        compiled = ov.CompiledModels(ov.read_model(ir), float_precision)
        spec = ModelSpec.from_dict(meta)
        report = Fp32Check(fp32, spec, o.threshold, o.frames, o.data,
                           run=lambda _graph: lambda x: [compiled(x)])(graph)
        if not report["passed"]:
            worst = ", ".join(f"{r['module']} ({r['relative_error']:.1e})"
                              for r in report.get("worst_layers", []))
            raise PrecisionCheckError(
                f"the {describe(o.precision, float_precision)} IR's labels agree with fp32 on "
                f"{100 * report['label_agreement']:.2f}% of pixels in OpenVINO "
                f"{ov.version()}, below {100 * o.threshold:.2f}%; nothing written. Largest "
                f"errors: {worst or 'n/a'}; "
                + ("use --fallback auto, or lower --min-agreement" if o.precision == "int8"
                   else "use fp32, or lower --min-agreement"))
        metadata.update({
            "precision": o.precision, "fp32_layers": list(o.fp32_layers),
            "fp32_onnx": fp32_path.name if fp32_path.parent != scratch else None,
            "fp32_onnx_sha256": spec.sha256,
            "precision_check": {k: report[k] for k in ("label_agreement", "miou_vs_fp32",
                                                        "sources", "min_agreement")},
            "openvino": {"version": ov.version(), "inference_precision": float_precision,
                         "bin_sha256": file_sha256(ir.with_suffix(".bin")),
                         "verified_on": ov.cpu_name(), "cpu_kind": this_cpu().kind,
                         "bf16": ov.bf16_support()}})
        step("write")
        _publish(ir, out, metadata)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ExportResult(out, sidecar_path(out), metadata, report, time.perf_counter() - start)


def _publish(ir: Path, out: Path, metadata: dict[str, Any]) -> None:
    """The .bin, the .xml and the sidecar, renamed into place together."""
    text = ModelSpec.sidecar_text(out.name, file_sha256(ir), metadata)
    atomic_write_many({
        out.with_suffix(".bin"): lambda tmp: shutil.copyfile(ir.with_suffix(".bin"), tmp),
        out: lambda tmp: shutil.copyfile(ir, tmp),
        sidecar_path(out): lambda tmp: tmp.write_text(text)})


def describe(precision: str, float_precision: str) -> str:
    """``bf16``, ``fp32``, or ``int8 + bf16`` (int8, its float parts in bf16)."""
    return f"int8 + {float_precision}" if precision == "int8" else precision


def summary_line(result: ExportResult) -> str:
    """``wrote model.xml (+ model.bin, 1.1 MB) and model.xml.json: int8 + bf16, 99.61% of
    labels as fp32 in OpenVINO 2026.4.1 on <cpu>, in 12.3 s``"""
    spec = result.spec
    weights = result.path.with_suffix(".bin")
    from ssr_deploy.export.openvino_int8 import choice_line

    line = (f"wrote {result.path} (+ {weights.name}, {weights.stat().st_size / 1e6:.1f} MB) "
            f"and {result.sidecar.name}: "
            f"{describe(spec.precision, spec.openvino.inference_precision)}, "
            f"{100 * spec.precision_check.label_agreement:.2f}% of labels as fp32 in OpenVINO "
            f"{spec.openvino.version} on {spec.openvino.verified_on}, in {result.seconds:.1f} s")
    chosen = choice_line(spec.quantization)
    return f"{line}\n{chosen}" if chosen else line
