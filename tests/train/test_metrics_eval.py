import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ssr_deploy import build_model, save_checkpoint
from ssr_deploy.cli import main
from ssr_deploy.data import open_dataset, write_cityscapes_layout
from ssr_deploy.data.classes import TRAIN_TO_LABEL
from ssr_deploy.metrics import ConfusionMatrix
from ssr_deploy.train.evaluate import evaluate


def test_confusion_matrix_by_hand():
    cm = ConfusionMatrix(3)
    target = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 255, 0, 2]], np.uint8)
    cm.update(pred, target)
    r = cm.compute(["a", "b", "c"])
    # a: tp1 fp0 fn1 -> 1/2; b: tp2 fp1 fn0 -> 2/3; c: tp1 fp0 fn1 (predicted 255) -> 1/2
    assert r["per_class"] == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 0.5})
    assert r["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert r["pixel_acc"] == pytest.approx(4 / 6)
    empty = ConfusionMatrix(2)
    empty.update(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    assert empty.compute()["per_class"]["1"] is None


def test_our_miou_equals_the_official_cityscapes_evaluation(tmp_path):
    """Same predictions, scored by us (trainIds) and by cityscapesscripts (labelIds)."""
    import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as official

    write_cityscapes_layout(tmp_path / "cs", 10, (64, 128), seed=1)
    ds = open_dataset(f"cityscapes:{tmp_path / 'cs'}", "train")
    rng = np.random.default_rng(0)
    ours = ConfusionMatrix(19)
    preds, gts = [], []
    (tmp_path / "preds").mkdir()
    for i, pair in enumerate(ds.pairs):
        _, label = ds[i]
        pred = label.copy()
        noise = rng.random(label.shape) < 0.3  # corrupt 30% of pixels with random classes
        pred[noise] = rng.integers(0, 19, int(noise.sum()))
        ours.update(pred, label)
        path = tmp_path / "preds" / f"{pair.name}_pred.png"
        cv2.imwrite(str(path), TRAIN_TO_LABEL[pred])
        preds.append(str(path))
        gts.append(str(pair.label))
    args = official.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    args.exportFile = str(tmp_path / "official.json")
    result = official.evaluateImgLists(preds, gts, args)
    theirs = result["averageScoreClasses"]
    mine = ours.compute()
    assert abs(mine["miou"] - theirs) <= 1e-6
    per_class = {name: score for name, score in result["classScores"].items()
                 if not np.isnan(score)}
    from ssr_deploy.data.classes import NAMES

    ours_named = dict(zip(NAMES, ours.compute()["per_class"].values(), strict=True))
    for name, score in per_class.items():
        assert abs(ours_named[name] - score) <= 1e-6, name


def test_evaluate_checkpoint_and_save_preds(tmp_path):
    write_cityscapes_layout(tmp_path / "cs", 5, (32, 64))
    net = build_model("ssr-cityscapes")
    ckpt = save_checkpoint(tmp_path / "n.pt", net, net.genotype)
    result = CliRunner().invoke(main, ["eval", "--weights", str(ckpt), "--data",
                                       f"cityscapes:{tmp_path / 'cs'}", "--size", "32x64",
                                       "--flip", "--save-preds", str(tmp_path / "p"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"miou", "per_class", "pixel_acc"} <= set(report) and report["images"] == 1
    written = list((tmp_path / "p").iterdir())
    assert len(written) == 1 and written[0].name.endswith("_pred_labelIds.png")
    direct = evaluate(net, open_dataset(f"cityscapes:{tmp_path / 'cs'}", "val"), (32, 64),
                      flip=True)
    assert direct["miou"] == pytest.approx(report["miou"])
