import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ssr_deploy import SsrDeployError, build_model
from ssr_deploy.export.onnx import export_onnx


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def _trained_like(net):
    """Random BN statistics and weights, so the check is not on an all-near-zero output."""
    gen = torch.Generator().manual_seed(0)
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point():
            values = torch.rand(tensor.shape, generator=gen) if "running_var" in name else \
                torch.randn(tensor.shape, generator=gen) * 0.1
            tensor.copy_(values + (0.5 if "running_var" in name else 0))
    return net.eval()


def test_paper_network_exports_and_matches_pytorch(tmp_path):
    net = _trained_like(build_model("ssr-cityscapes"))
    path = export_onnx(net, tmp_path / "ssr.onnx", size=(512, 1024))
    onnx.checker.check_model(onnx.load(path), full_check=True)
    x = torch.rand(1, 3, 512, 1024)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    assert got.shape == (1, 19, 512, 1024)
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9999


def test_dynamic_export_takes_other_sizes_and_batches(tmp_path):
    net = _trained_like(build_model("ssr-cityscapes"))
    path = export_onnx(net, tmp_path / "dyn.onnx", size=(64, 128), dynamic=True)
    for shape in [(1, 3, 64, 128), (2, 3, 200, 336), (1, 3, 24, 40)]:  # 25x42 and 3x5 at 1/8
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(_run(path, x), expected, atol=1e-4, rtol=0)


def test_export_refuses_bad_requests_and_leaves_nothing(tmp_path):
    net = build_model("ssr-cityscapes")
    with pytest.raises(SsrDeployError, match="opset 13 is too old"):
        export_onnx(net, tmp_path / "a.onnx", size=(64, 128), opset=13)
    with pytest.raises(SsrDeployError, match="multiples of 8"):
        export_onnx(net, tmp_path / "a.onnx", size=(60, 128))
    with pytest.raises(SsrDeployError, match="does not exist"):
        export_onnx(net, tmp_path / "missing" / "a.onnx", size=(64, 128))
    assert list(tmp_path.iterdir()) == []
