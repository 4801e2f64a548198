"""The torch backend on a GPU: FP16, channels_last, CUDA graphs. Marked ``cuda``."""

import numpy as np
import pytest
import torch

from ssr_deploy import Segmenter, build_model, save_checkpoint
from ssr_deploy.data.synthetic import street_frames

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to PyTorch")


def test_fp16_and_cuda_graphs_agree_with_fp32(tmp_path):
    from tests.export.test_onnx import trained_like

    net = trained_like(build_model("ssr-cityscapes"))
    ckpt = save_checkpoint(tmp_path / "n.pt", net, net.genotype)
    frames = list(street_frames(3, 256, 512, seed=1))
    with Segmenter.load(ckpt, device="cuda", size=(256, 512)) as fp32, \
            Segmenter.load(ckpt, device="cuda", size=(256, 512), fp16=True,
                           cuda_graphs=True) as fast:
        reference = fp32.predict_batch(frames)
        got = [fast(f) for f in frames] + [fast(f) for f in frames]  # second pass: replays
        assert fast.backend.last_timing["compute_ms"] > 0
    for a, b in zip(reference * 2, got, strict=True):
        assert (a == b).mean() >= 0.99 and b.dtype == np.uint8
