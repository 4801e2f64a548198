import json

import pytest
from click.testing import CliRunner

from ssr_deploy import SsrDeployError, build_model
from ssr_deploy.cli import main
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.export.triton import config_pbtxt, write_repository
from ssr_deploy.runtime.compare import compare
from ssr_deploy.spec import ModelSpec


def test_triton_repository(tmp_path, labels_onnx):
    config = write_repository(labels_onnx, tmp_path / "repo", "seg", max_batch=8, instances=2)
    text = config.read_text()
    assert config == tmp_path / "repo" / "seg" / "config.pbtxt"
    assert (tmp_path / "repo" / "seg" / "1" / "model.onnx").read_bytes() == \
        labels_onnx.read_bytes()
    read_sidecar(tmp_path / "repo" / "seg" / "1" / "model.onnx")  # sidecar travels, hash holds
    for line in ['name: "seg"', 'platform: "onnxruntime_onnx"', "max_batch_size: 8",
                 "data_type: TYPE_UINT8", "dims: [ -1, -1, 3 ]", "dims: [ -1, -1 ]",
                 "preferred_batch_size: [ 2, 4, 8 ]", "count: 2", "kind: KIND_GPU"]:
        assert line in text, line


def test_triton_engine_and_fixed_batch(tmp_path, labels_onnx):
    meta = read_sidecar(labels_onnx)
    engine_meta = ModelSpec.from_dict({**meta, "profile": {
        "min": [1, 64, 128, 3], "opt": [4, 64, 128, 3], "max": [4, 64, 128, 3]}})
    assert 'platform: "tensorrt_plan"' in config_pbtxt(engine_meta, "m", "tensorrt_plan", 4, 1)
    with pytest.raises(SsrDeployError, match="--max-batch 8 needs a model taking batches 1 to 8"):
        config_pbtxt(engine_meta, "m", "tensorrt_plan", 8, 1)
    static = export_onnx(build_model("ssr-cityscapes"), tmp_path / "s.onnx", size=(32, 64)).path
    with pytest.raises(SsrDeployError, match="export with --dynamic-batch"):
        write_repository(static, tmp_path / "repo")
    text = write_repository(static, tmp_path / "repo", max_batch=0, cpu=True).read_text()
    assert "max_batch_size: 0" in text and "dims: [ 1, 3, 32, 64 ]" in text
    assert "dynamic_batching" not in text and "KIND_CPU" in text


def test_check_identical_models_agree_fully(tmp_path, labels_onnx):
    result = compare(labels_onnx, labels_onnx, n=3)
    assert result["label_agreement"] == 1.0 and result["miou_vs_reference"] == 1.0


def test_check_different_weights_is_a_number_not_a_crash(tmp_path, labels_onnx):
    import torch

    torch.manual_seed(1)
    net = build_model("ssr-cityscapes").eval()
    other = export_onnx(net, tmp_path / "other.onnx", size=(64, 128),
                        io=read_io(labels_onnx)).path
    result = compare(other, labels_onnx, n=2)
    assert 0 <= result["label_agreement"] < 1 and result["frames"] == 2


def read_io(path):
    from ssr_deploy.spec import IOFormat

    meta = read_sidecar(path)
    return IOFormat(f"uint8-nhwc-{meta['input']['color']}", meta["output"]["kind"])


def test_check_refuses_different_networks(tmp_path, labels_onnx):
    from tests.helpers import random_genotype

    g = random_genotype(5)
    other = export_onnx(build_model(g), tmp_path / "o.onnx", size=(64, 128)).path
    with pytest.raises(SsrDeployError, match="hold different networks"):
        compare(other, labels_onnx, n=1)


def test_cli_check_and_triton(tmp_path, labels_onnx):
    runner = CliRunner()
    result = runner.invoke(main, ["export", "check", str(labels_onnx), "--against",
                                  str(labels_onnx), "-n", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["label_agreement"] == 1.0
    result = runner.invoke(main, ["export", "triton", str(labels_onnx), "--repo",
                                  str(tmp_path / "r")])
    assert result.exit_code == 0 and (tmp_path / "r" / "ssrnet" / "config.pbtxt").is_file()
    result = runner.invoke(main, ["export", "engine", str(labels_onnx), "-o",
                                  str(tmp_path / "m.engine"), "--precision", "int8",
                                  "--calib-cache", str(tmp_path / "no-cache")])
    assert result.exit_code == 1 and "--precision int8 needs calibration images" in result.output
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "model.int8.onnx").exists()


def test_a_fleet_gets_only_plans_its_triton_can_load(tmp_path, labels_onnx):
    """Triton's TensorRT backend loads full TensorRT plans of its own release: a
    TensorRT-RTX engine is refused (with where it can run), and so is a plan of another
    release where the server's is named."""
    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    from ssr_deploy.export.tensorrt import EngineOptions, build_engine
    from tests.backends.test_tensorrt_runner import as_full_tensorrt

    rtx = tmp_path / "rtx.engine"
    build_engine(labels_onnx, rtx, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    with pytest.raises(SsrDeployError, match="built by TensorRT-RTX, whose engines Triton's "
                                             "TensorRT backend cannot load: serve it with"):
        write_repository(rtx, tmp_path / "repo")
    assert not (tmp_path / "repo" / "ssrnet" / "1").exists()
    (tmp_path / "full").mkdir()
    full = as_full_tensorrt(rtx, tmp_path / "full")  # built by TensorRT 10.16.1.11
    with pytest.raises(SsrDeployError, match=r"built by TensorRT 10\.16\.1\.11; the server's is "
                                             r"10\.3\.0, and a plan loads only in the release"):
        write_repository(full, tmp_path / "repo", server_tensorrt="10.3.0")
    config = write_repository(full, tmp_path / "repo", server_tensorrt="10.16.1")
    assert 'platform: "tensorrt_plan"' in config.read_text()
    run = CliRunner().invoke(main, ["export", "triton", str(full), "--repo",
                                    str(tmp_path / "repo2")])
    assert run.exit_code == 0 and "TensorRT is 10.16.1.11 (--server-tensorrt" in run.output
