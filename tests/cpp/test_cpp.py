"""The C++ runtime (cpp/) built with cmake from a clean folder against the pip-installed
OpenVINO, under AddressSanitizer and UndefinedBehaviorSanitizer (one build for every test
here: OpenVINO itself is not instrumented, our code is), and compared with the Python
Segmenter on the same IRs and frames: fp32, bf16 (where this CPU has it) and int8 labels
identical. Bad models and bad calls: one line each, as Python's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.runtime.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[2]
# OpenVINO's and TBB's own allocations at exit are theirs, not ours
SUPPRESSIONS = "leak:libopenvino\nleak:libtbb\nleak:libopenvino_intel_cpu_plugin\n"


def missing_tools() -> str | None:
    for tool in ("cmake", "g++"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install cmake g++)"
    for header, package in (("/usr/include/nlohmann/json.hpp", "nlohmann-json3-dev"),
                            ("/usr/include/openssl/evp.h", "libssl-dev")):
        if not Path(header).exists():
            return f"{package} is not installed (apt-get install {package})"
    return None


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """cpp/ configured and built from an empty folder (the sanitizers on); returns the
    folder and the environment to run its programs in."""
    why = missing_tools()
    if why:
        pytest.skip(f"the C++ runtime cannot be built here: {why}")
    utils = pytest.importorskip("openvino.utils", reason="needs pip install "
                                "'ssr-deploy[openvino]'")

    folder = tmp_path_factory.mktemp("cpp-build")
    configure = subprocess.run(
        ["cmake", "-S", str(ROOT / "cpp"), "-B", str(folder), "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
         "-DSSR_DEPLOY_SANITIZE=ON", f"-DOpenVINO_DIR={utils.get_cmake_path()}"],
        capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout[-2000:] + configure.stderr[-2000:]
    made = subprocess.run(["cmake", "--build", str(folder), "-j2"], capture_output=True,
                          text=True, timeout=900)
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    suppressions = folder / "lsan.supp"
    suppressions.write_text(SUPPRESSIONS)
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
           "LSAN_OPTIONS": f"suppressions={suppressions}",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87"}
    return folder, env, configure.stdout


def run(build, *args, ok=True):
    folder, env, _ = build
    done = subprocess.run([str(folder / "ssr_deploy_api_test"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode not in (86, 87), done.stderr[-4000:]  # a sanitizer's report
    if ok:
        assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def irs(labels_onnx, tmp_path_factory):
    """{precision: IR} of the shared labels ONNX (64x128): fp32, int8 (the form this CPU
    runs), and bf16 where this CPU has it."""
    from ssr_deploy.backends.openvino import library
    from ssr_deploy.export.openvino import IROptions, export_openvino

    folder = tmp_path_factory.mktemp("irs")
    calib = folder / "calib"
    calib.mkdir()
    import cv2

    for i, frame in enumerate(street_frames(8, 64, 128, seed=11)):
        cv2.imwrite(str(calib / f"{i}.png"), frame)
    out = {}
    precisions = ["fp32", "int8"] + (["bf16"] if library.bf16_support() == "native" else [])
    for precision in precisions:
        extra = ({"calib_dir": str(calib), "calib_n": 8, "min_agreement": 0.9}
                 if precision == "int8" else {"min_agreement": 0.9})
        path = folder / f"model.{precision}.xml"
        export_openvino(labels_onnx, path, IROptions(precision, **extra))
        out[precision] = path
    return out


def frames_file(folder: Path, frames: np.ndarray) -> Path:
    path = folder / f"frames-{frames.shape[1]}x{frames.shape[2]}.raw"
    path.write_bytes(np.ascontiguousarray(frames).tobytes())
    return path


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_labels_are_pythons_on_the_same_ir(build, irs, precision, tmp_path):
    if precision not in irs:
        pytest.skip("this CPU has no bf16 instructions: no bf16 IR to compare")
    ir = irs[precision]
    with Segmenter.load(ir) as seg:
        for n, (h, w) in ((3, (64, 128)), (2, (48, 80)), (1, (100, 300))):  # model size, others
            frames = np.stack(street_frames(n, h, w, seed=h))
            out = tmp_path / "labels.raw"
            done = run(build, "labels", ir, frames_file(tmp_path, frames), n, h, w, out)
            cpp = np.fromfile(out, np.int32).reshape(n, h, w)
            python = np.stack(seg.predict_batch(list(frames))).astype(np.int32)
            assert done.stdout.strip() == seg.backend.precision
            if (h, w) == (64, 128):  # the same graph on the same input: identical
                np.testing.assert_array_equal(cpp, python)
            else:  # resized on each side (OpenCV in Python): equal but for rounding
                assert (cpp == python).mean() >= 0.999, (precision, h, w)


def test_bad_calls_are_one_line_each(build, irs):
    done = run(build, "bad", irs["fp32"])
    lines = dict(line.split(": ", 1) for line in done.stdout.strip().splitlines())
    assert lines["null"] == "frame 0 has no pixels (a null pointer); give uint8 BGR pixels"
    assert lines["zero stride"].startswith("frame 0: stride 0 is less than its 128 pixels x 3")
    assert lines["zero size"].startswith("frame 0 is 0x128; a frame has at least one row")
    assert lines["wrong size"] == ("frame 0 is 32x64, the model takes 64x128: resize it first, "
                                   "or load with resize on")
    assert lines["alpha"].startswith("alpha=1.5")
    assert lines["threads"].startswith("threads=-1: give a whole number >= 1")
    assert lines["precision"] == "precision 'fp8': OpenVINO runs fp32 or bf16"
    assert lines["good"] == "64x128"


def _copy_ir(ir: Path, folder: Path, name: str = "m") -> Path:
    folder.mkdir(exist_ok=True)
    xml = folder / f"{name}.xml"
    shutil.copyfile(ir, xml)
    shutil.copyfile(ir.with_suffix(".bin"), xml.with_suffix(".bin"))
    meta = json.loads(Path(f"{ir}.json").read_text())
    meta["file"] = xml.name
    Path(f"{xml}.json").write_text(json.dumps(meta))
    return xml


def test_bad_models_are_refused_as_python_refuses_them(build, irs, tmp_path):
    """Each refused with one line: the C++ line is Python's (ModelSpec.load and the OpenVINO
    backend say the same)."""
    from ssr_deploy.errors import SsrDeployError

    cases = {}
    no_bin = _copy_ir(irs["fp32"], tmp_path / "a")
    no_bin.with_suffix(".bin").unlink()
    cases["xml without its bin"] = no_bin
    other = _copy_ir(irs["fp32"], tmp_path / "b")  # the int8 IR's sidecar beside it
    meta = json.loads(Path(f"{irs['int8']}.json").read_text())
    Path(f"{other}.json").write_text(json.dumps({**meta, "file": other.name}))
    cases["another model's sidecar"] = other
    newer = _copy_ir(irs["fp32"], tmp_path / "c")
    meta = json.loads(Path(f"{newer}.json").read_text())
    Path(f"{newer}.json").write_text(json.dumps({**meta, "metadata_format": 2}))
    cases["a newer sidecar format"] = newer
    no_sidecar = _copy_ir(irs["fp32"], tmp_path / "d")
    Path(f"{no_sidecar}.json").unlink()
    cases["no sidecar"] = no_sidecar
    wrong_bin = _copy_ir(irs["fp32"], tmp_path / "e")
    shutil.copyfile(irs["int8"].with_suffix(".bin"), wrong_bin.with_suffix(".bin"))
    cases["another IR's bin"] = wrong_bin
    for case, xml in cases.items():
        done = run(build, "load", xml, ok=False)
        assert done.returncode == 1, (case, done.stdout, done.stderr)
        said = done.stdout.strip()
        assert said.startswith("error: ") and "\n" not in said, (case, said)
        with pytest.raises(SsrDeployError) as python:
            Segmenter.load(xml)
        assert said[len("error: "):] == str(python.value), case


def test_the_examples_run(build, irs, tmp_path):
    """segment_ppm (no dependency) on a PPM written from Python: labels as a PGM equal to
    Python's, and an overlay. segment_video builds only with OpenCV's C++ package: said."""
    folder, env, configured = build
    frame = street_frames(1, 64, 128, seed=3)[0]
    ppm = tmp_path / "frame.ppm"
    ppm.write_bytes(b"P6\n128 64\n255\n" + np.ascontiguousarray(frame[..., ::-1]).tobytes())
    done = subprocess.run([str(folder / "examples" / "segment_ppm"), str(irs["fp32"]), str(ppm),
                           str(tmp_path / "labels.pgm"), str(tmp_path / "overlay.ppm")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    pgm = (tmp_path / "labels.pgm").read_bytes()
    assert pgm.startswith(b"P5\n128 64\n255\n")
    labels = np.frombuffer(pgm[len(b"P5\n128 64\n255\n"):], np.uint8).reshape(64, 128)
    with Segmenter.load(irs["fp32"]) as seg:
        np.testing.assert_array_equal(labels, seg(frame))
        overlay = np.frombuffer((tmp_path / "overlay.ppm").read_bytes()[len(b"P6\n128 64\n255\n"):],
                                np.uint8).reshape(64, 128, 3)[..., ::-1]
        assert np.abs(overlay.astype(int) - seg.overlay(frame, seg(frame))).max() <= 1
    if not (folder / "examples" / "segment_video").exists():
        assert "segment_video skipped: OpenCV's C++ package was not found" in configured
