"""The runtime on a runtime-only install: Segmenter, bench, profile and video on an .onnx and
on an OpenVINO IR (written there by `export openvino`), and `export engine` from an ONNX, in a
Python where `import torch` (and the exporter's onnxscript/onnxslim) fail."""

import json
import subprocess
import sys

import cv2
import pytest

from ssr_deploy import build_model
from ssr_deploy.data.synthetic import street_frames
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.spec import IOFormat

BLOCK = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "onnxscript", "onnxslim"):
            raise ImportError(f"{name} is not installed (blocked by the test)")
sys.meta_path.insert(0, NoTorch())
"""

RUN = BLOCK + """
import numpy as np
from ssr_deploy import Segmenter
from ssr_deploy.cli import main
model, clip, out = sys.argv[1:4]
with Segmenter.load(model) as seg:
    labels = seg(np.zeros((40, 70, 3), np.uint8))
    assert labels.shape == (40, 70), labels.shape
ir = out + "/m.xml"
for args in (["bench", model, "--iters", "2", "--warmup", "0", "--json", out + "/b.json"],
             ["profile", model, "--iters", "2"],
             ["video", clip, "--model", model, "-o", out + "/v.mp4"],
             ["export", "openvino", model, "-o", ir],
             ["bench", ir, "--iters", "2", "--warmup", "0", "--json", out + "/ir.json"],
             ["profile", ir, "--iters", "2"],
             ["video", clip, "--model", ir, "-o", out + "/ir.mp4"]):
    try:
        main.main(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, (args, e.code)
with Segmenter.load(ir) as seg:
    assert seg(np.zeros((40, 70, 3), np.uint8)).shape == (40, 70)
assert "torch" not in sys.modules
print("RUNTIME-ONLY OK")
"""

ENGINE = BLOCK + """
from ssr_deploy.cli import main
model, out = sys.argv[1:3]
try:
    main.main(["export", "engine", model, "-o", out, "--builder", "tensorrt-rtx"],
              standalone_mode=False)
except SystemExit as e:
    assert not e.code, e.code
from ssr_deploy.export import engine_for
cached = [engine_for(model, builder="tensorrt-rtx", compute_capability="8.9",
                     cache_dir=out + ".cache") for _ in range(2)]
assert cached[0] == cached[1] and cached[0].stat().st_size > 0, cached
assert "torch" not in sys.modules
print("ENGINE OK")
"""


def test_runtime_runs_where_torch_is_not_installed(tmp_path):
    model = export_onnx(build_model("ssr-cityscapes"), tmp_path / "m.onnx", size=(64, 128),
                        dynamic_batch=True, io=IOFormat("uint8-nhwc-bgr", "labels")).path
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (128, 64))
    for frame in street_frames(4, 64, 128):
        writer.write(frame)
    writer.release()
    done = subprocess.run([sys.executable, "-c", RUN, str(model), str(clip), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RUNTIME-ONLY OK" in done.stdout
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["backend"] == "onnxruntime"
    ir = json.loads((tmp_path / "ir.json").read_text())["results"][0]
    assert ir["backend"] == "openvino" and ir["precision"] == "fp32"
    assert (tmp_path / "v.mp4").stat().st_size > 0 and (tmp_path / "ir.mp4").stat().st_size > 0


def test_an_engine_builds_from_an_onnx_where_torch_is_not_installed(tmp_path):
    """`export engine` and `engine_for` on a runtime-only install with TensorRT-RTX
    ([cpu,rtx]): the fp16 ONNX is made and verified, then built (and cached), with no torch."""
    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    model = export_onnx(build_model("ssr-cityscapes"), tmp_path / "m.onnx", size=(32, 64),
                        io=IOFormat("uint8-nhwc-bgr", "labels")).path
    done = subprocess.run([sys.executable, "-c", ENGINE, str(model), str(tmp_path / "m.engine")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ENGINE OK" in done.stdout and (tmp_path / "m.engine").stat().st_size > 0


def test_the_blocker_blocks():
    done = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "blocked by the test" in done.stderr
