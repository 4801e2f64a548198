import json

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as official

from ssr_deploy import SsrDeployError
from ssr_deploy.data import classes as C
from ssr_deploy.data import open_dataset, write_cityscapes_layout
from ssr_deploy.data.synthetic import render_video, street_scene


def test_label_table_matches_the_official_one():
    assert len(C.NAMES) == 19 and C.NAMES[0] == "road" and C.NAMES[18] == "bicycle"
    for label in official:
        if 0 <= label.id < 256:
            expected = label.trainId if 0 <= label.trainId < 255 else 255
            assert C.LABEL_TO_TRAIN[label.id] == expected, label.name
        if 0 <= label.trainId < 19:
            assert C.TRAIN_TO_LABEL[label.trainId] == label.id
            assert C.PALETTE[label.trainId] == tuple(label.color)
    assert not C.KNOWN_LABEL_IDS[34] and C.KNOWN_LABEL_IDS[33]


def test_synthetic_is_deterministic_and_varied():
    a, b = street_scene(3, 64, 128), street_scene(3, 64, 128)
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    other = street_scene(4, 64, 128)
    assert (a[0] != other[0]).any()
    present = set()
    for seed in range(20):
        present |= set(np.unique(street_scene(seed, 128, 256)[1]).tolist())
    names = {C.NAMES[i] for i in present}
    assert {"road", "sidewalk", "building", "vegetation", "sky", "pole", "car",
            "person", "traffic sign", "terrain"} <= names


def test_synthetic_train_and_val_are_disjoint():
    train = open_dataset("synthetic:5", "train", (32, 64))
    val = open_dataset("synthetic:5", "val", (32, 64))
    assert not set(train.names) & set(val.names)
    assert len(train) == 5 and train[0][0].shape == (32, 64, 3)


def test_written_layout_reads_back_through_the_cityscapes_loader(tmp_path):
    counts = write_cityscapes_layout(tmp_path, 6, (40, 80), seed=2)
    assert counts == {"train": 5, "val": 1}
    ds = open_dataset(f"cityscapes:{tmp_path}", "train")
    synth = open_dataset("synthetic:5", "train", (40, 80))
    synth.seed, synth.offset = 2, 2 * 1_000_003
    assert len(ds) == 5 and ds.names[0].startswith("synth_000002_")
    for i in range(5):
        image, label = ds[i]
        ref_image, ref_label = street_scene(synth.offset + i, 40, 80)
        assert (label == ref_label).all()  # labelIds on disk -> the same trainIds
        assert np.abs(image.astype(int) - ref_image).max() == 0  # PNG is lossless


def test_cityscapes_prefers_train_ids_and_reports_problems(tmp_path):
    write_cityscapes_layout(tmp_path, 3, (16, 32))
    gt = tmp_path / "gtFine" / "train" / "synth"
    first = sorted(gt.glob("*_labelIds.png"))[0]
    label_ids = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    train_ids = C.LABEL_TO_TRAIN[label_ids]
    cv2.imwrite(str(first).replace("labelIds", "labelTrainIds"), train_ids)
    with pytest.raises(SsrDeployError, match="1 images have no gtFine label"):
        open_dataset(f"cityscapes:{tmp_path}", "train")  # only one has labelTrainIds
    first.with_name(first.name.replace("labelIds", "labelTrainIds")).unlink()
    bad = label_ids.copy()
    bad[0, 0] = 40
    cv2.imwrite(str(first), bad)
    with pytest.raises(SsrDeployError, match=r"ids \[40\] that the Cityscapes label table"):
        open_dataset(f"cityscapes:{tmp_path}", "train")[0]
    cv2.imwrite(str(first), label_ids[:8])
    with pytest.raises(SsrDeployError, match="must be the same size"):
        open_dataset(f"cityscapes:{tmp_path}", "train")[0]
    first.write_bytes(b"broken")
    with pytest.raises(SsrDeployError, match="corrupt or not an image"):
        open_dataset(f"cityscapes:{tmp_path}", "train")[0]


def test_folder_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.json").write_text(json.dumps({"names": ["bg", "fg"]}))
    for stem in ("a", "b"):
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.jpg"), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), np.ones((8, 8), np.uint8))
    ds = open_dataset(f"folder:{tmp_path}")
    assert ds.classes == ("bg", "fg") and len(ds.palette) == 2 and ds[1][1].max() == 1
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), np.full((8, 8), 7, np.uint8))
    with pytest.raises(SsrDeployError, match="class ids >= 2"):
        ds[0]
    cv2.imwrite(str(tmp_path / "masks" / "c.png"), np.ones((8, 8), np.uint8))
    (tmp_path / "images" / "b.jpg").unlink()
    with pytest.raises(SsrDeployError, match="images without a mask: .*masks without an image: "
                                             "b, c"):
        (tmp_path / "images" / "d.png").write_bytes(b"x")
        open_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("source, message", [("imagenet:/x", "is not known"),
                                             ("cityscapes:/nope", "has no leftImg8bit"),
                                             ("folder:/nope", "has no images/ folder")])
def test_bad_sources(source, message):
    with pytest.raises(SsrDeployError, match=message):
        open_dataset(source)


def test_render_video(tmp_path):
    path = render_video(tmp_path / "drive.mp4", 7, (32, 64))
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    assert [p.name for p in tmp_path.iterdir()] == ["drive.mp4"]


def test_the_label_table_is_the_official_one():
    """classes.py writes out cityscapesscripts' table (a runtime install goes without the
    package): it must stay that table."""
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    from ssr_deploy.data import classes

    assert tuple((label.name, label.id, label.trainId, tuple(label.color))
                                   for label in labels) == classes.LABELS
    assert len(classes.NAMES) == 19 and classes.NAMES[0] == "road"
