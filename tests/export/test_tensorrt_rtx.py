"""Real engines, built on this machine by TensorRT-RTX (its builder needs no GPU): every
export form the product makes, and random networks of the search space. Each builds, and the
network's I/O as the builder sees it (names, dtypes, dynamic dims) matches the sidecar.
Running an engine needs an RTX GPU; here the runtime's one line about that is checked."""

from __future__ import annotations

import json
import random

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ssr_deploy import Segmenter, SsrDeployError, build_model
from ssr_deploy.backends.tensorrt.build import BuildSettings, build_network, check_uint8_inputs
from ssr_deploy.backends.tensorrt.engine import check_engine_io
from ssr_deploy.backends.tensorrt.library import RTX_DEFAULT_TARGETS, load_tensorrt
from ssr_deploy.backends.tensorrt.profiles import Profile
from ssr_deploy.cli import main
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.export.tensorrt import EngineOptions, build_engine
from ssr_deploy.space import SearchSpace
from ssr_deploy.spec import IOFormat, ModelSpec, file_sha256, sidecar_path
from tests.helpers import confident_net

RTX = EngineOptions(builder="tensorrt-rtx")


@pytest.fixture(scope="module", autouse=True)
def rtx():
    try:
        return load_tensorrt("tensorrt-rtx")
    except SsrDeployError as e:  # part of README's test install: never a silent skip
        pytest.fail(f"{e} (README's test command installs the [rtx] extra)")


def engine_matches_sidecar(library, engine) -> dict:
    """The sidecar the engine got, after checking the network its ONNX parses into (as the
    builder sees it) against it, and the engine's bytes against its builder."""
    meta = read_sidecar(engine)
    onnx_path = engine.parent / meta["onnx"]
    profile = Profile(**{"name" if k == "input" else k: tuple(v) if k != "input" else v
                         for k, v in meta["profile"].items()})
    built = build_network(library, onnx.load(str(onnx_path)), onnx_path, BuildSettings(),
                          profile, read_sidecar(onnx_path))
    check_engine_io(ModelSpec.from_dict(meta), built.io, engine.name)
    assert engine.read_bytes()[:4] == b"vtrt"
    assert meta["tensorrt"]["builder"] == "tensorrt-rtx"
    assert meta["tensorrt"]["version"] == library.version and meta["tensorrt"]["gpu"] is None
    return meta


@pytest.mark.parametrize("input_format", ["float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb"])
@pytest.mark.parametrize("output_format", ["logits", "labels"])
def test_every_io_form_builds(tmp_path, rtx, input_format, output_format):
    onnx_path = export_onnx(confident_net(), tmp_path / "m.onnx", size=(32, 64),
                            io=IOFormat(input_format, output_format)).path
    check_uint8_inputs(onnx.load(str(onnx_path)))
    engine = tmp_path / "m.engine"
    meta = build_engine(onnx_path, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    assert engine_matches_sidecar(rtx, engine) == meta
    assert meta["precision"] == "fp32" and meta["input"]["name"] == "images"
    assert meta["tensorrt"]["compute_capabilities"] == list(RTX_DEFAULT_TARGETS)
    if output_format == "labels":  # TensorRT-RTX takes the Cast to uint8: 1/4 the download
        assert meta["output"]["dtype"] == "uint8"


def test_uint8_inputs_feed_only_casts_static_and_dynamic(labels_onnx, tmp_path):
    """The rule TensorRT sets for uint8 (NVIDIA/TensorRT#3985), on the exported ONNX's
    structure: the dynamic graph reads its size off the cast, not off the uint8 input."""
    for path in (labels_onnx, export_onnx(build_model("ssr-cityscapes"), tmp_path / "s.onnx",
                                          size=(32, 64), io=IOFormat("uint8-nhwc-rgb")).path):
        graph = onnx.load(str(path)).graph
        consumers = [n for n in graph.node if "images" in n.input]
        assert [n.op_type for n in consumers] == ["Cast"], [n.name for n in consumers]
    old = onnx.load(str(labels_onnx))  # as exported before: a Transpose on the uint8 frame
    cast = next(n for n in old.graph.node if n.op_type == "Cast")
    old.graph.node.insert(0, onnx.helper.make_node("Transpose", ["images"], ["t"], "io/permute",
                                                   perm=[0, 3, 1, 2]))
    with pytest.raises(SsrDeployError, match="'images' feeds Transpose .* export the ONNX "
                                             "again") as err:
        check_uint8_inputs(old)
    assert "\n" not in str(err.value) and cast is not None


def test_dynamic_batch_and_size_fp16_engine_is_the_production_export(labels_onnx, rtx,
                                                                      tmp_path):
    """README's production export (uint8 frames in, labels out, dynamic batch and size),
    fp16 by default, converted and verified on the CPU first."""
    engine = tmp_path / "m.engine"
    meta = build_engine(labels_onnx, engine, RTX)
    assert meta["precision"] == "fp16" and meta["precision_check"]["label_agreement"] >= 0.99
    assert meta["profile"] == {"input": "images", "min": [1, 32, 64, 3], "opt": [2, 64, 128, 3],
                               "max": [16, 128, 256, 3]}
    assert meta["input"]["shape"] == [-1, -1, -1, 3]
    engine_matches_sidecar(rtx, engine)


def test_label_dtype_int32_and_dynamic_batch(tmp_path, rtx):
    onnx_path = export_onnx(confident_net(), tmp_path / "m.onnx", size=(32, 64),
                            dynamic_batch=True, max_batch=4,
                            io=IOFormat("uint8-nhwc-bgr", "labels", "int32")).path
    engine = tmp_path / "m.engine"
    meta = build_engine(onnx_path, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx",
                                                         max_shape="4x32x64"))
    assert meta["output"]["dtype"] == "int32" and meta["input"]["shape"] == [-1, 32, 64, 3]
    assert meta["profile"]["max"] == [4, 32, 64, 3]
    engine_matches_sidecar(rtx, engine)


def test_fp16_with_fp32_layers(fp16_onnx, labels_onnx, rtx, tmp_path):
    plain = build_engine(fp16_onnx, tmp_path / "plain.engine", RTX)  # already fp16
    kept = build_engine(labels_onnx, tmp_path / "kept.engine",
                        EngineOptions(builder="tensorrt-rtx", fp32_layers=("head.psp",)))
    assert plain["precision"] == kept["precision"] == "fp16"
    assert kept["fp32_layers"] == ["head.psp"] and not plain.get("fp32_layers")
    for name in ("plain.engine", "kept.engine"):
        engine_matches_sidecar(rtx, tmp_path / name)


@pytest.fixture(scope="module")
def calib(street_pngs):
    return street_pngs


@pytest.mark.parametrize("dynamic", [False, True])
def test_int8_tensorrt_target_static_and_dynamic(tmp_path, rtx, calib, labels_onnx, dynamic):
    onnx_path = labels_onnx if dynamic else export_onnx(
        confident_net(), tmp_path / "s.onnx", size=(64, 128),
        io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = tmp_path / "m.engine"
    meta = build_engine(onnx_path, engine, EngineOptions(
        precision="int8", builder="tensorrt-rtx", calib_dir=str(calib), calib_n=6,
        calib_cache=str(tmp_path / "c"), min_agreement=0.9))
    assert meta["precision"] == "int8" and meta["quantization"]["target"] == "tensorrt"
    engine_matches_sidecar(rtx, engine)


def test_an_int8_onnx_for_the_cpu_is_refused_before_any_work(tmp_path, calib, labels_onnx):
    from ssr_deploy.export.precision import PrecisionOptions, convert_precision

    cpu = convert_precision(labels_onnx, tmp_path / "m.int8.onnx", PrecisionOptions(
        "int8", calib_dir=str(calib), calib_n=6, int8_target="cpu", min_agreement=0.5)).path
    with pytest.raises(SsrDeployError, match="quantized for onnxruntime on CPUs"):
        build_engine(cpu, tmp_path / "m.engine", RTX)
    assert not (tmp_path / "m.engine").exists()


@settings(max_examples=4, deadline=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), depth=st.floats(0.2, 1.0), width=st.floats(0.0, 1.0))
def test_random_networks_of_the_space_build(tmp_path_factory, rtx, seed, depth, width):
    genotype = SearchSpace().sample(random.Random(seed), depth=depth, width=width)
    folder = tmp_path_factory.mktemp("net")
    onnx_path = export_onnx(build_model(genotype).eval(), folder / "m.onnx", size=(32, 64),
                            dynamic_batch=True, max_batch=2,
                            io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = folder / "m.engine"
    build_engine(onnx_path, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    assert engine_matches_sidecar(rtx, engine)["genotype"]["name"] == genotype.name


def test_cli_builds_for_named_gpus_and_refuses_what_rtx_cannot(labels_onnx, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.engine"
    result = runner.invoke(main, ["export", "engine", str(labels_onnx), "-o", str(out),
                                  "--builder", "tensorrt-rtx", "--compute-capability",
                                  "7.5,8.6", "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    assert "TensorRT-RTX 1.7" in result.output and "for sm_75/86: RTX GPUs" in result.output
    built = read_sidecar(out)["tensorrt"]
    assert built["compute_capabilities"] == ["7.5", "8.6"]
    assert not built["compute_capabilities_default"]
    for args, message in [(["--compute-capability", "9.0"], "Hopper"),
                          (["--compute-capability", "8.6", "--builder", "tensorrt"],
                           "TensorRT is not installed"),
                          (["--timing-cache", str(tmp_path / "t.cache")], "has no effect")]:
        bad = tmp_path / "bad.engine"
        result = runner.invoke(main, ["export", "engine", str(labels_onnx), "-o", str(bad),
                                      "--builder", "tensorrt-rtx", *args])
        assert result.exit_code != 0 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not bad.exists() and not (tmp_path / "t.cache").exists()


def test_turing_fp32_refusal_is_one_line_with_the_fix(tmp_path):
    onnx_path = export_onnx(confident_net(), tmp_path / "m.onnx", size=(32, 64)).path
    with pytest.raises(SsrDeployError, match="for Turing.*FP32 GEMM.*build fp16 for 7.5"):
        build_engine(onnx_path, tmp_path / "m.engine", EngineOptions(
            precision="fp32", builder="tensorrt-rtx", compute_capabilities="7.5"))
    assert not (tmp_path / "m.engine").exists()


@pytest.fixture(scope="module")
def rtx_engine(labels_onnx, tmp_path_factory):
    engine = tmp_path_factory.mktemp("engine") / "m.engine"
    build_engine(labels_onnx, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    return engine


def test_loading_needs_an_rtx_gpu_in_one_line(rtx_engine):
    """This machine has no NVIDIA GPU: the line says what the engine needs and what is here."""
    pytest.importorskip("cuda.bindings", reason="cuda-python comes with the [rtx] extra")
    from ssr_deploy.backends.tensorrt import cuda

    if cuda.find_gpu()[0] is not None:
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    with pytest.raises(SsrDeployError, match=r"m.engine is a TensorRT-RTX engine for "
                                             r"sm_86, sm_89, sm_120; this machine has no usable "
                                             "NVIDIA GPU") as err:
        Segmenter.load(rtx_engine)
    assert "\n" not in str(err.value)


def test_an_engine_and_a_sidecar_of_the_other_builder_are_refused(rtx_engine, tmp_path):
    copy = tmp_path / "m.engine"
    copy.write_bytes(rtx_engine.read_bytes())
    meta = read_sidecar(rtx_engine)
    meta["tensorrt"]["builder"] = "tensorrt"
    sidecar_path(copy).write_text(json.dumps(meta))
    with pytest.raises(SsrDeployError, match="is a TensorRT-RTX engine but its sidecar says "
                                             "TensorRT"):
        Segmenter.load(copy)
    fake = tmp_path / "full.engine"
    fake.write_bytes(b"ftrt" + rtx_engine.read_bytes()[4:])  # not an RTX engine's header
    meta = {**read_sidecar(rtx_engine), "file": fake.name, "sha256": file_sha256(fake)}
    sidecar_path(fake).write_text(json.dumps(meta))
    with pytest.raises(SsrDeployError, match="is a TensorRT engine but its sidecar says "
                                             "TensorRT-RTX"):
        Segmenter.load(fake)


def test_the_latency_tables_head_part_builds_as_export_engine_builds(rtx):
    """The LUT's TensorRT timer builds through build_network: the head part's uint8 labels
    stay uint8 as in `export engine`."""
    from ssr_deploy.latency import LutOptions, export_part, probes
    from tests.latency.test_latency import TINY

    options = LutOptions(size=(32, 64), width_grid=(2, 2, 2), check_points=0)
    head = next(p for p in probes(TINY, options) if p.key.startswith("head"))
    built = build_network(rtx, onnx.load_from_string(export_part(head)), f"part {head.key}",
                          BuildSettings())
    outputs = [t for t in built.io if not t.is_input]
    assert [t.dtype for t in outputs] == ["uint8"] and built.engine[:4] == b"vtrt"
    assert np.prod(outputs[0].shape) == 32 * 64


def test_a_refused_uint8_output_is_rebuilt_with_int32_labels(rtx, labels_onnx, monkeypatch,
                                                             capsys):
    """Where a TensorRT refuses the Cast to uint8, the build is retried once with int32
    labels (the runtime narrows them), said on stderr; the metadata follows."""
    import ssr_deploy.backends.tensorrt.build as build

    real, calls = build._build, []

    def refuse_uint8(library, model, source, settings, profile, meta, progress, int32):
        calls.append(int32)
        if not int32:
            raise SsrDeployError("Cast to UINT8 is not supported (as a stand-in refusal)")
        return real(library, model, source, settings, profile, meta, progress, int32)

    monkeypatch.setattr(build, "_build", refuse_uint8)
    meta = read_sidecar(labels_onnx)
    profile = Profile("images", (1, 64, 128, 3), (1, 64, 128, 3), (1, 64, 128, 3))
    built = build.build_network(rtx, onnx.load(str(labels_onnx)), labels_onnx,
                                BuildSettings(compute_capabilities=("8.6",)), profile, meta)
    assert calls == [False, True] and built.meta["output"]["dtype"] == "int32"
    assert [t.dtype for t in built.io if not t.is_input] == ["int32"]
    assert "uint8 labels refused" in capsys.readouterr().err


def test_a_default_engine_targets_what_the_support_matrix_says(rtx_engine, rtx):
    """TensorRT-RTX's support matrices: portable across 8.6, 8.9 and 12.0 by default; 7.5,
    8.0 and 12.1 only when named. An A100 (8.0) is told to build for it."""
    from ssr_deploy.backends.tensorrt.library import RTX_TARGETS, check_gpu_runs, rtx_targets
    from ssr_deploy.spec import ModelSpec

    assert set(RTX_TARGETS) == set(rtx_targets(rtx))  # what 1.7's enum can name
    built = ModelSpec.load(rtx_engine).engine
    assert built.compute_capabilities == ("8.6", "8.9", "12.0")
    for name, cc in (("NVIDIA RTX 4090", "8.9"), ("NVIDIA RTX 3090", "8.6")):
        check_gpu_runs("m.engine", built, {"name": name, "compute_capability": cc})
    with pytest.raises(SsrDeployError, match=r"this GPU is NVIDIA A100.*\(sm_80\): build it "
                                             "again with --compute-capability 8.0"):
        check_gpu_runs("m.engine", built, {"name": "NVIDIA A100-SXM4-80GB",
                                           "compute_capability": "8.0"})
    with pytest.raises(SsrDeployError, match=r"\(sm_90\): TensorRT-RTX does not run on it"):
        check_gpu_runs("m.engine", built, {"name": "NVIDIA H100", "compute_capability": "9.0"})
