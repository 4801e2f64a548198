"""int8 in the form each CPU runs correctly: OpenVINO's miscompile of signed int8 that makes
the choice necessary (a 9-node reproduction, run on this CPU and with oneDNN's kernels
capped to older kinds), the choice among forms on every kind (the CPU's features injected,
OpenVINO's runs real), the refusal of a form known wrong, and an IR loaded on a CPU of
another kind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ov = pytest.importorskip("openvino")

from ssr_deploy.backends.openvino.forms import (  # noqa: E402
    CANDIDATES,
    FORMS,
    candidates,
    known_wrong,
)
from ssr_deploy.cpu import KINDS, describe, proc_flags, this_cpu  # noqa: E402
from ssr_deploy.errors import PrecisionCheckError, SsrDeployError, UsageError  # noqa: E402
from ssr_deploy.export.openvino import IROptions, export_openvino  # noqa: E402
from ssr_deploy.export.openvino_int8 import Trial, pick  # noqa: E402
from ssr_deploy.runtime.segmenter import Segmenter  # noqa: E402
from ssr_deploy.spec import ModelSpec  # noqa: E402

FLAGS = {"avx2": {"avx2"}, "avx512": {"avx2", "avx512f", "avx512bw"},
         "vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"},
         "amx": {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8",
                 "amx_bf16"}}

REPRO = Path(__file__).with_name("openvino_repro.py")


def _repro_error(form: str, cap: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA",
                                                             "DNNL_MAX_CPU_ISA")}
    if cap:
        env["ONEDNN_MAX_CPU_ISA"] = cap
    out = subprocess.run([sys.executable, str(REPRO), form], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_VNNI", "AVX2"])
def test_openvino_computes_signed_int8_wrong_where_the_table_says(cap):
    """The reason the form is chosen per CPU: a signed int8 Concat of a convolution and a
    max pool (our downsampler) feeding a convolution is ~25% off in OpenVINO on CPUs without
    AMX, exact with unsigned activations (with VNNI). Run on this CPU and with oneDNN capped
    to older kernels; when OpenVINO fixes it, this fails and the table is to be updated."""
    cpu = describe(proc_flags(), "this CPU", cap)
    if cap and cap.startswith("AVX512") and "avx512f" not in cpu.flags:
        pytest.skip("this CPU has no AVX-512 to cap at")
    s8, u8 = _repro_error("s8", cap), _repro_error("u8", cap)
    if known_wrong("s8", cpu):
        assert s8 > 0.10, (cpu.kind, s8)
    else:
        assert s8 < 0.01, (cpu.kind, s8)
    if cpu.kind in ("vnni", "amx"):
        assert u8 < 0.01, (cpu.kind, u8)


def test_every_kind_has_forms_and_none_it_runs_wrong():
    for kind in KINDS:
        cpu = describe(FLAGS.get(kind, set()), kind)
        assert cpu.kind == kind and candidates(cpu), kind
        assert all(known_wrong(form, cpu) is None for form in candidates(cpu)), kind
        assert set(CANDIDATES[kind]) <= set(FORMS)
    assert known_wrong("s8", describe(FLAGS["amx"])) is None
    assert "without AMX" in known_wrong("s8", describe(FLAGS["vnni"]))
    assert "16-bit sums" in known_wrong("u8", describe(FLAGS["avx2"]))
    capped = describe(FLAGS["amx"], "x", "AVX2")  # oneDNN's cap: the kernels of an AVX2 CPU
    assert capped.kind == "avx2" and not capped.bf16 and candidates(capped) == ("u8-7bit",)


def _trial(form: str, agreement: float, ms: float) -> Trial:
    return Trial(form, None, {}, {"label_agreement": agreement, "passed": True}, ms=ms)


def test_the_fastest_passing_form_is_kept_and_near_ties_go_to_agreement():
    assert pick([_trial("u8", 0.996, 60.0), _trial("u8-7bit", 0.999, 80.0)]).form == "u8"
    assert pick([_trial("u8", 0.996, 60.0), _trial("u8-7bit", 0.999, 61.0)]).form == "u8-7bit"
    assert pick([_trial("s8", 0.996, 30.0), _trial("u8", 0.999, 45.0)]).form == "s8"


@pytest.fixture(scope="module")
def tiny(labels_onnx, street_pngs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("forms")
    return labels_onnx, street_pngs, folder


@pytest.mark.parametrize("kind", ["amx", "vnni", "avx2"])
def test_the_forms_of_each_kind_are_tried_here_and_recorded(tiny, kind, monkeypatch):
    """A CPU of each kind (its features injected; OpenVINO's runs real on this machine):
    exactly that kind's forms are verified and timed, and the sidecar records the form, the
    CPU and every form tried; the summary says what was chosen and why."""
    from ssr_deploy.export import openvino_int8
    from ssr_deploy.export.openvino import summary_line

    onnx_path, calib, folder = tiny
    cpu = describe(FLAGS[kind], f"a {kind} CPU")
    monkeypatch.setattr(openvino_int8, "this_cpu", lambda: cpu)
    out = folder / f"{kind}.xml"
    result = export_openvino(onnx_path, out, IROptions(
        "int8", calib_dir=str(calib), calib_cache=str(folder / "cache"), min_agreement=0.5))
    q = result.spec.quantization
    assert [c["form"] for c in q.candidates] == list(CANDIDATES[kind])
    assert q.form in CANDIDATES[kind] and q.cpu["kind"] == kind and q.cpu["name"] == cpu.name
    assert all(c["passed"] and c["ms_batch1"] > 0 for c in q.candidates)
    line = summary_line(result).splitlines()[-1]
    assert line.startswith(f"int8 form {q.form} (") and f"chosen on a {kind} CPU" in line
    assert json.loads(result.sidecar.read_text())["openvino"]["cpu_kind"] == this_cpu().kind


def test_a_forced_form_below_the_gate_is_refused_naming_its_agreement(tiny, monkeypatch):
    from ssr_deploy.export import openvino_int8

    onnx_path, calib, folder = tiny
    monkeypatch.setattr(openvino_int8, "this_cpu", lambda: describe(FLAGS["vnni"], "an EPYC"))
    out = folder / "forced.xml"
    with pytest.raises(PrecisionCheckError, match=r"--int8-form s8 reaches \d+\.\d\d% of labels "
                       r"as fp32 in OpenVINO on this CPU \(an EPYC \(VNNI without AMX\)\), "
                       r"below 100.00%; nothing written: OpenVINO computes a signed int8 "
                       r"Concat .*; use u8 or u8-7bit, or drop --int8-form"):
        export_openvino(onnx_path, out, IROptions(
            "int8", calib_dir=str(calib), calib_cache=str(folder / "cache"), int8_form="s8",
            min_agreement=1.0))
    assert not out.exists()
    with pytest.raises(UsageError, match="--int8-form 's9' is not known"):
        export_openvino(onnx_path, out, IROptions("int8", calib_dir=str(calib), int8_form="s9"))
    with pytest.raises(UsageError, match="--int8-form choose what int8 quantizes"):
        export_openvino(onnx_path, out, IROptions("fp32", int8_form="u8"))


def test_an_ir_on_a_cpu_its_form_runs_wrong_on_is_re_verified_or_refused(tiny, monkeypatch):
    """Tuned on one kind, loaded on another: said; where its form is known wrong there,
    re-verified against the fp32 ONNX beside it (refused below its gate), refused when that
    ONNX is not there."""
    import shutil

    from ssr_deploy import cpu as cpu_module
    from ssr_deploy.export import openvino_int8

    onnx_path, calib, folder = tiny
    here = folder / "moved"
    here.mkdir()
    monkeypatch.setattr(openvino_int8, "this_cpu", lambda: describe(FLAGS["vnni"], "an EPYC"))
    ir = export_openvino(onnx_path, here / "m.xml", IROptions(
        "int8", calib_dir=str(calib), calib_cache=str(folder / "cache"), int8_form="u8",
        min_agreement=0.5)).path
    shutil.copy(onnx_path, here / "model.onnx")
    shutil.copy(Path(f"{onnx_path}.json"), here / "model.onnx.json")
    monkeypatch.setattr(cpu_module, "this_cpu", lambda: describe(FLAGS["avx2"], "an old EPYC"))
    with Segmenter.load(ir) as seg:
        notes = " | ".join(seg.backend.notes)
    assert "int8 form u8 tuned on an EPYC (VNNI without AMX), running on an old EPYC" in notes
    assert "int8 form u8 re-verified on this CPU" in notes
    sidecar = Path(f"{ir}.json")
    meta = json.loads(sidecar.read_text())
    meta["precision_check"]["min_agreement"] = 1.0
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(SsrDeployError, match=r"re-verified here, \d+\.\d\d% of labels as fp32, "
                                             r"below 100.00%; export it again on this machine"):
        Segmenter.load(ir)
    (here / "model.onnx").unlink()
    with pytest.raises(SsrDeployError, match="known to run wrong on this CPU: 8-bit weights "
                                             "overflow .* keep its fp32 ONNX model.onnx"):
        Segmenter.load(ir)
    assert ModelSpec.load(ir).quantization.form == "u8"


def test_a_few_calibration_images_are_said_to_be_few(tiny, capsys):
    onnx_path, calib, folder = tiny
    export_openvino(onnx_path, folder / "few.xml", IROptions(
        "int8", calib_dir=str(calib), calib_cache=str(folder / "cache"), min_agreement=0.5))
    assert "6 calibration images" in capsys.readouterr().err
