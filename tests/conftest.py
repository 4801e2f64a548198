import dataclasses
import os
import random

import cv2
import numpy as np
import pytest
import torch
from hypothesis import settings

from ssr_deploy.data import classes
from ssr_deploy.data.synthetic import render_video, street_scene
from ssr_deploy.genotype import Genotype
from tests.helpers import random_genotype

# Tests assert what holds on any machine of the project's kind, however slow: no example
# may fail for taking long (hypothesis' default 200 ms deadline would on a slow machine).
settings.register_profile("any-machine", deadline=None, derandomize=True)
settings.load_profile("any-machine")

# Under pytest-xdist (-n 2, the README's command) each worker computes on one thread: two
# workers that each spin two OpenMP threads on a 2-core machine slow each other badly.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # and the subprocesses tests start
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, whatever ran before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def zoo_genotype() -> Genotype:
    return Genotype.load("ssr-cityscapes")


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory):
    """A tiny network (19 Cityscapes classes) as g.json, ck.pt and m.onnx (uint8 in, labels
    out, 32x64), a 30-frame 64x128 clip.avi and a frames/ folder of 4 PNGs."""
    root = tmp_path_factory.mktemp("inputs")
    genotype = dataclasses.replace(random_genotype(7, max_stages=2, max_width=12),
                                   classes=classes.NAMES, palette=classes.PALETTE)
    genotype.save(root / "g.json")
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.checkpoint import save_checkpoint
    from ssr_deploy.model.net import build_model
    from ssr_deploy.spec import IOFormat

    net = build_model(genotype).eval()
    save_checkpoint(root / "ck.pt", net, genotype)
    export_onnx(net, root / "m.onnx", size=(32, 64), simplify=False,
                io=IOFormat("uint8-nhwc-bgr", "labels"))
    render_video(root / "clip.avi", 30, (64, 128))
    (root / "frames").mkdir()
    for k in range(4):
        cv2.imwrite(str(root / "frames" / f"{k}.png"), street_scene(k, 64, 128)[0])
    return root


@pytest.fixture(scope="session")
def labels_onnx(tmp_path_factory):
    """A uint8-in / labels-out ONNX of a confident network (``helpers.confident_net``) with
    dynamic batch (1-16) and size (32x64 to 128x256), exported at 64x128 (read only)."""
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.spec import IOFormat
    from tests.helpers import confident_net

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(confident_net(), path, size=(64, 128), batch=2,
                dynamic_batch=True, max_batch=16, dynamic_size=True, min_size=(32, 64),
                max_size=(128, 256), io=IOFormat("uint8-nhwc-bgr", "labels"))
    return path


@pytest.fixture(scope="session")
def paper_uint8_onnx(tmp_path_factory):
    """The paper's network at 32x64 as m.onnx: uint8 BGR in, labels out, batch 1 to 8
    (read only: copy it to change it)."""
    import torch

    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.net import build_model
    from ssr_deploy.spec import IOFormat

    path = tmp_path_factory.mktemp("paper") / "m.onnx"
    torch.manual_seed(0)  # its weights the same whichever test makes it first
    export_onnx(build_model("ssr-cityscapes"), path, size=(32, 64), dynamic_batch=True,
                max_batch=8, io=IOFormat("uint8-nhwc-bgr", "labels"))
    return path


@pytest.fixture(scope="session")
def street_pngs(tmp_path_factory):
    """A folder of 6 street-like 64x128 frames as PNGs (calibration images)."""
    from ssr_deploy.data.synthetic import street_frames

    folder = tmp_path_factory.mktemp("street")
    for i, frame in enumerate(street_frames(6, 64, 128, seed=2)):
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
    return folder
