"""Quantization-aware training (`train --qat --init-from`, NVIDIA ModelOpt on the CPU): the
checkpoint loads as a plain network and records what it was fine-tuned from and its learned
input ranges; `export onnx --precision int8` of it writes the Q/DQ graph with exactly those
ranges, verified against fp32; the refusals."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

from ssr_deploy.cli import main
from ssr_deploy.errors import UsageError
from ssr_deploy.export.precision import PrecisionOptions, check_options
from ssr_deploy.model.checkpoint import load_model, read_checkpoint
from ssr_deploy.spec import file_sha256

TRAIN = ["--data", "synthetic:8", "--size", "32x64", "--batch", "2", "--workers", "0"]


@pytest.fixture(scope="module")
def qat_run(tiny_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("qat") / "run"
    r = CliRunner().invoke(main, ["train", "--qat", "--init-from", str(tiny_inputs / "ck.pt"),
                                  "--out", str(out), "--epochs", "1", *TRAIN])
    assert r.exit_code == 0, r.output
    return out


def test_the_checkpoint_is_a_plain_network_with_its_qat_record(qat_run, tiny_inputs):
    state = read_checkpoint(qat_run / "best.pt")
    record = state["qat"]
    assert record["form"] == "tensorrt" and record["epochs"] == 1
    assert record["from"] == str(tiny_inputs / "ck.pt")
    assert record["from_sha256"] == file_sha256(tiny_inputs / "ck.pt")
    assert record["library"].startswith("nvidia-modelopt ")
    assert not [k for k in state["state_dict"] if "quantizer" in k]
    net = load_model(qat_run / "best.pt")  # loads as any checkpoint does
    convs = {n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert set(record["input_amax"]) == convs  # a learned range for every convolution
    assert all(0 < a < 1e4 for a in record["input_amax"].values())
    assert state["config"]["init_from"] == str(tiny_inputs / "ck.pt")
    assert state["config"]["lr"] == 1e-5  # the fine-tune's default rate


def test_int8_export_uses_the_learned_ranges(qat_run, tmp_path):
    out = tmp_path / "m.int8.onnx"
    r = CliRunner().invoke(main, ["export", "onnx", str(qat_run / "best.pt"), "-o", str(out),
                                  "--precision", "int8", "--size", "32x64", "--input",
                                  "uint8-nhwc-bgr", "--output", "labels",
                                  "--min-agreement", "0.5"])
    assert r.exit_code == 0, r.output
    meta = json.loads(out.with_name("m.int8.onnx.json").read_text())
    q = meta["quantization"]
    assert q["method"] == "qat" and q["target"] == "tensorrt" and q["qat"]["epochs"] == 1
    assert meta["precision_check"]["label_agreement"] >= 0.5
    amax = read_checkpoint(qat_run / "best.pt")["qat"]["input_amax"]
    model = onnx.load(str(out))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    readers = [c.input[0] for c in convs]
    checked = 0
    for conv in convs:
        dq, weight_dq = producer[conv.input[0]], producer[conv.input[1]]
        assert dq.op_type == weight_dq.op_type == "DequantizeLinear"
        module = weight_dq.input[0].removeprefix("net.").split(".weight")[0]
        scale = float(init[dq.input[1]])
        if readers.count(conv.input[0]) == 1:
            assert scale == pytest.approx(amax[module] / 127, rel=1e-5), module
        else:  # one tensor read by two convolutions: the larger of their ranges
            assert scale >= amax[module] / 127 * (1 - 1e-5), module
        checked += 1
    assert checked == len(amax)


def test_refusals_and_the_fp32_note(qat_run, tiny_inputs, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(main, ["train", "--qat", "--genotype", "ssr-cityscapes", "--out",
                               str(tmp_path / "a"), *TRAIN])
    assert bad.exit_code == 2 and "give --init-from CKPT" in bad.output
    bad = runner.invoke(main, ["train", "--init-from", str(tiny_inputs / "ck.pt"), "--genotype",
                               "ssr-cityscapes", "--out", str(tmp_path / "b"), *TRAIN])
    assert bad.exit_code == 2 and "drop --genotype" in bad.output
    record = read_checkpoint(qat_run / "best.pt")["qat"]
    with pytest.raises(UsageError, match="drop --calib and --fallback"):
        check_options(PrecisionOptions("int8", calib_dir=str(tmp_path), qat=record))
    with pytest.raises(UsageError, match="--int8-target tensorrt"):
        check_options(PrecisionOptions("int8", int8_target="cpu", qat=record))
    fp32 = runner.invoke(main, ["export", "onnx", str(qat_run / "best.pt"), "-o",
                                str(tmp_path / "m.onnx"), "--size", "32x64"])
    assert fp32.exit_code == 0, fp32.output
    assert "was fine-tuned for int8 (QAT); --precision fp32 exports its float weights" \
        in fp32.output


def test_a_qat_run_resumes_as_one(qat_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(qat_run, run)
    r = CliRunner().invoke(main, ["train", "--resume", "--override", "--epochs", "2",
                                  "--out", str(run), *TRAIN])
    assert r.exit_code == 0, r.output
    before = read_checkpoint(qat_run / "last.pt")["qat"]["input_amax"]
    after = read_checkpoint(run / "last.pt")
    assert after["epoch"] == 2 and after["qat"]["epochs"] == 2
    assert after["qat"]["input_amax"] == before  # the ranges it had, not calibrated anew


def test_a_tampered_qat_record_and_a_missing_modelopt_are_one_line(qat_run, tmp_path,
                                                                  monkeypatch):
    state = read_checkpoint(qat_run / "best.pt")
    state["qat"]["input_amax"]["stem.conv"] = -1.0
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    r = CliRunner().invoke(main, ["export", "onnx", str(bad), "-o", str(tmp_path / "m.onnx"),
                                  "--precision", "int8", "--size", "32x64"])
    assert r.exit_code == 1 and "its QAT record has no valid input ranges" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()

    import sys

    from ssr_deploy import SsrDeployError
    from ssr_deploy.train.qat import import_modelopt

    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)
    with pytest.raises(SsrDeployError, match=r"--qat needs NVIDIA ModelOpt .*pip install "
                                             r"'ssr-deploy\[qat\]'"):
        import_modelopt()
