"""fp16 and int8 ONNX: what the graphs hold, their verification against fp32, the
calibration cache, and the refusals. All on the CPU with onnxruntime."""

import json

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ssr_deploy import Segmenter, SsrDeployError
from ssr_deploy.cli import main
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.fp16 import shape_arithmetic_nodes
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.precision import PrecisionOptions, convert_precision

FLOAT, FLOAT16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(scope="module")
def calib_dir(street_pngs):
    return street_pngs


@pytest.fixture(scope="module")
def int8_onnx(labels_onnx, calib_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("int8")
    options = PrecisionOptions("int8", calib_dir=str(calib_dir), calib_cache=str(folder / "c"),
                               min_agreement=0.9)
    return convert_precision(labels_onnx, folder / "model.int8.onnx", options)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)})
    return types


def _weights(model: onnx.ModelProto, module: str) -> set[int]:
    init = {t.name: t for t in model.graph.initializer}
    return {init[i].data_type for n in model.graph.node if n.op_type == "Conv"
            and n.name.startswith(module + "/") for i in n.input[1:2] if i in init}


def test_fp16_graph_keeps_io_index_arithmetic_and_pinned_modules(labels_onnx, tmp_path):
    result = convert_precision(labels_onnx, tmp_path / "m.fp16.onnx",
                               PrecisionOptions("fp16", fp32_layers=("head.psp",)))
    fp32, fp16 = onnx.load(str(labels_onnx)), onnx.load(str(result.path))
    io = lambda m: [(v.name, v.type.tensor_type.elem_type)  # noqa: E731
                    for v in (*m.graph.input, *m.graph.output)]
    assert io(fp16) == io(fp32) == [("images", onnx.TensorProto.UINT8),
                                    ("labels", onnx.TensorProto.UINT8)]
    assert _weights(fp16, "stages.1.layers.3") == {FLOAT16}
    assert _weights(fp16, "head.psp") == {FLOAT} and _weights(fp16, "head.low") == {FLOAT16}
    # the dynamic-size pooling's window arithmetic reads what it read in fp32: the same
    # types, and no value rounded through float16 on the way
    index = set(shape_arithmetic_nodes(fp32))
    assert len(index) > 20
    before, after = _types(fp32), _types(fp16)
    producer = {o: n for n in fp16.graph.node for o in n.output}
    nodes16 = {n.name: n for n in fp16.graph.node}
    for node in (n for n in fp32.graph.node if n.name in index):
        inputs16 = nodes16[node.name].input
        assert [before.get(i) for i in node.input] == [after.get(i) for i in inputs16]
        for name in inputs16:
            source = producer.get(name)
            while source is not None and source.op_type == "Cast":
                assert source.attribute[0].i != FLOAT16, (node.name, source.name)
                source = producer.get(source.input[0])
    check = read_sidecar(result.path)["precision_check"]
    assert result.metadata["precision"] == "fp16" and check["label_agreement"] >= 0.999
    assert set(check) >= {"label_agreement", "miou_vs_fp32", "sources", "min_agreement"}


def test_fp16_float_io_stays_float32(tmp_path):
    from ssr_deploy.export.onnx import export_onnx
    from tests.helpers import confident_net

    result = export_onnx(confident_net(), tmp_path / "m.fp16.onnx",
                         size=(32, 64), precision=PrecisionOptions("fp16"))
    model = onnx.load(str(result.path))
    assert model.graph.input[0].type.tensor_type.elem_type == FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == FLOAT
    assert (tmp_path / "m.onnx").is_file() and read_sidecar(tmp_path / "m.onnx")["opset"] == 18
    assert result.report["precision"]["passed"]


def test_int8_is_qdq_in_the_form_tensorrt_takes(int8_onnx):
    model = onnx.load(str(int8_onnx.path))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    quant = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dequant = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert quant and dequant
    for node in quant + dequant:
        zero = init[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name  # symmetric int8
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producer = {o: n for n in model.graph.node for o in n.output}
    for conv in convs:
        weight_dq = producer[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear"
        assert init[weight_dq.input[1]].size == init[weight_dq.input[0]].shape[0]  # per channel
        act_dq = producer[conv.input[0]]
        assert act_dq.op_type == "DequantizeLinear" and init[act_dq.input[1]].size == 1
    # Q/DQ on convolution inputs only (as NVIDIA's tools place them): no output rounded
    # twice, once after the convolution and again after its ReLU
    assert not [q for q in quant if producer.get(q.input[0]) in convs]
    q = int8_onnx.metadata["quantization"]
    assert q["target"] == "tensorrt" and q["method"] == "entropy" and not q["cache_hit"]
    assert int8_onnx.metadata["precision_check"]["label_agreement"] >= 0.9


def test_calibration_cache_makes_a_reexport_skip_calibration(labels_onnx, int8_onnx, calib_dir,
                                                            tmp_path):
    cache = int8_onnx.metadata["quantization"]["cache"]
    options = PrecisionOptions("int8", calib_cache=str(tmp_path / "none"))
    with pytest.raises(SsrDeployError, match="needs calibration images: --calib DIR"):
        convert_precision(labels_onnx, tmp_path / "a.onnx", options)
    assert not (tmp_path / "a.onnx").exists()
    folder = str(int8_onnx.path.parent / "c")
    again = convert_precision(labels_onnx, tmp_path / "b.onnx", PrecisionOptions(
        "int8", calib_cache=folder, min_agreement=0.9))  # no --calib: the cache is enough
    assert again.metadata["quantization"]["cache_hit"]
    assert again.metadata["quantization"]["cache"] == cache
    same = [onnx.load(str(p)).graph.initializer for p in (int8_onnx.path, again.path)]
    assert [t.raw_data for t in same[0]] == [t.raw_data for t in same[1]]
    other = tmp_path / "other"
    other.mkdir()
    cv2.imwrite(str(other / "a.png"), street_frames(1, 64, 128, seed=9)[0])
    fresh = convert_precision(labels_onnx, tmp_path / "c.onnx", PrecisionOptions(
        "int8", calib_dir=str(other), calib_cache=folder, min_agreement=0.1))
    assert not fresh.metadata["quantization"]["cache_hit"]  # another set, another key
    with pytest.raises(SsrDeployError, match="needs calibration images"):  # the CPU form's
        convert_precision(labels_onnx, tmp_path / "d.onnx", PrecisionOptions(  # ranges are
            "int8", int8_target="cpu", calib_cache=folder))  # not symmetric: its own key


def test_below_the_threshold_nothing_is_written_and_layers_are_named(labels_onnx, tmp_path):
    """Calibrated on one black frame, every activation range is far too narrow."""
    (tmp_path / "black").mkdir()
    cv2.imwrite(str(tmp_path / "black" / "0.png"), np.zeros((64, 128, 3), np.uint8))
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(SsrDeployError, match=r"below 100.00%; nothing written. Largest errors: "
                                             r"(head|stages|stem)\S* \(\d"):
        convert_precision(labels_onnx, out, PrecisionOptions(
            "int8", calib_dir=str(tmp_path / "black"), calib_method="minmax",
            calib_cache=str(tmp_path / "c"), min_agreement=1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["black", "c"]


def test_refusals_are_one_line(labels_onnx, tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(PrecisionOptions("int8", calib_dir=str(tmp_path / "empty")), "no images .* under"),
             (PrecisionOptions("fp16", fp32_layers=("stages.9.*",)), "'stages.9.\\*' matches no"),
             (PrecisionOptions("fp16", min_agreement=1.5), "--min-agreement 1.5"),
             (PrecisionOptions("int8", calib_method="magic"), "'magic' is not known")]
    for options, message in cases:
        with pytest.raises(SsrDeployError, match=message):
            convert_precision(labels_onnx, tmp_path / "x.onnx", options)
    with pytest.raises(SsrDeployError, match="is the input"):
        convert_precision(labels_onnx, labels_onnx, PrecisionOptions("fp16"))
    assert not list(tmp_path.glob("x.onnx*"))


def test_segmenter_runs_the_int8_graph_on_cpu(int8_onnx):
    import onnxruntime as ort

    frames = street_frames(3, 64, 128, seed=4)
    session = ort.InferenceSession(str(int8_onnx.path), providers=["CPUExecutionProvider"])
    with Segmenter.load(int8_onnx.path) as int8:
        assert int8.metadata["precision"] == "int8" and int8.backend.name == "onnxruntime"
        labels = int8.predict_batch(list(frames))
    np.testing.assert_array_equal(np.stack(labels), session.run(None, {"images": frames})[0])


def test_cli_precision_export_and_refusal(tmp_path, calib_dir, caplog):
    runner = CliRunner()
    base = ["export", "onnx", "ssr-cityscapes", "--random-init", "--size", "32x64"]
    ok = runner.invoke(main, base + ["-o", str(tmp_path / "m.int8.onnx"), "--precision", "int8",
                                     "--calib", str(calib_dir), "--calib-cache",
                                     str(tmp_path / "c"), "--min-agreement", "0.01", "--json"])
    assert ok.exit_code == 0, ok.output
    # the quantizer's pre-processing is done, so it logs no request for it (a URL line)
    assert not [r for r in caplog.records if r.name == "root" and r.levelname == "WARNING"], \
        caplog.text
    report = json.loads(ok.stdout)  # stderr: a note that 6 calibration images are few
    assert "calibration images" in ok.stderr
    assert report["verification"]["precision"]["label_agreement"] > 0.01
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.int8.onnx.json").is_file()
    bad = runner.invoke(main, base + ["-o", str(tmp_path / "n.onnx"), "--calib", str(calib_dir)])
    assert bad.exit_code == 1 and "apply to --precision fp16 or int8" in bad.output
    assert not (tmp_path / "n.onnx").exists()
