"""OpenVINO: IRs written and verified by `export openvino` (fp32, bf16, int8), the backend
(precision always named and read back, static shapes), its profiler and part timer, and the
bad inputs: each one line, nothing written. Real OpenVINO on this CPU."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from ssr_deploy import Segmenter, SsrDeployError
from ssr_deploy.backends.openvino import library as ov
from ssr_deploy.cli import main
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.openvino import IROptions, export_openvino
from ssr_deploy.spec import ModelSpec

ov.import_openvino()
NATIVE_BF16 = ov.bf16_support() == "native"
needs_bf16 = pytest.mark.skipif(not NATIVE_BF16, reason="this CPU has no native bf16")


@pytest.fixture(scope="module")
def irs(labels_onnx, street_pngs, tmp_path_factory):
    """fp32, bf16 (where the CPU has it) and int8 IRs of the confident network."""
    folder = tmp_path_factory.mktemp("ir")
    out = {"fp32": export_openvino(labels_onnx, folder / "fp32.xml").path}
    if NATIVE_BF16:
        out["bf16"] = export_openvino(labels_onnx, folder / "bf16.xml",
                                      IROptions("bf16")).path
    out["int8"] = export_openvino(labels_onnx, folder / "int8.xml", IROptions(
        "int8", calib_dir=str(street_pngs), calib_cache=str(folder / "cache"),
        min_agreement=0.9)).path
    return out


def ort_labels(onnx_path, frames: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": frames})[0]


def hint_of(segmenter: Segmenter, shape: tuple[int, ...]) -> str:
    """The precision OpenVINO compiled the model's ``shape`` at, read back from it."""
    return str(segmenter.backend.compiled.compiled(shape).get_property(
        "INFERENCE_PRECISION_HINT"))


def test_an_fp32_ir_runs_in_fp32_even_where_the_cpu_has_bf16(irs, labels_onnx):
    frames = street_frames(3, 64, 128, seed=4)
    with Segmenter.load(irs["fp32"]) as seg:
        assert seg.backend.name == "openvino" and seg.backend.precision == "fp32"
        labels = np.stack(seg.predict_batch(list(frames)))
        assert "float32" in hint_of(seg, (3, 64, 128, 3))
    agreement = np.mean(labels == ort_labels(labels_onnx, frames))
    assert agreement > 0.999
    meta = ModelSpec.load(irs["fp32"])
    assert meta.openvino.inference_precision == "fp32" and meta.precision == "fp32"
    assert meta.precision_check.label_agreement >= 0.999


def test_shapes_compile_once_each_and_give_the_same_labels(irs):
    frames = street_frames(3, 64, 128, seed=5)
    with Segmenter.load(irs["fp32"]) as seg:
        one = [seg(f) for f in frames]
        three = seg.predict_batch(list(frames))
        again = seg(frames[0])
        assert set(seg.backend.compiled._compiled) == {(1, 64, 128, 3), (3, 64, 128, 3)}
    for a, b in zip(one, three, strict=True):
        assert np.mean(a == b) > 0.999
    np.testing.assert_array_equal(one[0], again)


@needs_bf16
def test_a_bf16_ir_runs_in_bf16_and_records_its_agreement(irs):
    spec = ModelSpec.load(irs["bf16"])
    assert spec.precision == "bf16" and spec.openvino.inference_precision == "bf16"
    check = spec.precision_check
    assert 0.995 <= check.label_agreement <= 1 and check.min_agreement == 0.995
    with Segmenter.load(irs["bf16"]) as seg:
        assert seg.backend.precision == "bf16"
        seg(street_frames(1, 64, 128)[0])
        assert "bfloat16" in hint_of(seg, (1, 64, 128, 3))
    with Segmenter.load(irs["bf16"], precision="fp32") as seg:  # asked for: said, and done
        seg(street_frames(1, 64, 128)[0])
        assert "float32" in hint_of(seg, (1, 64, 128, 3))
        assert "not verified" in seg.backend.notes[0]


def test_an_int8_ir_holds_int8_convolutions_and_its_float_parts_precision(irs):
    spec = ModelSpec.load(irs["int8"])
    assert spec.precision == "int8" and spec.quantization.target == "openvino"
    float_part = "bf16" if NATIVE_BF16 else "fp32"
    assert spec.openvino.inference_precision == float_part
    types = {op.get_type_name() for op in ov.read_model(irs["int8"]).get_ordered_ops()}
    assert "FakeQuantize" in types
    with Segmenter.load(irs["int8"]) as seg:
        assert seg.backend.precision == f"int8 + {float_part}"
        assert seg(street_frames(1, 64, 128)[0]).shape == (64, 128)


def test_without_native_bf16_a_bf16_ir_runs_in_fp32_and_asking_for_bf16_is_refused(
        irs, labels_onnx, monkeypatch, tmp_path):
    monkeypatch.setattr(ov, "bf16_support", lambda: "emulated")
    with pytest.raises(SsrDeployError, match="no bf16 instructions.*emulate"):
        Segmenter.load(labels_onnx, backend="openvino", precision="bf16")
    with pytest.raises(SsrDeployError, match="no bf16 instructions"):
        export_openvino(labels_onnx, tmp_path / "b.xml", IROptions("bf16"))
    assert not list(tmp_path.iterdir())
    if "bf16" in irs:
        with Segmenter.load(irs["bf16"]) as seg:
            assert seg.backend.precision == "fp32" and "runs at fp32" in seg.backend.notes[0]


def test_an_ir_without_its_weights_sidecar_or_with_anothers_weights_is_refused(irs, tmp_path):
    for name in ("fp32", "int8"):
        for suffix in (".xml", ".bin", ".xml.json"):
            shutil.copy(irs[name].with_name(irs[name].stem + suffix), tmp_path / (name + suffix))
    (tmp_path / "fp32.bin").rename(tmp_path / "kept.bin")
    with pytest.raises(SsrDeployError, match="fp32.xml has no fp32.bin beside it"):
        Segmenter.load(tmp_path / "fp32.xml")
    shutil.copy(tmp_path / "int8.bin", tmp_path / "fp32.bin")
    with pytest.raises(SsrDeployError, match="fp32.bin does not belong to fp32.xml"):
        Segmenter.load(tmp_path / "fp32.xml")
    (tmp_path / "int8.xml.json").unlink()
    with pytest.raises(SsrDeployError, match="no metadata sidecar"):
        Segmenter.load(tmp_path / "int8.xml")


def test_an_ir_of_another_network_version_is_refused(irs, tmp_path):
    """The sidecar of another IR beside an .xml: its sha256 does not vouch for this one."""
    for suffix in (".xml", ".bin"):
        shutil.copy(irs["int8"].with_suffix(suffix), tmp_path / f"m{suffix}")
    shutil.copy(irs["fp32"].with_name("fp32.xml.json"), tmp_path / "m.xml.json")
    with pytest.raises(SsrDeployError, match="sidecar m.xml.json does not describe m.xml"):
        Segmenter.load(tmp_path / "m.xml")


def test_an_ir_of_an_unknown_version_is_one_line(irs, tmp_path, capfd):
    """Seen once: an IR with version="99" (its sidecar made to match) printed two stray
    "GraphDef" lines from OpenVINO's other frontends before the error."""
    import json

    from ssr_deploy.spec import file_sha256

    shutil.copy(irs["fp32"].with_suffix(".bin"), tmp_path / "m.bin")
    xml = tmp_path / "m.xml"
    xml.write_text(irs["fp32"].read_text().replace('version="11"', 'version="99"', 1))
    meta = json.loads(irs["fp32"].with_name("fp32.xml.json").read_text())
    meta.update(sha256=file_sha256(xml), file="m.xml")
    (tmp_path / "m.xml.json").write_text(json.dumps(meta))
    capfd.readouterr()
    with pytest.raises(SsrDeployError, match="IR version 99; it reads 10, 11"):
        Segmenter.load(xml)
    assert "GraphDef" not in capfd.readouterr().err


def test_a_graph_verified_in_onnxruntime_only_is_refused_not_run(labels_onnx, street_pngs,
                                                                 tmp_path):
    """fp16 and int8 ONNX were verified in onnxruntime; OpenVINO runs only what it verified
    (the IR export's check) or an fp32 graph."""
    from ssr_deploy.export.precision import PrecisionOptions, convert_precision

    int8 = convert_precision(labels_onnx, tmp_path / "m.int8.onnx", PrecisionOptions(
        "int8", calib_dir=str(street_pngs), calib_cache=str(tmp_path / "c"),
        min_agreement=0.9)).path
    with pytest.raises(SsrDeployError, match="verified in onnxruntime, not in OpenVINO: "
                                             "convert the fp32 ONNX with `ssr-deploy export "
                                             "openvino model.onnx"):
        Segmenter.load(int8, backend="openvino")
    with pytest.raises(SsrDeployError, match="export openvino converts the fp32 ONNX"):
        export_openvino(int8, tmp_path / "m.xml")


def test_bad_exports_are_one_line_and_write_nothing(labels_onnx, tmp_path):
    (tmp_path / "black").mkdir()
    cv2.imwrite(str(tmp_path / "black" / "0.png"), np.zeros((64, 128, 3), np.uint8))
    cases = [(IROptions("int8"), "needs calibration images"),
             (IROptions("fp32", calib_dir=str(tmp_path / "black")), "an fp32 IR has no int8"),
             (IROptions("int8", calib_dir=str(tmp_path / "black"), calib_method="minmax",
                        calib_cache=str(tmp_path / "c"), min_agreement=1.0),
              r"below 100.00%; nothing written")]
    for options, message in cases:
        with pytest.raises(SsrDeployError, match=message):
            export_openvino(labels_onnx, tmp_path / "m.xml", options)
    with pytest.raises(SsrDeployError, match=r"an .xml file .* use -o m.xml"):
        export_openvino(labels_onnx, tmp_path / "m.onnx")
    with pytest.raises(SsrDeployError, match="folder .*nowhere does not exist"):
        export_openvino(labels_onnx, tmp_path / "nowhere" / "m.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["black", "c"]


def test_openvino_not_installed_is_one_line_naming_the_extra(labels_onnx, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name.split(".")[0] == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    result = CliRunner().invoke(main, ["bench", str(labels_onnx), "--backend", "openvino",
                                       "--iters", "1", "--warmup", "0"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: OpenVINO is not installed: pip install 'ssr-deploy[openvino]' (or pip install "
        "openvino)")


def test_profile_maps_openvinos_nodes_to_the_genotype(irs, tmp_path):
    from ssr_deploy.runtime.profile import profile

    result = profile(irs["int8"], iters=2, trace=tmp_path / "t.json")
    modules = {row["module"]: row for row in result["rows"]}
    assert {"stem", "stages.1.layers.8", "head.fuse", "io"} <= set(modules)
    assert result["backend"] == "openvino" and result["precision"].startswith("int8 + ")
    other = modules.get("other", {"share": 0.0})["share"]
    assert other < 0.05, modules  # nearly every node is named after its module
    events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    assert {e["cat"] for e in events} >= {"stem", "head.fuse"}


def test_cli_export_bench_and_the_precision_each_prints(labels_onnx, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.xml"
    done = runner.invoke(main, ["export", "openvino", str(labels_onnx), "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert f"wrote {out} (+ m.bin" in done.output and "fp32, 100.00% of labels" in done.output
    bench = runner.invoke(main, ["bench", str(out), "--compare", str(labels_onnx), "--iters",
                                 "2", "--warmup", "0"])
    assert bench.exit_code == 0, bench.output
    rows = [line.split() for line in bench.output.splitlines()[1:3]]
    assert rows[0][:2] == ["openvino", "fp32"] and rows[1][0] == "onnxruntime"
    refused = runner.invoke(main, ["bench", str(labels_onnx), "--precision", "bf16"])
    assert refused.exit_code == 1 and "runtime precision of the openvino backend" in \
        refused.output


def test_the_part_timer_times_parts_as_the_backend_compiles_them(tmp_path):
    from ssr_deploy.latency import LutOptions, build_lut
    from tests.latency.test_latency import TINY

    for precision in ("bf16" if NATIVE_BF16 else "fp32", "int8"):
        options = LutOptions(backend="openvino", precision=precision, size=(32, 64),
                             width_grid=(2, 2, 2), repeats=1, passes=1, check_points=0,
                             calibrate=2)
        table = build_lut(TINY, tmp_path / f"{precision}.json", options, progress=False)
        assert table["complete"] and table["fingerprint"]["openvino"] == ov.version()
        assert all(v > 0 for v in table["entries"].values())
        assert len(table["calibration"]["networks"]) == 2
    from ssr_deploy.backends.openvino.forms import candidates
    from ssr_deploy.cpu import this_cpu

    assert table["int8"] == {"target": "openvino", "form": candidates(this_cpu())[0],
                             "cpu": this_cpu().kind}
    with pytest.raises(SsrDeployError, match="--precision fp16: --backend openvino on cpu "
                                             "times fp32, bf16, int8"):
        LutOptions(backend="openvino", precision="fp16", size=(32, 64)).validate(TINY)
    with pytest.raises(SsrDeployError, match="--int8-form is the form of OpenVINO's int8"):
        LutOptions(backend="onnxruntime", precision="fp32", int8_form="u8").validate(TINY)


def test_a_checkpoint_exports_to_an_ir_through_a_verified_onnx(tiny_inputs, tmp_path):
    out = tmp_path / "m.xml"
    done = CliRunner().invoke(main, ["export", "openvino", str(tiny_inputs / "ck.pt"), "-o",
                                     str(out), "--size", "32x64"])
    assert done.exit_code == 0, done.output
    spec = ModelSpec.load(out)
    assert spec.input.size == (32, 64) and spec.input.dtype == "uint8"
    assert spec.output.kind == "labels" and spec.fp32_onnx is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m.xml.json"]


def test_one_ir_from_several_threads_gives_each_its_own_labels(irs):
    from concurrent.futures import ThreadPoolExecutor

    frames = list(street_frames(6, 64, 128, seed=8))
    with Segmenter.load(irs["fp32"]) as seg:
        alone = [seg(f) for f in frames]
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(seg, frames))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_array_equal(a, b)
