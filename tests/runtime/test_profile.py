import json

import onnx
import pytest
from click.testing import CliRunner

from ssr_deploy import SsrDeployError, build_model, save_checkpoint
from ssr_deploy.cli import main
from ssr_deploy.export.onnx import export_onnx, module_of
from ssr_deploy.genotype import Genotype
from ssr_deploy.names import module_in
from ssr_deploy.runtime.profile import profile, summarize
from ssr_deploy.spec import IOFormat

LAYERS = {f"stages.{i}.layers.{j}" for i, n in enumerate((4, 9)) for j in range(n)}


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "m.onnx"
    export_onnx(build_model("ssr-cityscapes"), path, size=(64, 128),
                io=IOFormat("uint8-nhwc-bgr", "labels"))
    return path


def test_exported_nodes_are_named_by_module(onnx_path):
    modules = {node.name.split("/")[0] for node in onnx.load(onnx_path).graph.node}
    assert modules >= LAYERS and {"stem", "head.psp", "io"} <= modules
    assert module_of(["", "net", "net.stages.1", "net.stages.1.layers", "net.stages.1.layers.4",
                      "net.stages.1.layers.4.conv3x1", "conv2d"]) == "stages.1.layers.4"
    assert module_of(["", "permute"]) == "io"


def test_tensorrt_style_names_map_to_modules():
    fused = "stages.1.layers.4/node_Conv_12 + stages.1.layers.4/node_relu_3"
    assert module_in(fused) == "stages.1.layers.4"
    assert module_in("{ForeignNode[head.psp/node_MatMul_1...]}") == "head.psp"
    assert module_in("Reformatting CopyNode for Input Tensor 0") == "other"


def test_summarize_per_module():
    rows = summarize({"stem/a": 2.0, "stem/b": 2.0, "stages.0.layers.0/c": 12.0}, iters=2,
                     genotype=Genotype.load("ssr-cityscapes"))
    assert rows == [{"module": "stages.0.layers.0", "op": "fr d=1 r=1", "ms": 6.0, "share": 0.75},
                    {"module": "stem", "op": "downsampler", "ms": 2.0, "share": 0.25}]


def test_onnxruntime_profile_maps_layers_and_writes_trace(tmp_path, onnx_path):
    result = profile(onnx_path, iters=2, trace=tmp_path / "t.json")
    modules = {row["module"] for row in result["rows"]}
    assert modules >= LAYERS and "other" not in modules
    assert sum(row["share"] for row in result["rows"]) == pytest.approx(1.0)
    layer = next(row for row in result["rows"] if row["module"] == "stages.1.layers.7")
    assert layer["op"] == "fr d=16 r=1"
    events = json.loads((tmp_path / "t.json").read_text())
    assert any(e.get("cat") == "Node" for e in events)


def test_torch_profile(tmp_path):
    net = build_model("ssr-cityscapes")
    ckpt = save_checkpoint(tmp_path / "n.pt", net, net.genotype)
    result = profile(ckpt, iters=2, trace=tmp_path / "t.json", size=(64, 128))
    assert LAYERS | {"stem", "head.psp"} <= {row["module"] for row in result["rows"]}
    assert "traceEvents" in json.loads((tmp_path / "t.json").read_text())
    # torch.profiler, as on a GPU (there: kernel time): op time per module, host time beside
    assert result["time"] == "CPU op time" and result["device"] == "cpu"
    assert all(row["ms"] > 0 and row["host_ms"] >= 0 for row in result["rows"])
    top = result["top_ops"]
    assert top and all(t["name"].startswith("aten::") and "[" in t["input_shapes"] for t in top)
    assert [t["device_ms"] for t in top] == sorted((t["device_ms"] for t in top), reverse=True)
    assert any("conv" in t["name"] for t in top)
    text = CliRunner().invoke(main, ["profile", str(ckpt), "--backend", "torch", "--device",
                                     "cpu", "--size", "64x128", "--iters", "1"]).output
    assert "host ms" in text and "top ops by op time" in text, text


def test_profile_errors(tmp_path, onnx_path):
    with pytest.raises(SsrDeployError, match="does not exist"):
        profile(tmp_path / "x.onnx")
    with pytest.raises(SsrDeployError, match="no does not exist; create it first"):
        profile(onnx_path, trace=tmp_path / "no" / "t.json")
    result = CliRunner().invoke(main, ["profile", str(onnx_path), "--iters", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["backend"] == "onnxruntime"
