import pytest


@pytest.fixture(scope="session")
def fp16_onnx(labels_onnx, tmp_path_factory):
    from ssr_deploy.export.precision import PrecisionOptions, convert_precision

    path = tmp_path_factory.mktemp("fp16") / "model.fp16.onnx"
    return convert_precision(labels_onnx, path, PrecisionOptions("fp16")).path
