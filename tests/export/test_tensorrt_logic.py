"""Everything of the TensorRT export that needs no TensorRT."""

import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from ssr_deploy import SsrDeployError
from ssr_deploy.backends.tensorrt.build import onnx_for_tensorrt
from ssr_deploy.backends.tensorrt.engine import buffer_plan
from ssr_deploy.backends.tensorrt.library import TensorRT, check_compatibility, check_version
from ssr_deploy.backends.tensorrt.profiles import optimization_profile, parse_bhw
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.calibration import CalibrationBatches
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.tensorrt import EngineOptions, validate
from ssr_deploy.genotype import InputSpec
from ssr_deploy.media import find_images
from ssr_deploy.spec import ModelSpec


def test_profile_from_onnx_ranges(labels_onnx):
    meta = read_sidecar(labels_onnx)
    profile = optimization_profile(ModelSpec.from_dict(meta))
    assert profile.name == "images"
    assert (profile.min, profile.opt, profile.max) == ((1, 32, 64, 3), (2, 64, 128, 3),
                                                       (16, 128, 256, 3))


def test_profile_narrowed_by_user(labels_onnx):
    meta = read_sidecar(labels_onnx)
    profile = optimization_profile(ModelSpec.from_dict(meta), "1x64x128", "4x64x128", "8x128x256")
    assert profile.to_dict() == {"input": "images", "min": [1, 64, 128, 3],
                                 "opt": [4, 64, 128, 3], "max": [8, 128, 256, 3]}


@pytest.mark.parametrize("shapes, message", [
    (("1x64x128", None, "32x128x256"), "--max 32x128x256 is outside what the ONNX allows"),
    (("1x16x64", None, None), "--min 1x16x64 is outside"),
    ((None, "2x60x128", None), "multiples of 8"),
    (("4x64x128", "2x64x128", None), "min <= opt <= max"),
])
def test_profile_refusals(labels_onnx, shapes, message):
    with pytest.raises(SsrDeployError, match=message):
        optimization_profile(ModelSpec.load(labels_onnx), *shapes)


def test_static_onnx_profile_is_its_shape(tmp_path):
    from ssr_deploy import build_model
    from ssr_deploy.export.onnx import export_onnx

    path = export_onnx(build_model("ssr-cityscapes"), tmp_path / "s.onnx", size=(32, 64)).path
    meta = read_sidecar(path)
    profile = optimization_profile(ModelSpec.from_dict(meta))
    assert profile.min == profile.opt == profile.max == (1, 3, 32, 64)
    with pytest.raises(SsrDeployError, match=r"\(fixed: 1x32x64 to 1x32x64\)"):
        optimization_profile(ModelSpec.from_dict(meta), max_shape="4x32x64")


def test_parse_bhw():
    assert parse_bhw("4x512x1024") == (4, 512, 1024)
    with pytest.raises(SsrDeployError, match="BATCHxHEIGHTxWIDTH"):
        parse_bhw("512x1024")


@pytest.fixture
def engine_spec(labels_onnx):
    """The spec of an engine built from labels_onnx on an A100 with TensorRT 10.3."""
    meta = {**read_sidecar(labels_onnx), "onnx": "model.onnx", "tensorrt": {
        "version": "10.3.0", "gpu": {"name": "NVIDIA A100-SXM4-80GB",
                                     "compute_capability": "8.0"}},
            "profile": {"min": [1, 32, 64, 3], "opt": [2, 64, 128, 3], "max": [8, 512, 1024, 3]}}
    meta["output"] = {**meta["output"], "dtype": "uint8"}  # as the engine returns them
    return ModelSpec.from_dict(meta)


def full(version: str) -> TensorRT:
    """Full TensorRT as far as the compatibility checks see it: a builder and a version."""
    return TensorRT("tensorrt", SimpleNamespace(__version__=version))


def test_engine_on_other_tensorrt_is_refused_with_rebuild_line(engine_spec):
    with pytest.raises(SsrDeployError) as err:
        check_compatibility(engine_spec, full("10.7.0"), {"name": "NVIDIA A100-SXM4-80GB",
                                                          "compute_capability": "8.0"},
                            "m.engine")
    message = str(err.value)
    assert "built with TensorRT 10.3.0, this machine has TensorRT 10.7.0" in message
    assert "ssr-deploy export engine model.onnx -o m.engine" in message and "\n" not in message


def test_engine_on_other_gpu_is_refused_same_chip_warns(engine_spec):
    h100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(SsrDeployError, match=r"built for NVIDIA A100-SXM4-80GB \(sm_80\), this "
                                             r"GPU is NVIDIA H100 80GB HBM3 \(sm_90\)"):
        check_compatibility(engine_spec, full("10.3.0"), h100)
    pcie = {"name": "NVIDIA A100-PCIE-40GB", "compute_capability": "8.0"}
    warnings = check_compatibility(engine_spec, full("10.3.0"), pcie)
    assert "rebuilding here may be faster" in warnings[0]
    same = {"name": engine_spec.engine.gpu.name,
            "compute_capability": engine_spec.engine.gpu.compute_capability}
    assert check_compatibility(engine_spec, full("10.3.0"), same) == []
    with pytest.raises(SsrDeployError, match="no usable NVIDIA GPU"):
        check_compatibility(engine_spec, full("10.3.0"), None)


def _write_images(folder, n, size=(40, 70)):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(street_frames(n, *size, seed=3)):
        cv2.imwrite(str(folder / f"city_{i:03d}.png"), frame)
    return folder


def test_calibration_batches_use_runtime_preprocessing(tmp_path, labels_onnx):
    meta = read_sidecar(labels_onnx)
    folder = _write_images(tmp_path / "calib", 7)
    batches = CalibrationBatches(folder, ModelSpec.from_dict(meta).input, (64, 128), batch=2,
                                 limit=None)
    assert len(batches) == 3 and batches.shape == (2, 64, 128, 3)  # the 7th image is dropped
    got = list(batches)
    assert [b.shape for b in got] == [(2, 64, 128, 3)] * 3 and got[0].dtype == np.uint8
    expected = cv2.resize(cv2.imread(str(folder / "city_000.png")), (128, 64))
    np.testing.assert_array_equal(got[0][0], expected)  # BGR uint8 input: resize only
    float_spec = InputSpec(color="rgb")  # float32 NCHW, normalised by the caller
    first = next(iter(CalibrationBatches(folder, float_spec, (64, 128), batch=2)))
    assert first.shape == (2, 3, 64, 128) and first.dtype == np.float32
    np.testing.assert_allclose(first[0], expected[..., ::-1].transpose(2, 0, 1) / 255, atol=1e-6)


def test_calibration_refusals(tmp_path, labels_onnx):
    spec = ModelSpec.from_dict(read_sidecar(labels_onnx)).input
    with pytest.raises(SsrDeployError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SsrDeployError, match="no images"):
        find_images(tmp_path / "empty")
    _write_images(tmp_path / "few", 1)
    with pytest.raises(SsrDeployError, match="fewer than one batch of 4"):
        CalibrationBatches(tmp_path / "few", spec, (64, 128), batch=4)
    (tmp_path / "few" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SsrDeployError, match="cannot read .*broken.png: corrupt or not an image"):
        list(CalibrationBatches(tmp_path / "few", spec, (64, 128), batch=1))


def test_find_images_spreads_the_limit(tmp_path):
    for city in ("aachen", "bremen", "zurich"):
        _write_images(tmp_path / city, 4, size=(8, 8))
    picked = find_images(tmp_path, limit=3)
    assert {p.parent.name for p in picked} == {"aachen", "bremen", "zurich"}


def test_validate_refuses_before_any_work(tmp_path, labels_onnx):
    engine = tmp_path / "m.engine"
    plan = validate(labels_onnx, engine, EngineOptions(precision="fp32"))
    assert plan.onnx_meta["genotype"]["name"] == "ssr-cityscapes"
    assert plan.profile.max == (16, 128, 256, 3) and plan.convert_to is None
    cases = [(EngineOptions(precision="int8", calib_cache=str(tmp_path / "c")), labels_onnx,
              engine, "--precision int8 needs calibration images"),
             (EngineOptions(precision="int4"), labels_onnx, engine, "'int4' is not known"),
             (EngineOptions(fp32_layers=("nothing*",)), labels_onnx, engine, "matches no layer"),
             (EngineOptions(opt_level=7), labels_onnx, engine, "--opt-level 7"),
             (EngineOptions(workspace_gib=0), labels_onnx, engine, "--workspace 0"),
             (EngineOptions(), tmp_path / "none.onnx", engine, "does not exist"),
             (EngineOptions(), labels_onnx, tmp_path / "no" / "m.engine", "folder .* does not"),
             (EngineOptions(), labels_onnx, labels_onnx, "is the input ONNX"),
             (EngineOptions(max_shape="64x64x128"), labels_onnx, engine, "outside")]
    for options, onnx_path, out, message in cases:
        with pytest.raises(SsrDeployError, match=message):
            validate(onnx_path, out, options)


def test_the_default_engine_is_fp16_through_an_fp16_onnx(tmp_path, labels_onnx):
    plan = validate(labels_onnx, tmp_path / "m.engine", EngineOptions())
    assert plan.precision == "fp16" and plan.convert_to == tmp_path / "model.fp16.onnx"


def test_a_converted_onnx_keeps_its_precision(tmp_path, labels_onnx, fp16_onnx):
    plan = validate(fp16_onnx, tmp_path / "m.engine", EngineOptions())
    assert plan.precision == "fp16" and plan.convert_to is None
    with pytest.raises(SsrDeployError, match="is fp16; build a int8 engine from the fp32"):
        validate(fp16_onnx, tmp_path / "m.engine", EngineOptions(precision="int8"))
    with pytest.raises(SsrDeployError, match="already fp16"):
        validate(fp16_onnx, tmp_path / "m.engine", EngineOptions(fp32_layers=("head.*",)))


def test_tensorrt_older_than_10_3_is_one_line():
    check_version("tensorrt", "10.3.0.26")
    check_version("tensorrt", "11.4.0.106")
    check_version("tensorrt-rtx", "1.7.1.116")
    with pytest.raises(SsrDeployError, match="TensorRT 10.2.0 is too old.*>= 10.3"):
        check_version("tensorrt", "10.2.0")
    with pytest.raises(SsrDeployError, match="too old"):
        check_version("tensorrt", "8.6.1")
    with pytest.raises(SsrDeployError, match="TensorRT-RTX 1.6.0 is too old.*>= 1.7"):
        check_version("tensorrt-rtx", "1.6.0")


def test_tensorrt_keeps_uint8_labels_and_can_fall_back_to_int32(labels_onnx):
    """TensorRT converts uint8 only to and from fp32/fp16 (``DataType.UINT8``'s docstring in
    TensorRT 10.3, 10.16 and 11.4): what it gets is ArgMax -> Cast(float) -> Cast(uint8), the
    labels still uint8; the int32 fallback (Cast(int32)) is the same graph otherwise. Both
    give the labels of the exported graph (onnxruntime)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(labels_onnx))
    meta = read_sidecar(labels_onnx)
    for_trt, same_meta = onnx_for_tensorrt(model, meta)
    assert same_meta == meta
    nodes = {o: n for n in for_trt.graph.node for o in n.output}
    to_uint8 = [n for n in for_trt.graph.node if n.op_type == "Cast"
                and onnx.helper.get_attribute_value(n.attribute[0]) == onnx.TensorProto.UINT8]
    assert len(to_uint8) == 1
    before = nodes[to_uint8[0].input[0]]  # what the uint8 cast reads: a float, from a Cast
    assert before.op_type == "Cast" and onnx.helper.get_attribute_value(
        before.attribute[0]) == onnx.TensorProto.FLOAT
    assert for_trt.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert onnx_for_tensorrt(for_trt, meta)[0].graph.node == for_trt.graph.node  # once only
    rewritten, engine_meta = onnx_for_tensorrt(model, meta, int32_labels=True)
    assert engine_meta["output"]["dtype"] == "int32" and meta["output"]["dtype"] == "uint8"
    assert rewritten.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    for m in (for_trt, rewritten):
        onnx.checker.check_model(m, full_check=True)
    frames = street_frames(2, 64, 128)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            .run(None, {"images": frames})[0] for m in (model, for_trt, rewritten)]
    assert runs[1].dtype == np.uint8 and runs[2].dtype == np.int32
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2].astype(np.uint8))


def test_corrupt_onnx_is_named(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(SsrDeployError, match="bad.onnx is not a readable ONNX file"):
        validate(bad, tmp_path / "m.engine", EngineOptions())


def test_missing_tensorrt_is_one_clear_line(tmp_path, labels_onnx, monkeypatch):
    from ssr_deploy.export.tensorrt import build_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails as where it is absent
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(SsrDeployError, match="TensorRT is not installed: for any NVIDIA GPU, "
                                             r"pip install .*\[cu12\].* pip install "
                                             r"'ssr-deploy\[rtx\]'"):
        build_engine(labels_onnx, tmp_path / "m.engine", EngineOptions())
    with pytest.raises(SsrDeployError, match=r"TensorRT-RTX is not installed: pip install "
                                             r"'ssr-deploy\[rtx\]'"):
        build_engine(labels_onnx, tmp_path / "m.engine", EngineOptions(builder="tensorrt-rtx"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_buffer_plan_from_profile(engine_spec):
    inp, out = buffer_plan(engine_spec)
    assert inp.nbytes == 8 * 512 * 1024 * 3 and out.shape == (8, 512, 1024)
    assert out.nbytes == 8 * 512 * 1024  # uint8 labels: 4 MB, not 320 MB of logits
    assert engine_spec.output_shape((2, 64, 128, 3)) == (2, 64, 128)


def test_engine_io_is_checked_against_the_sidecar(labels_onnx):
    from ssr_deploy.backends.tensorrt.engine import TensorIO, check_engine_io

    meta = read_sidecar(labels_onnx)
    meta["output"]["dtype"] = "int32"  # as the int32 fallback makes it
    meta = ModelSpec.from_dict(meta)
    good = [TensorIO("images", True, "uint8", (-1, -1, -1, 3)),
            TensorIO("labels", False, "int32", (-1, -1, -1))]
    check_engine_io(meta, good, "m.engine")
    bad = [(good[:1], "has 1 I/O tensors"),
           ([good[0], TensorIO("logits", False, "int32", (-1, -1, -1))], "no output 'labels'"),
           ([good[0], TensorIO("labels", False, "uint8", (-1, -1, -1))], "labels is uint8"),
           ([TensorIO("images", True, "uint8", (-1, 3, -1, -1)), good[1]], "images is uint8")]
    for tensors, message in bad:
        with pytest.raises(SsrDeployError, match=message):
            check_engine_io(meta, tensors, "m.engine")


def test_a_timing_cache_of_another_gpu_is_said_and_left_as_it_is(tmp_path, capsys):
    """Full TensorRT refuses a cache of another release or GPU (``set_timing_cache`` returns
    False): the build runs without it, says so, and the file is not overwritten. The config
    is a stand-in whose two methods are the real binding's (TensorRT-RTX's IBuilderConfig
    has the same signatures)."""

    tensorrt_rtx = pytest.importorskip("tensorrt_rtx")
    from ssr_deploy.backends.tensorrt.build import full_tensorrt_timing_cache

    for name, params in (("create_timing_cache", "serialized_timing_cache"),
                         ("set_timing_cache", "ignore_mismatch")):
        assert params in getattr(tensorrt_rtx.IBuilderConfig, name).__doc__.split("\n")[0]

    class Config:
        def __init__(self, accepts) -> None:
            self.accepts, self.attached = accepts, []

        def create_timing_cache(self, serialized_timing_cache):
            return SimpleNamespace(data=bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            self.attached.append(cache.data)
            return self.accepts(cache.data)

    cache = tmp_path / "trt.cache"
    cache.write_bytes(b"another GPU's")
    config = Config(accepts=lambda data: data == b"")
    assert full_tensorrt_timing_cache(config, cache) is None
    assert config.attached == [b"another GPU's", b""]
    assert cache.read_bytes() == b"another GPU's"
    assert "was made by another TensorRT release or GPU" in capsys.readouterr().err
    config = Config(accepts=lambda data: True)
    assert full_tensorrt_timing_cache(config, cache).data == b"another GPU's"  # kept, written back
    assert full_tensorrt_timing_cache(config, tmp_path / "new.cache").data == b""
