import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from ssr_deploy import SsrDeployError, build_model, save_checkpoint
from ssr_deploy.cli import main
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.metadata import PROP_PREFIX, read_sidecar
from ssr_deploy.export.onnx import export_onnx, load_source
from ssr_deploy.export.verify import model_input
from ssr_deploy.spec import IOFormat


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


def trained_like(net, seed=0):
    """Random weights and BN statistics, so checks do not run on a near-constant output."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point():
            if "running_var" in name:
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            else:
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def net():
    return trained_like(build_model("ssr-cityscapes"))


def test_paper_network_exports_and_matches_pytorch(tmp_path, net):
    result = export_onnx(net, tmp_path / "ssr.onnx", size=(512, 1024))
    model = onnx.load(result.path)
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}  # folded, nothing training-only
    x = torch.rand(1, 3, 512, 1024)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(result.path, x.numpy())
    assert got.shape == (1, 19, 512, 1024)
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9999
    assert result.report["passed"] and len(result.report["cases"]) == 2


@pytest.mark.parametrize("input_format", ["float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb"])
@pytest.mark.parametrize("output_format, dtype", [("logits", np.float32), ("labels", np.uint8),
                                                  ("labels", np.int32)])
def test_every_input_output_variant(tmp_path, net, input_format, output_format, dtype):
    io = IOFormat(input_format, output_format, "int32" if dtype == np.int32 else "uint8")
    path = export_onnx(net, tmp_path / "m.onnx", size=(64, 128), io=io).path
    frames = street_frames(2, 64, 128, seed=5)
    got = np.concatenate([_run(path, model_input(frames[i:i + 1], io, net.genotype.input))
                          for i in range(2)])
    assert got.dtype == dtype
    # The reference: the plain network on frames we normalise here, RGB, float NCHW.
    x = frames[..., ::-1].astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        logits = net(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    if output_format == "logits":
        assert got.shape == (2, 19, 64, 128) and np.abs(got - logits).max() <= 1e-4
    else:
        assert got.shape == (2, 64, 128)
        assert (got == logits.argmax(1)).mean() >= 0.9999


def test_bgr_genotype_with_mean_std_is_folded_correctly(tmp_path):
    from ssr_deploy.genotype import Genotype

    d = Genotype.load("ssr-cityscapes").to_dict()
    d["input"] = {"color": "bgr", "mean": [0.4, 0.45, 0.5], "std": [0.2, 0.25, 0.3]}
    net = trained_like(build_model(Genotype.from_dict(d)))
    io = IOFormat("uint8-nhwc-rgb", "logits")
    path = export_onnx(net, tmp_path / "m.onnx", size=(64, 128), io=io).path
    frames = street_frames(1, 64, 128)
    x = (frames.astype(np.float32) / 255 - [0.4, 0.45, 0.5]) / [0.2, 0.25, 0.3]
    with torch.no_grad():
        expected = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))).numpy()
    got = _run(path, np.ascontiguousarray(frames[..., ::-1]))
    assert np.abs(got - expected).max() <= 1e-4


def test_dynamic_batch_and_size_at_sizes_the_bins_do_not_divide(tmp_path, net):
    result = export_onnx(net, tmp_path / "dyn.onnx", size=(64, 128), dynamic_batch=True,
                         dynamic_size=True, min_size=(16, 16), max_size=(512, 512))
    meta = read_sidecar(result.path)
    assert meta["dynamic"] == {"batch": {"min": 1, "opt": 1, "max": 32},
                               "size": {"min": [16, 16], "opt": [64, 128], "max": [512, 512]}}
    assert meta["input"]["shape"] == [-1, 3, -1, -1]
    for shape in [(1, 3, 64, 128), (3, 3, 200, 336), (1, 3, 24, 40), (2, 3, 16, 16)]:
        x = torch.rand(*shape)  # 200x336 -> 25x42 at 1/8: 3, 6, 9 bins do not divide it
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(_run(result.path, x.numpy()), expected, atol=1e-4, rtol=0)


def test_static_export_at_a_size_the_bins_do_not_divide(tmp_path, net):
    result = export_onnx(net, tmp_path / "m.onnx", size=(200, 336))
    assert result.report["max_abs_diff"] <= 1e-4


def test_metadata_in_sidecar_and_onnx_props_agree(tmp_path, net):
    io = IOFormat("uint8-nhwc-bgr", "labels")
    result = export_onnx(net, tmp_path / "m.onnx", size=(64, 128), io=io)
    sidecar = read_sidecar(result.path)
    props = {p.key[len(PROP_PREFIX):]: json.loads(p.value)
             for p in onnx.load(result.path).metadata_props if p.key.startswith(PROP_PREFIX)}
    assert {k: v for k, v in sidecar.items() if k not in ("file", "sha256")} == props
    assert sidecar["genotype"] == {"name": "ssr-cityscapes", "hash": net.genotype.hash}
    assert sidecar["classes"][0] == "road" and len(sidecar["palette"]) == 19
    expected_input = {"layout": "NHWC", "dtype": "uint8", "color": "bgr", "size": [64, 128],
                      "normalization": "in-graph"}
    assert {k: sidecar["input"][k] for k in expected_input} == expected_input
    assert sidecar["output"]["dtype"] == "uint8" and sidecar["output"]["shape"] == [1, 64, 128]
    assert {"ssr_deploy", "torch", "onnx"} <= set(sidecar["producer"])
    result.path.write_bytes(result.path.read_bytes() + b"\0")
    with pytest.raises(SsrDeployError, match="model file changed after export"):
        read_sidecar(result.path)


def test_failed_verification_leaves_nothing(tmp_path, net):
    with pytest.raises(SsrDeployError, match="verification failed, nothing written"):
        export_onnx(net, tmp_path / "m.onnx", size=(64, 128), max_abs_diff=1e-12)
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_fail_before_any_work(tmp_path, net):
    cases = [(dict(opset=13), "--opset 13: SSRNet exports at opset 17 to"),
             (dict(size=(60, 128)), "multiples of 8"),
             (dict(dynamic_size=True, size=(64, 128), min_size=(128, 128)), "must lie between"),
             (dict(dynamic_batch=True, batch=8, max_batch=4), "above --max-batch")]
    for kwargs, message in cases:
        with pytest.raises(SsrDeployError, match=message):
            export_onnx(net, tmp_path / "a.onnx", **{"size": (64, 128), **kwargs})
    with pytest.raises(SsrDeployError, match="folder .*missing does not exist"):
        export_onnx(net, tmp_path / "missing" / "a.onnx", size=(64, 128))
    with pytest.raises(SsrDeployError, match="--input 'uint16' is not known"):
        IOFormat("uint16")
    assert list(tmp_path.iterdir()) == []


def test_sources(tmp_path, net):
    ckpt = save_checkpoint(tmp_path / "a.pt", net, net.genotype)
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(load_source(str(ckpt))(x), net(x))
        torch.testing.assert_close(load_source("ssr-cityscapes", weights=str(ckpt))(x), net(x))
    assert not load_source("ssr-cityscapes", random_init=True).training
    with pytest.raises(SsrDeployError, match="genotype without weights"):
        load_source("ssr-cityscapes")
    with pytest.raises(SsrDeployError, match="carries its weights"):
        load_source(str(ckpt), random_init=True)
    from tests.helpers import random_genotype

    other = random_genotype(1)
    wrong = save_checkpoint(tmp_path / "b.pt", build_model(other), other)
    with pytest.raises(SsrDeployError,
                       match="holds weights of genotype random-1 .*, not ssr-cityscapes"):
        load_source("ssr-cityscapes", weights=str(wrong))


def test_cli_export_onnx_json(tmp_path):
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", "onnx", "ssr-cityscapes", "--random-init",
                                       "-o", str(out), "--size", "64x128", "--input",
                                       "uint8-nhwc-bgr", "--output", "labels", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["verification"]["passed"] and report["path"] == str(out)
    assert out.is_file() and (tmp_path / "m.onnx.json").is_file()
