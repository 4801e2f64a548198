"""Real TensorRT builds and runs. Marked ``tensorrt``: they need TensorRT >= 10, cuda-python
and an NVIDIA GPU (the docker/ image has them); CI and CPU machines deselect them."""

import json

import cv2
import numpy as np
import pytest

from ssr_deploy import SsrDeployError, build_model
from ssr_deploy.backends import open_backend
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.export.tensorrt import EngineOptions, build_engine
from ssr_deploy.preprocess import frames_to_input
from ssr_deploy.runtime.compare import compare
from ssr_deploy.spec import IOFormat, sidecar_path

pytestmark = [pytest.mark.tensorrt, pytest.mark.cuda]


@pytest.fixture(scope="module", autouse=True)
def trt():
    return pytest.importorskip("tensorrt", reason="TensorRT is not installed here")


@pytest.fixture(scope="module")
def trained_net():
    from tests.export.test_onnx import trained_like

    return trained_like(build_model("ssr-cityscapes"))


def _labels(backend, frames):
    return backend.infer(frames_to_input(frames, backend.spec.input))


def test_fp16_engine_from_dynamic_labels_onnx(tmp_path, trained_net, trt):
    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(256, 512),
                            dynamic_batch=True, max_batch=8, dynamic_size=True,
                            io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = tmp_path / "m.engine"
    cache = tmp_path / "timing.cache"
    meta = build_engine(onnx_path, engine, EngineOptions(timing_cache=str(cache)))
    assert meta["precision"] == "fp16" and meta["tensorrt"]["version"] == trt.__version__
    assert meta["tensorrt"]["gpu"]["compute_capability"] and cache.stat().st_size > 0
    with open_backend(engine) as fast, open_backend(onnx_path) as ref:
        for batch, h, w in [(1, 256, 512), (3, 128, 256), (8, 512, 1024)]:
            frames = street_frames(batch, h, w, seed=batch)
            got, expected = _labels(fast, frames), _labels(ref, frames)
            assert got.shape == (batch, h, w) and got.dtype == np.uint8
            assert (got == expected).mean() >= 0.99  # FP16 vs FP32
    # the timing cache is read back and reused without error (its speed-up is not asserted)
    size = cache.stat().st_size
    build_engine(onnx_path, tmp_path / "m2.engine", EngineOptions(timing_cache=str(cache)))
    assert cache.stat().st_size >= size


def test_an_onnx_runs_through_the_engine_cache(tmp_path, trained_net, capfd):
    """engine_for builds for this GPU once and finds it again; Segmenter.load on the ONNX
    with backend="tensorrt" builds its own (fp32, the ONNX's precision) and runs it."""
    from ssr_deploy import Segmenter
    from ssr_deploy.export import engine_for

    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(128, 256),
                            dynamic_batch=True, max_batch=4,
                            io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = engine_for(onnx_path, cache_dir=tmp_path / "cache")
    assert "building the engine of" in capfd.readouterr().err
    assert engine_for(onnx_path, cache_dir=tmp_path / "cache") == engine
    assert "building" not in capfd.readouterr().err
    assert read_sidecar(engine)["cache"]["gpu"]["compute_capability"]
    frames = street_frames(3, 128, 256, seed=5)
    with Segmenter.load(onnx_path, backend="tensorrt",
                        engine_cache=str(tmp_path / "cache")) as seg, \
            open_backend(onnx_path) as ref:
        got = np.stack(seg.predict_batch(list(frames)))
        assert (got == _labels(ref, frames)).mean() >= 0.999  # fp32 engine vs fp32 ONNX
        assert any("is fp32, and so is its engine" in note for note in seg.backend.notes)


def test_fp32_engine_matches_onnx_logits(tmp_path, trained_net):
    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(128, 256)).path
    engine = tmp_path / "m.engine"
    build_engine(onnx_path, engine, EngineOptions(precision="fp32"))
    frames = street_frames(1, 128, 256)
    with open_backend(engine) as fast, open_backend(onnx_path) as ref:
        got, expected = _labels(fast, frames), _labels(ref, frames)
    assert np.abs(got - expected).max() <= 1e-2  # TF32 kernels may be picked
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999


def test_int8_engine_from_a_verified_qdq_onnx(tmp_path, trained_net):
    """--precision int8 on an fp32 ONNX converts it first (calibrated, verified on the CPU),
    then compiles the Q/DQ graph; a second build reuses the calibration cache."""
    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(128, 256),
                            io=IOFormat("uint8-nhwc-bgr", "labels")).path
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, frame in enumerate(street_frames(16, 128, 256, seed=11)):
        cv2.imwrite(str(calib / f"{i}.png"), frame)
    engine = tmp_path / "m.engine"
    options = EngineOptions(precision="int8", calib_dir=str(calib), calib_n=16,
                            calib_cache=str(tmp_path / "cache"))
    meta = build_engine(onnx_path, engine, options)
    assert meta["precision"] == "int8" and meta["tensorrt"]["strongly_typed"]
    assert meta["quantization"]["target"] == "tensorrt" and meta["output"]["dtype"] == "uint8"
    assert (tmp_path / "m.int8.onnx").is_file()  # the verified graph the engine holds
    again = build_engine(onnx_path, tmp_path / "again.engine", EngineOptions(
        precision="int8", calib_cache=str(tmp_path / "cache")))  # no images needed
    assert again["quantization"]["cache_hit"]
    report = compare(engine, onnx_path, n=8)
    assert report["label_agreement"] >= 0.98


def test_fp32_layers_build_through_the_fp16_onnx(tmp_path, trained_net):
    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(64, 128)).path
    meta = build_engine(onnx_path, tmp_path / "m.engine", EngineOptions(fp32_layers=("head.psp",)))
    assert meta["precision"] == "fp16" and meta["fp32_layers"] == ["head.psp"]


def test_engine_from_another_tensorrt_is_refused(tmp_path, trained_net):
    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(64, 128)).path
    engine = tmp_path / "m.engine"
    build_engine(onnx_path, engine, EngineOptions())
    meta = json.loads(sidecar_path(engine).read_text())
    meta["tensorrt"]["version"] = "9.9.9"
    sidecar_path(engine).write_text(json.dumps(meta))
    with pytest.raises(SsrDeployError, match="built with TensorRT 9.9.9"):
        open_backend(engine)
    assert read_sidecar(engine)["tensorrt"]["version"] == "9.9.9"


def test_tensorrt_profile_maps_layers(tmp_path, trained_net):
    from ssr_deploy.runtime.profile import profile

    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(128, 256)).path
    build_engine(onnx_path, tmp_path / "m.engine", EngineOptions())
    result = profile(tmp_path / "m.engine", iters=3, trace=tmp_path / "t.json")
    modules = {row["module"] for row in result["rows"]}
    assert "stages.1.layers.4" in modules and "traceEvents" in json.loads(
        (tmp_path / "t.json").read_text())


def test_cuda_graph_and_double_buffered_stream_match_plain_runs(tmp_path, trained_net):
    from ssr_deploy.runtime.segmenter import Segmenter

    onnx_path = export_onnx(trained_net, tmp_path / "m.onnx", size=(128, 256),
                            io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = tmp_path / "m.engine"
    build_engine(onnx_path, engine, EngineOptions())
    frames = list(street_frames(6, 128, 256, seed=2))
    with Segmenter.load(engine) as plain, Segmenter.load(engine, cuda_graph=True) as graphed:
        expected = plain.predict_batch(frames[:1]) + [plain(f) for f in frames[1:]]
        assert plain.backend.last_timing["compute_ms"] > 0
        replayed = [graphed(f) for f in frames]
        streamed = list(plain.predict_stream(iter(frames)))
    for a, b, c in zip(expected, replayed, streamed, strict=True):
        assert (a == b).all() and (a == c).all()
