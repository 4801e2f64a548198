"""ONNX export: validate, export (dynamo), simplify (onnxslim), verify, then write the model
and its sidecar. A failed verification leaves nothing at the final path."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.export.fold import fold_batchnorm
from ssr_deploy.export.int8 import bytes_sha256
from ssr_deploy.export.metadata import (
    ExportResult,
    check_companion,
    maybe_same_network,
    publish_models,
    to_props,
)
from ssr_deploy.export.precision import PrecisionOptions, check_options, convert_model
from ssr_deploy.export.precision_check import format_check
from ssr_deploy.export.verify import MAX_ABS_DIFF, MIN_LABEL_AGREEMENT, format_report, verify_onnx
from ssr_deploy.genotype import Genotype
from ssr_deploy.io import check_output_path
from ssr_deploy.model.checkpoint import load_model, load_weights, read_weights_for
from ssr_deploy.model.deploy import DeployModel
from ssr_deploy.model.net import SSRNet, build_model
from ssr_deploy.names import node_name
from ssr_deploy.spec import Dynamic, IOFormat, build_metadata, sidecar_path

__all__ = ["ExportResult", "OnnxOptions", "export_onnx", "format_report", "fp32_path_for",
           "load_source", "summary_line"]

MIN_OPSET = 17
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class OnnxOptions:
    """What to export. Sizes are (H, W) in pixels; ``min_size``/``max_size`` only matter with
    ``dynamic_size`` (default: half and twice ``size``)."""

    size: tuple[int, int] = (512, 1024)
    batch: int = 1
    dynamic_batch: bool = False
    max_batch: int = 32
    dynamic_size: bool = False
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    opset: int = DEFAULT_OPSET
    io: IOFormat = field(default_factory=IOFormat)
    simplify: bool = True
    max_abs_diff: float = MAX_ABS_DIFF
    min_label_agreement: float = MIN_LABEL_AGREEMENT


def is_checkpoint(source: str | Path) -> bool:
    """Whether SOURCE names a checkpoint (else a genotype: a zoo name or JSON)."""
    path = Path(source)
    return path.suffix in (".pt", ".pth") or (path.is_file() and path.suffix != ".json")


def qat_record_of(source: str) -> dict[str, Any] | None:
    """The QAT record (``train/qat.py``) of a checkpoint fine-tuned with ``train --qat``;
    None for anything else."""
    path = Path(source)
    if not is_checkpoint(path):
        return None
    from ssr_deploy.model.checkpoint import read_checkpoint

    record = read_checkpoint(path).get("qat")
    if record is None:
        return None
    from ssr_deploy.train.qat import check_record

    return check_record(record, str(path))


def load_source(source: str, weights: str | None = None, random_init: bool = False) -> SSRNet:
    """SOURCE is a checkpoint, or a genotype (zoo name / JSON) with ``weights`` or
    ``random_init``; returns the network in eval mode."""
    path = Path(source)
    if is_checkpoint(path):
        if weights or random_init:
            raise UsageError(f"{source} is a checkpoint and carries its weights; drop "
                             "--weights / --random-init")
        return load_model(path)
    genotype = Genotype.load(source)
    if weights and random_init:
        raise UsageError("give either --weights or --random-init, not both")
    if not weights and not random_init:
        raise UsageError(f"{source} is a genotype without weights: add --weights CKPT, or "
                         "--random-init to export untrained weights (for speed work)")
    if random_init:
        torch.manual_seed(0)
        return build_model(genotype).eval()
    state = read_weights_for(genotype, weights)
    net = build_model(genotype, state.get("num_classes"))
    load_weights(net, state["state_dict"], str(weights))
    return net.eval()


def _ranges(genotype: Genotype, o: OnnxOptions) -> Dynamic:
    """Check every size and batch before any work starts; return the dynamic ranges."""
    if not MIN_OPSET <= o.opset <= onnx.defs.onnx_opset_version():
        raise UsageError(f"--opset {o.opset}: SSRNet exports at opset {MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()} (this onnx's newest); use --opset "
                         f"{DEFAULT_OPSET}")
    genotype.check_input_size(*o.size)
    if o.batch < 1:
        raise UsageError(f"--batch {o.batch}: a batch is at least 1")
    batch = None
    if o.dynamic_batch:
        if not o.batch <= o.max_batch:
            raise UsageError(f"--batch {o.batch} is above --max-batch {o.max_batch}")
        batch = (1, o.batch, o.max_batch)
    size = None
    if o.dynamic_size:
        h, w = o.size
        multiple, minimum = genotype.size_rule()

        def snap(n: int) -> int:
            return max(minimum, n // multiple * multiple)

        low = o.min_size or (snap(h // 2), snap(w // 2))
        high = o.max_size or (2 * h, 2 * w)
        for s in (low, high):
            genotype.check_input_size(*s)
        if not (low[0] <= h <= high[0] and low[1] <= w <= high[1]):
            raise UsageError(f"--size {h}x{w} must lie between --min-size "
                             f"{low[0]}x{low[1]} and --max-size {high[0]}x{high[1]}")
        size = (tuple(low), (h, w), tuple(high))
    return Dynamic(batch=batch, size=size)


def _dynamic_shapes(genotype: Genotype, io: IOFormat, dynamic: Dynamic) -> dict | None:
    if not dynamic.batch and not dynamic.size:
        return None
    dim, dims = torch.export.Dim, {}
    if dynamic.batch:
        dims[0] = dim("batch", min=dynamic.batch[0], max=dynamic.batch[2])
    if dynamic.size:
        multiple = genotype.size_rule()[0]
        (h0, w0), _, (h1, w1) = dynamic.size
        first = 1 if io.uint8_input else 2
        dims[first] = multiple * dim("h", min=h0 // multiple, max=h1 // multiple)
        dims[first + 1] = multiple * dim("w", min=w0 // multiple, max=w1 // multiple)
    return {"x": dims}


def _example(io: IOFormat, batch: int, size: tuple[int, int]) -> torch.Tensor:
    if io.uint8_input:
        return torch.zeros(batch, *size, 3, dtype=torch.uint8)
    return torch.zeros(batch, 3, *size)


def _verification_cases(o: OnnxOptions, dynamic: Dynamic) -> list[tuple[int, int, int]]:
    cases = [(o.batch, *o.size)]
    if dynamic.batch or dynamic.size:
        other_batch = 2 if dynamic.batch and o.batch != 2 else o.batch
        other_size = dynamic.size[0] if dynamic.size else o.size
        cases.append((other_batch, *other_size))
    return cases


STAGES = ("export", "simplify", "verify", "write")


def fp32_path_for(path: str | Path, precision: str) -> Path:
    """Where the fp32 graph goes when ``path`` is to hold the ``precision`` one:
    ``model.int8.onnx`` -> ``model.onnx``; ``model.onnx`` -> ``model.fp32.onnx``."""
    path = Path(path)
    tag = f".{precision}"
    if path.stem.endswith(tag):
        return path.with_name(path.stem[:-len(tag)] + path.suffix)
    return path.with_name(f"{path.stem}.fp32{path.suffix}")


def export_onnx(net: SSRNet, path: str | Path, options: OnnxOptions | None = None,
                progress: Callable[[str], None] | None = None,
                precision: PrecisionOptions | None = None, **overrides: Any) -> ExportResult:
    """Export ``net`` to ``path`` (+ ``path``.json sidecar), verified against PyTorch.

    With ``precision`` (fp16 / int8) the converted graph, verified against the fp32 one, goes
    to ``path`` and the fp32 graph to ``fp32_path_for(path)``; ``report["precision"]`` holds
    that check. Nothing is written unless every check passes. Keyword ``overrides`` set
    OnnxOptions fields, e.g. ``size=(64, 128), dynamic_size=True``; ``progress`` is called
    with each name in STAGES as it starts (then "convert <p>", "verify <p>", "write <p>")."""
    step = progress or (lambda stage: None)
    o = options or OnnxOptions()
    if overrides:
        o = OnnxOptions(**{**o.__dict__, **overrides})
    start = time.perf_counter()
    path = Path(path)
    _ranges(net.genotype, o)  # every argument first, then the paths
    if o.io.output == "labels" and o.io.label_dtype == "uint8" and net.num_classes > 256:
        raise UsageError(f"--label-dtype uint8 holds 256 class ids and the model has "
                         f"{net.num_classes} classes; use --label-dtype int32")
    converting = precision is not None and precision.precision != "fp32"
    if converting:
        check_options(precision)
    check_output_path(path)
    fp32_path = fp32_path_for(path, precision.precision) if converting else path
    if converting and not maybe_same_network(fp32_path, net.genotype.hash):
        check_companion(fp32_path, "fp32 graph", path, path, fp32_path)  # refused before work
    model, metadata, report = _export_verified(net, o, step)
    if converting:  # the same graph again (a re-export of the same network) is no loss
        check_companion(fp32_path, "fp32 graph", path, path, fp32_path, model)
    if converting:
        tag = precision.precision
        converted, converted_meta, check = convert_model(
            model, {**metadata, "file": fp32_path.name, "sha256": bytes_sha256(model)},
            precision, progress=lambda stage: step(f"{stage} {tag}"))
        report = {**report, "precision": check, "fp32_path": str(fp32_path)}
    step("write")
    files = [(fp32_path, _saver(model), metadata)]
    if converting:
        files.append((path, _saver(converted), converted_meta))
    publish_models(files)
    return ExportResult(path, sidecar_path(path), converted_meta if converting else metadata,
                        report, time.perf_counter() - start)


def _saver(model: onnx.ModelProto) -> Callable[[Path], None]:
    return lambda tmp: onnx.save(model, str(tmp))


def to_onnx(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], opset: int,
            simplify: bool = True, fast: bool = False, **names: Any) -> onnx.ModelProto:
    """The one exporter: ``module`` (eval mode, BN folded by the caller) on ``inputs`` ->
    an ONNX graph of ``opset``, simplified with onnxslim. ``names``: torch.onnx.export's
    ``input_names``, ``output_names``, ``dynamic_shapes``. ``fast``: torch's TorchScript
    exporter where this torch has it (the same ONNX ops as the dynamo export for our parts,
    checked; 5-15x faster to make: the latency table's hundreds of parts), else dynamo."""
    with quiet_exporter(), torch.no_grad():
        model = None
        if fast:
            try:
                buffer = io.BytesIO()
                torch.onnx.export(module, inputs, buffer, dynamo=False, opset_version=opset)
                model = onnx.load_from_string(buffer.getvalue())
            except Exception:  # noqa: BLE001 - a torch without the TorchScript exporter
                model = None
        if model is None:
            model = torch.onnx.export(module, inputs, dynamo=True, opset_version=opset,
                                      verbose=False, **names).model_proto
    written = next((i.version for i in model.opset_import if i.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise UsageError(f"--opset {opset}: torch's exporter wrote opset {written} instead; "
                         f"use --opset {written}")
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    return model


def _export_verified(net: SSRNet, o: OnnxOptions, step: Callable[[str], None]
                     ) -> tuple[onnx.ModelProto, dict[str, Any], dict[str, Any]]:
    """The fp32 graph in memory, with its metadata and its verification against PyTorch."""
    genotype = net.genotype
    dynamic = _ranges(genotype, o)
    step("export")
    deploy = DeployModel(fold_batchnorm(net), o.io).eval()
    example_batch = 2 if dynamic.batch and o.batch == 1 else o.batch  # 1 would be specialised
    model = to_onnx(deploy, (_example(o.io, example_batch, o.size),), o.opset, simplify=False,
                    input_names=[o.io.input_name], output_names=[o.io.output_name],
                    dynamic_shapes=_dynamic_shapes(genotype, o.io, dynamic))
    name_nodes_by_module(model)
    step("simplify")
    if o.simplify:
        import onnxslim

        model = onnxslim.slim(model)
    cast_uint8_inputs_first(model)
    metadata = build_metadata(genotype, o.io, o.batch, o.size, net.num_classes, dynamic, o.opset,
                              producer={"torch": torch.__version__, "onnx": onnx.__version__})
    onnx.helper.set_model_props(model, to_props(metadata))
    model.producer_name, model.producer_version = "ssr-deploy", metadata["producer"]["ssr_deploy"]

    step("verify")
    report = verify_onnx(model, deploy, _verification_cases(o, dynamic), o.max_abs_diff,
                         o.min_label_agreement)
    if not report["passed"]:
        raise SsrDeployError(f"verification failed, nothing written: onnxruntime differs from "
                             f"PyTorch by up to {report['max_abs_diff']:.2e} with "
                             f"{100 * report['label_agreement']:.4f}% of labels agreeing; "
                             "report this with the genotype and options")
    return model, metadata, report


def cast_uint8_inputs_first(model: onnx.ModelProto) -> None:
    """Make every uint8 graph input feed only its Cast: TensorRT takes uint8 into a Cast and
    no other layer. The exporter reads a dynamic frame's size off the uint8 input; the cast's
    output has the same shape, so those Shape nodes read it there instead."""
    graph = model.graph
    for tensor in graph.input:
        if tensor.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        consumers = [n for n in graph.node if tensor.name in n.input]
        cast = next((n for n in consumers if n.op_type == "Cast"), None)
        others = [n for n in consumers if n is not cast]
        if cast is None or any(n.op_type != "Shape" for n in others):
            raise SsrDeployError(f"the exported graph's uint8 input {tensor.name!r} feeds "
                                 f"{', '.join(n.op_type for n in others)} before any Cast; "
                                 "report this with the genotype and options")
        for node in others:
            node.input[0] = cast.output[0]
        graph.node.remove(cast)  # the cast now comes before the nodes that read its output
        graph.node.insert(0, cast)


def module_of(scopes: list[str]) -> str:
    """The genotype-level module a node belongs to, from the exporter's name scopes:
    ``stem``, ``stages.1.down``, ``stages.1.layers.4``, ``head.psp``, ``head`` ..., or
    ``io`` for the fused pre/post-processing."""
    module = "io"
    for scope in scopes:
        p = scope.split(".")
        if p[0] != "net" or len(p) < 2:
            continue
        if p[1] == "stem":
            module = "stem"
        elif p[1] == "head":
            module = "head" if len(p) == 2 else f"head.{p[2]}"
        elif p[1] == "stages" and len(p) >= 4 and p[3] == "down":
            module = ".".join(p[1:4])
        elif p[1] == "stages" and len(p) >= 5 and p[3] == "layers":
            module = ".".join(p[1:5])
    return module


def name_nodes_by_module(model: onnx.ModelProto) -> None:
    """Prefix every node name with its module (``stages.1.layers.4/node_Conv_12``), so
    onnxruntime and TensorRT profiles, which report node names, map to genotype layers."""
    import ast

    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        scopes = props.get("pkg.torch.onnx.name_scopes")
        module = module_of(ast.literal_eval(scopes)) if scopes else "io"
        node.name = node_name(module, node.name)


def summary_line(result: ExportResult) -> str:
    """Ultralytics-style last line: what, where, how big, how long."""
    mb = result.path.stat().st_size / 1e6
    line = (f"wrote {result.path} ({mb:.1f} MB) and {result.sidecar.name} in "
            f"{result.seconds:.1f} s")
    if "precision" in result.report:
        line = (f"{result.metadata['precision']} graph:\n"
                f"{format_check(result.report['precision'])}\n{line} (fp32 graph: "
                f"{result.report['fp32_path']})")
    return line


@contextlib.contextmanager
def quiet_exporter():
    """The exporter logs progress and notes about torchvision ops we do not use."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
