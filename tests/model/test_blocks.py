import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssr_deploy.model.blocks import FactorisedResidual, adaptive_avg_pool2d, add_residual


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 70), st.integers(1, 140), st.integers(1, 12))
def test_exact_adaptive_pool_equals_pytorch(height, width, bins):
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    ours = adaptive_avg_pool2d(x, bins)
    torch.testing.assert_close(ours, F.adaptive_avg_pool2d(x, bins), atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(64, 128), (96, 192), (128, 256), (25, 42), (7, 3)])
def test_exact_adaptive_pool_at_feature_sizes(size):
    x = torch.randn(1, 124, *size)
    for bins in (1, 2, 3, 6, 9):
        torch.testing.assert_close(adaptive_avg_pool2d(x, bins), F.adaptive_avg_pool2d(x, bins),
                                   atol=1e-6, rtol=0)


class _Pool(torch.nn.Module):
    def forward(self, x):
        return torch.cat([adaptive_avg_pool2d(x, b).flatten(2) for b in (1, 2, 3, 6, 9)], 2)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_exact_adaptive_pool_exports_to_onnx(tmp_path, dynamic):
    x = torch.randn(1, 8, 64, 128)
    shapes = None
    if dynamic:
        dim = torch.export.Dim
        shapes = {"x": {2: dim("h", min=2, max=512), 3: dim("w", min=2, max=512)}}
    program = torch.onnx.export(_Pool(), (x,), dynamo=True, opset_version=17,
                                dynamic_shapes=shapes, verbose=False)
    program.save(str(tmp_path / "pool.onnx"))
    session = ort.InferenceSession(str(tmp_path / "pool.onnx"), providers=["CPUExecutionProvider"])
    sizes = [(64, 128), (25, 42), (9, 100), (3, 5)] if dynamic else [(64, 128)]
    for size in sizes:
        x = torch.randn(1, 8, *size)
        expected = torch.cat([F.adaptive_avg_pool2d(x, b).flatten(2) for b in (1, 2, 3, 6, 9)], 2)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("in_ch, out_ch", [(8, 8), (8, 5), (5, 8)])
def test_residual_adds_over_shared_channels(in_ch, out_ch):
    x, y = torch.randn(1, in_ch, 4, 4), torch.randn(1, out_ch, 4, 4)
    z = add_residual(y, x)
    shared = min(in_ch, out_ch)
    assert z.shape == y.shape
    torch.testing.assert_close(z[:, :shared], y[:, :shared] + x[:, :shared])
    torch.testing.assert_close(z[:, shared:], y[:, shared:])


@pytest.mark.parametrize("resolution", [1.0, 0.5])
@pytest.mark.parametrize("size", [(16, 32), (9, 13)])
def test_factorised_residual_keeps_size_and_sets_width(resolution, size):
    block = FactorisedResidual(12, 7, 10, dilation=4, resolution=resolution, dropout=0.3).eval()
    y = block(torch.randn(2, 12, *size))
    assert y.shape == (2, 10, *size) and (y >= 0).all()
