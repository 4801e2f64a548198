"""The runtime on a runtime-only install: Segmenter, bench, profile and video on an .onnx
in a Python where `import torch` (and the exporter's onnxscript/onnxslim) fail."""

import json
import subprocess
import sys

import cv2

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
for args in (["bench", model, "--iters", "2", "--warmup", "0", "--json", out + "/b.json"],
             ["profile", model, "--iters", "2"],
             ["video", clip, "--model", model, "-o", out + "/v.mp4"]):
    try:
        main.main(args, standalone_mode=False)
    except SystemExit as e:
        assert not e.code, (args, e.code)
assert "torch" not in sys.modules
print("RUNTIME-ONLY OK")
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
    assert (tmp_path / "v.mp4").stat().st_size > 0


def test_the_blocker_blocks():
    done = subprocess.run([sys.executable, "-c", BLOCK + "import torch"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "blocked by the test" in done.stderr
