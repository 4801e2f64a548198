"""The examples run against a tiny model and a tiny synthetic Cityscapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

from ssr_deploy import build_model
from ssr_deploy.data import write_cityscapes_layout
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.spec import IOFormat

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_embed_app(tmp_path):
    model = export_onnx(build_model("ssr-cityscapes"), tmp_path / "m.onnx", size=(64, 128),
                        io=IOFormat("uint8-nhwc-bgr", "labels")).path
    done = subprocess.run([sys.executable, str(EXAMPLES / "embed_app.py"), "--model",
                           str(model), "--frames", "6"], capture_output=True, text=True,
                          timeout=900)  # a hang guard, not a speed check
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith("6 frames in") and "largest classes" in done.stdout


def test_cityscapes_pipeline_on_a_tiny_dataset(tmp_path):
    write_cityscapes_layout(tmp_path / "cs", 20, (64, 128))
    env = {**os.environ, "CITYSCAPES": str(tmp_path / "cs"), "RUN": str(tmp_path / "run"),
           "DEVICE": "cpu", "SEARCH_SIZE": "32x64", "SEARCH_EPOCHS": "1", "SEARCH_BATCH": "4",
           "TRAIN_SIZE": "32x64", "TRAIN_EPOCHS": "1", "TRAIN_BATCH": "4", "WORKERS": "0",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(EXAMPLES / "cityscapes_pipeline.sh")], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, (done.stdout[-1500:], done.stderr[-1500:])
    run = tmp_path / "run"
    assert json.loads((run / "eval.json").read_text())["images"] == 4
    for name in ("search/genotype.json", "train/best.pt", "model.onnx", "bench.json",
                 "triton/ssrnet/config.pbtxt"):
        assert (run / name).is_file(), name
    for step in ("search", "train"):  # the authors' recipe: their class weights, from scratch
        config = json.loads((run / step / "config.json").read_text())
        assert config["class_weights_from"] == "paper", step
    assert json.loads((run / "train" / "config.json").read_text())["init_from"] == ""


def test_cityscapes_pipeline_options():
    script = str(EXAMPLES / "cityscapes_pipeline.sh")
    helped = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--init-from-search" in helped.stdout
    bad = subprocess.run(["bash", script, "--init"], capture_output=True, text=True,
                         env={**os.environ, "CITYSCAPES": "/nonexistent"})
    assert bad.returncode == 2 and "unknown argument --init" in bad.stderr
