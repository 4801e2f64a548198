"""int8 with an automatic fallback (``--fallback auto``): a network made sensitive in one
module on purpose gets exactly that module kept out of int8 (fp16 in the TensorRT form,
fp32 in the CPU form), recorded in the sidecar with its share of the MACs; the refusals."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from ssr_deploy.cli import main
from ssr_deploy.errors import PrecisionCheckError, UsageError
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.precision import PrecisionOptions, convert_precision
from ssr_deploy.names import module_of_node
from ssr_deploy.spec import file_sha256, sidecar_path

SENSITIVE = "head.classifier"


def make_sensitive(model: onnx.ModelProto, module: str, spread: float = 1e4) -> None:
    """The same function, but int8-hostile in ``module``: wherever one of its convolutions
    reads a ReLU of another (Conv A -> Relu -> Conv B, B in the module), the channels between
    them are scaled in A by factors spread from 1 to ``spread`` and in B by their inverses.
    ReLU commutes with positive scaling, so fp32 computes what it did; but no one per-tensor
    int8 scale for B's input holds channels four orders of magnitude apart: small ones round
    to zero or large ones clip. (The TensorRT form quantizes convolution inputs only, so
    keeping B's module out of int8 undoes it.)"""
    init = {t.name: t for t in model.graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def only_reader(tensor: str, op: str) -> onnx.NodeProto | None:
        nodes = readers.get(tensor, [])
        return nodes[0] if len(nodes) == 1 and nodes[0].op_type == op else None

    pairs = [(a, b) for a in model.graph.node if a.op_type == "Conv"
             and (relu := only_reader(a.output[0], "Relu")) is not None
             and (b := only_reader(relu.output[0], "Conv")) is not None
             and module_of_node(b.name) == module]
    assert pairs, f"no convolution of {module} reads Conv -> Relu"
    for a, b in pairs:
        channels = numpy_helper.to_array(init[a.input[1]]).shape[0]
        factors = spread ** np.linspace(0, 1, channels, dtype=np.float32)
        scaled = [(name, factors, 0) for name in a.input[1:3]]  # weight, bias if any
        for name, scale, axis in [*scaled, (b.input[1], 1 / factors, 1)]:
            array = numpy_helper.to_array(init[name])
            shape = [1] * array.ndim
            shape[axis] = channels
            init[name].CopyFrom(numpy_helper.from_array(
                (array * scale.reshape(shape)).astype(array.dtype), name))


@pytest.fixture(scope="module")
def sensitive_onnx(labels_onnx, tmp_path_factory):
    """labels_onnx (the paper's network) with SENSITIVE made int8-hostile."""
    folder = tmp_path_factory.mktemp("sensitive")
    path = folder / "model.onnx"
    model = onnx.load(str(labels_onnx))
    make_sensitive(model, SENSITIVE)
    onnx.save(model, str(path))
    sidecar = json.loads(sidecar_path(labels_onnx).read_text())
    sidecar_path(path).write_text(json.dumps({**sidecar, "sha256": file_sha256(path)}))
    return path


def _options(calib, tmp_path, **kw) -> PrecisionOptions:
    return PrecisionOptions("int8", calib_dir=str(calib), calib_n=6,
                            calib_cache=str(tmp_path / "c"), **kw)


def _module_weight_types(model: onnx.ModelProto, module: str) -> set[int]:
    """Element types of the weights the module's convolutions read (through a DQ: int8)."""
    init = {t.name: t.data_type for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    types = set()
    for node in model.graph.node:
        if node.op_type == "Conv" and module_of_node(node.name) == module:
            weight = node.input[1]
            if weight in producer and producer[weight].op_type == "DequantizeLinear":
                types.add(init[producer[weight].input[0]])
            else:
                types.add(init[weight])
    return types


def test_the_sensitive_module_and_only_it_is_kept_in_fp16(sensitive_onnx, street_pngs,
                                                          tmp_path):
    plain = convert_precision(sensitive_onnx, tmp_path / "plain.onnx", _options(
        street_pngs, tmp_path, min_agreement=0.01))
    assert plain.report["label_agreement"] < 0.9  # the sabotage works: plain int8 fails

    out = tmp_path / "m.int8.onnx"
    result = convert_precision(sensitive_onnx, out, _options(
        street_pngs, tmp_path, min_agreement=0.99, fallback="auto"))
    fallback = read_sidecar(out)["quantization"]["fallback"]
    assert fallback["kept"] == [SENSITIVE] and fallback["mode"] == "auto"
    assert fallback["kept_precision"] == "fp16"
    assert fallback["agreement_all_int8"] == pytest.approx(plain.report["label_agreement"])
    rows = {r["module"]: r for r in fallback["sensitivity"]}
    assert max(rows, key=lambda m: rows[m]["gain"]) == SENSITIVE
    assert 0 < fallback["macs_out_of_int8"] == rows[SENSITIVE]["macs_share"] < 0.05
    assert result.report["label_agreement"] >= 0.99

    model = onnx.load(str(out))
    assert _module_weight_types(model, SENSITIVE) == {onnx.TensorProto.FLOAT16}
    for module in set(rows) - {SENSITIVE}:
        assert _module_weight_types(model, module) == {onnx.TensorProto.INT8}, module
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.input, *inferred.graph.value_info)}
    casts = [(types.get(n.input[0]), n.attribute[0].i) for n in model.graph.node
             if n.op_type == "Cast"]
    assert not [c for c in casts if c[0] == c[1]]  # no cast to the type a tensor has


def test_cpu_form_keeps_modules_in_fp32(labels_onnx, street_pngs, tmp_path):
    plain = convert_precision(labels_onnx, tmp_path / "plain.onnx", _options(
        street_pngs, tmp_path, int8_target="cpu", min_agreement=0.01))
    wanted = plain.report["label_agreement"] + 1e-6  # just out of plain int8's reach
    result = convert_precision(labels_onnx, tmp_path / "m.int8.onnx", _options(
        street_pngs, tmp_path, int8_target="cpu", min_agreement=wanted, fallback="auto"))
    fallback = result.metadata["quantization"]["fallback"]
    assert fallback["kept"] and fallback["kept_precision"] == "fp32"
    assert result.report["label_agreement"] >= wanted
    model = onnx.load(str(result.path))
    for module in fallback["kept"]:
        assert _module_weight_types(model, module) == {onnx.TensorProto.FLOAT}, module


def test_no_fallback_needed_keeps_nothing_out(labels_onnx, street_pngs, tmp_path):
    result = convert_precision(labels_onnx, tmp_path / "m.int8.onnx", _options(
        street_pngs, tmp_path, min_agreement=0.9, fallback="auto"))
    fallback = result.metadata["quantization"]["fallback"]
    assert fallback["kept"] == [] and fallback["macs_out_of_int8"] == 0.0
    assert fallback["sensitivity"] == []  # no sensitivity pass when int8 already holds


def test_a_target_no_fallback_reaches_says_the_best_and_writes_nothing(
        sensitive_onnx, street_pngs, tmp_path):
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(PrecisionCheckError, match=r"no int8 fallback reaches 100.00%.*the best "
                       rf"is \d+\.\d\d% \(all int8 \d+\.\d\d%\) with {SENSITIVE}.* of the MACs"):
        convert_precision(sensitive_onnx, out, _options(street_pngs, tmp_path,
                                                        min_agreement=1.0, fallback="auto"))
    assert not out.exists() and not sidecar_path(out).exists()


def test_refusals(labels_onnx, street_pngs, tmp_path):
    with pytest.raises(UsageError, match="--fallback auto chooses what stays out of int8; "
                                         "fp16 has no int8"):
        convert_precision(labels_onnx, tmp_path / "m.fp16.onnx",
                          PrecisionOptions("fp16", fallback="auto"))
    with pytest.raises(UsageError, match="'some' is not known"):
        convert_precision(labels_onnx, tmp_path / "m.int8.onnx",
                          _options(street_pngs, tmp_path, fallback="some"))


def test_cli_onnx_and_engine(sensitive_onnx, street_pngs, tmp_path):
    runner = CliRunner()
    engine = tmp_path / "m.engine"
    r = runner.invoke(main, ["export", "engine", str(sensitive_onnx), "-o", str(engine),
                             "--precision", "int8", "--fallback", "auto", "--calib",
                             str(street_pngs), "--calib-n", "6", "--calib-cache",
                             str(tmp_path / "c"), "--builder", "tensorrt-rtx"])
    assert r.exit_code == 0, r.output
    meta = read_sidecar(engine)
    assert meta["precision"] == "int8"
    assert meta["quantization"]["fallback"]["kept"] == [SENSITIVE]
    bad = runner.invoke(main, ["export", "engine", str(sensitive_onnx), "-o",
                               str(tmp_path / "h.engine"), "--fallback", "auto",
                               "--builder", "tensorrt-rtx"])
    assert bad.exit_code == 1 and "an fp16 engine has no int8" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "h.engine").exists()
