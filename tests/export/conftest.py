import pytest
import torch

from ssr_deploy import build_model
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.model.net import with_trained_margins
from ssr_deploy.spec import IOFormat


def confident_net():
    """An untrained SSRNet whose classifier is scaled up: its label maps have the margins of
    a trained network's, so rounding (fp16, int8) flips few of them, as it would there."""
    torch.manual_seed(0)
    return with_trained_margins(build_model("ssr-cityscapes"))


@pytest.fixture(scope="session")
def labels_onnx(tmp_path_factory):
    """A uint8-in / labels-out ONNX with dynamic batch (1-16) and size (32x64 to 128x256)."""
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(confident_net(), path, size=(64, 128), batch=2,
                dynamic_batch=True, max_batch=16, dynamic_size=True, min_size=(32, 64),
                max_size=(128, 256), io=IOFormat("uint8-nhwc-bgr", "labels"))
    return path


@pytest.fixture(scope="session")
def fp16_onnx(labels_onnx, tmp_path_factory):
    from ssr_deploy.export.precision import PrecisionOptions, convert_precision

    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    return convert_precision(labels_onnx, path, PrecisionOptions("fp16")).path
