import os
import pickle

import pytest
import torch

from ssr_deploy import SsrDeployError, build_model, load_model, save_checkpoint
from ssr_deploy.genotype import Genotype
from tests.helpers import random_genotype


def test_round_trip_carries_genotype_and_weights(tmp_path, zoo_genotype):
    net = build_model(zoo_genotype)
    for p in net.parameters():
        torch.nn.init.normal_(p)
    path = save_checkpoint(tmp_path / "ckpt.pt", net, zoo_genotype, epoch=7, miou=0.5)
    raw = torch.load(path, weights_only=True)
    assert raw["genotype_hash"] == zoo_genotype.hash and raw["epoch"] == 7
    loaded = load_model(path)
    assert not loaded.training and loaded.genotype == zoo_genotype
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x))


def test_random_genotype_with_other_class_count(tmp_path):
    g = random_genotype(3)
    net = build_model(g, num_classes=11)
    loaded = load_model(save_checkpoint(tmp_path / "a.pt", net, g))
    assert loaded.num_classes == 11 and loaded.genotype.hash == g.hash


def test_failed_write_keeps_previous_checkpoint(tmp_path, zoo_genotype, monkeypatch):
    net = build_model(zoo_genotype)
    path = save_checkpoint(tmp_path / "ckpt.pt", net, zoo_genotype, epoch=1)
    before = path.read_bytes()
    real_save = torch.save

    def dies_half_way(obj, f, *a, **k):
        real_save({"partial": torch.zeros(10)}, f)
        raise KeyboardInterrupt  # as if killed mid-save

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, net, zoo_genotype, epoch=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temp file left behind


def test_weights_that_do_not_fit_list_the_keys(tmp_path, zoo_genotype):
    net = build_model(zoo_genotype)
    path = save_checkpoint(tmp_path / "ckpt.pt", net, zoo_genotype)
    state = torch.load(path, weights_only=True)
    state["state_dict"].pop("head.classifier.bias")
    state["state_dict"]["stem.conv.weight"] = torch.zeros(1, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(SsrDeployError, match=r"missing head.classifier.bias; wrong shape "
                                             r"stem.conv.weight \(1, 3, 3, 3\) vs \(13, 3, 3, 3\)"):
        load_model(path)


def test_edited_genotype_is_caught(tmp_path, zoo_genotype):
    path = save_checkpoint(tmp_path / "ckpt.pt", build_model(zoo_genotype), zoo_genotype)
    state = torch.load(path, weights_only=True)
    state["genotype"]["stages"][0]["dropout"] = 0.5
    torch.save(state, path)
    with pytest.raises(SsrDeployError, match="does not match its recorded hash"):
        load_model(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoints_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"genotype": _Evil(), "state_dict": {}}, f)
    with pytest.raises(SsrDeployError, match="refused checkpoint .*could run code") as err:
        load_model(path)
    assert "weights_only=False" not in str(err.value)  # torch's advice, wrong for such a file


@pytest.mark.parametrize("content, words", [(None, "does not exist"),
                                            (b"garbage", "not a PyTorch checkpoint"),
                                            (b"\x08\x09onnx", "looks like an ONNX model"),
                                            (b"", "it is empty"),
                                            ("dict", "not an ssr-deploy checkpoint")])
def test_bad_checkpoint_files(tmp_path, content, words):
    path = tmp_path / "x.pt"
    if content == "dict":
        torch.save({"weights": torch.zeros(1)}, path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SsrDeployError, match=words):
        load_model(path)


def test_save_into_missing_folder_is_a_clear_error(tmp_path, zoo_genotype):
    with pytest.raises(SsrDeployError, match="folder .*nope does not exist"):
        save_checkpoint(tmp_path / "nope" / "a.pt", build_model(zoo_genotype), zoo_genotype)
    assert Genotype.load("ssr-cityscapes") == zoo_genotype
