"""`ssr-deploy demo --quick` end to end: every artefact exists and is valid."""

import json
import re

import cv2
import onnx
import pytest
from click.testing import CliRunner

from ssr_deploy import Genotype, SsrDeployError
from ssr_deploy.app.demo import Demo
from ssr_deploy.cli import main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--quick"])
    assert result.exit_code == 0, result.output
    return out


def test_every_artefact_exists_and_is_valid(demo_dir):
    onnx.checker.check_model(onnx.load(demo_dir / "model.onnx"))
    assert json.loads((demo_dir / "model.onnx.json").read_text())["output"]["kind"] == "labels"
    Genotype.load(demo_dir / "genotype.json")
    bench = json.loads((demo_dir / "bench.json").read_text())
    backends = [r["backend"] for r in bench["results"]]
    assert backends[0] == "onnxruntime fp32" and backends[-1] == "torch"
    for label, file in (("onnxruntime int8", "model.int8-cpu.onnx"),
                        ("openvino bf16", "model.bf16.xml"), ("openvino int8", "model.int8.xml")):
        assert (label in backends) == (demo_dir / file).is_file(), label
    for png in ("bench.png", "search.png", "samples/overlay_0.png"):
        assert (demo_dir / png).read_bytes()[:4] == b"\x89PNG", png
    video = cv2.VideoCapture(str(demo_dir / "overlay.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_report_names_every_figure_and_its_command(demo_dir):
    report = (demo_dir / "report.md").read_text()
    for stage in ("data", "latency", "search", "train", "export", "openvino", "bench",
                  "video"):
        figures = json.loads((demo_dir / ".stages" / f"{stage}.json").read_text())
        assert figures["command"] in report, stage
    for phrase in ("Options left: op", "val mIoU", "max abs diff", "onnxruntime", "FPS",
                   "frames segmented", "TensorRT", "## 6. OpenVINO",
                   "(fastest verified: the video runs it)"):
        assert phrase in report, phrase
    # the reference row, marked where it is the fastest verified path (timing decides which)
    assert re.search(r"\| onnxruntime fp32( \*\*\(fastest verified: the video runs it\)\*\*)? "
                     r"\| fp32 \| 100\.00% \|", report)


def test_the_search_aims_at_ms_on_the_path_shipped_and_the_report_says_where_it_landed(
        demo_dir):
    """The demo's table is of the path it ships (OpenVINO int8 where OpenVINO runs), its
    search aims inside the space's range on it, and the report puts the table's prediction
    for the network found beside what bench measured on that path."""
    from ssr_deploy.latency.table import LatencyTable

    stages = demo_dir / ".stages"
    table, search, bench = (json.loads((stages / f"{s}.json").read_text())
                            for s in ("latency", "search", "bench"))
    assert table["path"] == "openvino int8" and search["path"] == table["path"]
    assert table["fastest_ms"] < search["target_ms"] < table["slowest_ms"]
    lut = LatencyTable.load(demo_dir / "latency.json")
    found = Genotype.load(demo_dir / "genotype.json")
    assert lut.predict(found)["latency_ms"] == pytest.approx(search["predicted_ms"])
    assert search["networks_timed"] >= 1 and search["search_measured_ms"] > 0  # it landed
    report = (demo_dir / "report.md").read_text()
    if not (demo_dir / "model.int8.xml").is_file():  # --quick's briefly trained network may
        assert "path's file was not written" in report  # miss the int8 gate: said
        return
    measured = bench["p50_ms"]["openvino int8"]
    assert measured > 0
    assert (f"the table predicted {search['predicted_ms']:.2f} ms for the network it found; "
            f"measured here (median, batch 1): {measured:.2f} ms") in report
    assert "on that path to land, the one found at" in report


def test_the_video_runs_the_fastest_path_verified_at_the_gate(demo_dir):
    """The fastest CPU path at >= 99.5% of labels as fp32 runs the video; its precision is
    what report.md and the bench say; the paper's 175 FPS (512x1024, a GPU) is not drawn."""
    from ssr_deploy.app.demo import CPU_GATE

    stages = demo_dir / ".stages"
    bench, video = (json.loads((stages / f"{s}.json").read_text()) for s in ("bench", "video"))
    fastest = bench["fastest"]
    assert bench["agreement"][fastest] >= CPU_GATE
    assert all(bench["fps"][fastest] >= fps for label, fps in bench["fps"].items()
               if label != "torch" and bench["agreement"][label] >= CPU_GATE)
    assert video["model"] == bench["fastest_file"]
    assert video["precision"] == bench["precision"][fastest]
    results = json.loads((demo_dir / "bench.json").read_text())["results"]
    assert [r["paper_comparable"] for r in results] == [False] * len(results)


def test_rerun_reuses_finished_stages(demo_dir):
    said = []
    Demo(demo_dir, quick=True, progress=said.append).run()
    assert said and all(line.endswith("done earlier, reused") for line in said)


def test_bad_output_folder_and_missing_gpu(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SsrDeployError, match="cannot write to"):
        Demo(blocker / "out", quick=True)
    import torch

    if not torch.cuda.is_available():
        result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--device",
                                           "cuda", "--quick"])
        assert result.exit_code == 1 and "with --device cpu" in result.output


def test_precision_stage_writes_verified_fp16_and_both_int8_forms(demo_dir):
    text = (demo_dir / "report.md").read_text()
    assert "## 5. Precision in the graph" in text
    for name, precision, target in (("fp16", "fp16", None), ("int8", "int8", "tensorrt"),
                                    ("int8-cpu", "int8", "cpu")):
        path = demo_dir / f"model.{name}.onnx"
        if path.is_file():
            meta = json.loads((demo_dir / f"model.{name}.onnx.json").read_text())
            assert meta["precision"] == precision
            assert meta["precision_check"]["label_agreement"] >= meta["precision_check"][
                "min_agreement"]
            assert f"- model.{name}.onnx, {precision}" in text
            assert f"model.{name}.onnx, " in text and "labels agree with fp32" in text
            if target:
                assert meta["quantization"]["target"] == target
        else:  # below its threshold: said in the report, nothing half-written
            assert f"- model.{name}.onnx, {precision}" in text and "not written: " in text
    for name in ("int8", "int8-cpu"):  # both forms through the automatic fallback
        if (demo_dir / f"model.{name}.onnx").is_file():
            meta = json.loads((demo_dir / f"model.{name}.onnx.json").read_text())
            assert meta["quantization"]["fallback"]["mode"] == "auto"
            assert "kept out of int8: " in text
    assert "TensorRT form (symmetric int8" in text and "the one to run on a CPU" in text


def test_the_tensorrt_stage_builds_a_real_engine(demo_dir):
    """TensorRT-RTX builds the engine here (no GPU needed); the report says what it is, what
    it runs on and how to run it."""
    engine = demo_dir / "model.engine"
    meta = json.loads((demo_dir / "model.engine.json").read_text())
    assert engine.read_bytes()[:4] == b"vtrt" and meta["tensorrt"]["builder"] == "tensorrt-rtx"
    assert meta["precision"] == "fp16" and meta["input"]["dtype"] == "uint8"
    stage = json.loads((demo_dir / ".stages" / "engine.json").read_text())
    text = (demo_dir / "report.md").read_text()
    assert f"fp16 engine model.engine ({engine.stat().st_size / 1e6:.1f} MB" in text
    assert "built by TensorRT-RTX 1.7" in text and "sm_86, sm_89, sm_120" in text
    assert stage["command"] in text and "Skipped" not in text
    if "not_run" in stage:
        assert "Not run here:" in text and "ssr-deploy bench model.engine" in text


def test_an_int8_ir_that_needed_no_fallback_is_reported_without_one(tmp_path, monkeypatch):
    """Where plain int8 meets the gate, --fallback auto keeps nothing and the sidecar records
    no fallback (a full demo on an AVX-512 VNNI EPYC): the stage reports the IR, not a
    TypeError."""
    from types import SimpleNamespace as NS

    import ssr_deploy.export.openvino as ov

    def export(source, out, options):
        fallback = None if options.precision == "int8" else {"kept": ["stem"]}
        return NS(spec=NS(precision=options.precision,
                          openvino=NS(inference_precision="bf16"),
                          precision_check=NS(label_agreement=0.997, miou_vs_fp32=0.98),
                          quantization=NS(fallback=fallback)))

    monkeypatch.setattr(ov, "export_openvino", export)
    figures = Demo(tmp_path / "d").openvino()
    assert figures["int8"]["label_agreement"] == 0.997 and "fallback" not in figures["int8"]
