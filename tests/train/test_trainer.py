import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from ssr_deploy import SsrDeployError, build_model
from ssr_deploy.cli import main
from ssr_deploy.data import open_dataset
from ssr_deploy.data import weights as class_weights
from ssr_deploy.train.trainer import TrainConfig, Trainer

SIZE = (32, 64)


def _trainer(out, epochs, seed=0):
    torch.manual_seed(seed)
    net = build_model("ssr-cityscapes")
    config = TrainConfig(size=SIZE, epochs=epochs, batch=4, workers=0, seed=seed)
    return Trainer(net, open_dataset("synthetic:8", "train", SIZE),
                   open_dataset("synthetic:2", "val", SIZE), out, config)


@pytest.mark.parametrize("offset", [1.02, 1.20])
def test_frequency_weights_favour_rare_classes(offset):
    w = class_weights.frequency_weights(open_dataset("synthetic:10", "train", SIZE), 19, offset)
    road, pole = w[0].item(), w[5].item()
    assert pole > road > 1.0 and w.shape == (19,)


def test_the_paper_table_is_the_erfnet_formula_on_cityscapes_frequencies():
    """The authors' fixed table inverts to class frequencies through 1/ln(1.20 + p): all
    non-negative, road the largest, their sum below 1 (void pixels count in the total)."""
    p = torch.exp(1 / torch.tensor(class_weights.PAPER, dtype=torch.float64)) - 1.20
    assert (p > 0).all() and p.argmax() == 0 and 0.8 < p.sum() < 1.0
    w = torch.tensor(class_weights.PAPER)
    assert w.max() / w.min() == pytest.approx(2.31, abs=0.01)


def test_class_weights_resolve_per_data(tmp_path):
    synthetic = open_dataset("synthetic:4", "train", SIZE)
    name, w = class_weights.resolve("auto", "cityscapes:/data", synthetic)  # 19 Cityscapes names
    assert name == "paper" and w.tolist() == pytest.approx(class_weights.PAPER)
    name, w = class_weights.resolve("auto", "synthetic:4", synthetic)
    assert name == "erfnet" and w.max() / w.min() < 6  # 1/ln(1.2): at most 5.5
    assert class_weights.resolve("none", "", synthetic)[1].tolist() == [1.0] * 19

    class Three:
        classes = ("a", "b", "c")

    with pytest.raises(SsrDeployError, match="19 Cityscapes classes; this data has 3"):
        class_weights.resolve("paper", "folder:x", Three())


def test_train_writes_its_resolved_config(tmp_path):
    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["command"] == "train" and config["class_weights_from"] == "erfnet"
    assert config["class_weights"] == pytest.approx(trainer.weights.tolist())
    assert config["init_from"] == "" and config["epochs"] == 1 and config["size"] == [32, 64]


def test_resume_continues_exactly(tmp_path):
    straight = _trainer(tmp_path / "a", epochs=3)
    straight.fit()
    first = _trainer(tmp_path / "b", epochs=3)
    first.config.epochs = 3
    first.train_one_epoch()
    first.epoch = 1
    first.best = 0.0
    first._publish({"epoch": 1, "loss": 1.0, "val_miou": 0.0}, improved=True)  # then killed
    resumed = _trainer(tmp_path / "b", epochs=3, seed=123)  # a different seed must not matter
    resumed.config.seed = 0
    resumed.train_data.seed = 0
    resumed.resume(tmp_path / "b" / "last.pt")
    assert resumed.epoch == 1
    resumed.fit()
    for a, b in zip(straight.net.state_dict().values(), resumed.net.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3]
    assert log[0]["lr"] > log[1]["lr"] > log[2]["lr"]  # poly decay per epoch
    assert (tmp_path / "a" / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_refuses_another_genotype(tmp_path):
    from ssr_deploy import save_checkpoint
    from tests.helpers import random_genotype

    other = random_genotype(2)
    save_checkpoint(tmp_path / "last.pt", build_model(other), other, optimizer={})
    with pytest.raises(SsrDeployError, match="not ssr-cityscapes"):
        _trainer(tmp_path / "x", 1).resume(tmp_path / "last.pt")


def _train_args(out, *extra, epochs=1, batch=4):
    return ["train", "--genotype", "ssr-cityscapes", "--data", "synthetic:8", "--out", str(out),
            "--size", "32x64", "--epochs", str(epochs), "--batch", str(batch), "--workers", "0",
            *extra]


def test_cli_train_and_its_refusals(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, _train_args(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "run").iterdir()} == {
        "last.pt", "best.pt", "log.jsonl", "curves.png", "config.json"}
    again = runner.invoke(main, _train_args(tmp_path / "run"))
    assert again.exit_code == 1 and "already holds a run" in again.output
    more = runner.invoke(main, _train_args(tmp_path / "run", "--resume", "--override",
                                           epochs=2))
    assert more.exit_code == 0, more.output
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
    bad = runner.invoke(main, _train_args(tmp_path / "new", "--resume"))
    assert bad.exit_code == 1 and "does not exist" in bad.output
    big = runner.invoke(main, _train_args(tmp_path / "big", batch=64))
    assert big.exit_code == 1 and "make no batch of 64" in big.output
    assert "Traceback" not in big.output


def test_ddp_with_gloo_two_processes(tmp_path):
    """torchrun, 2 CPU processes (gloo): both train, rank 0 alone writes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "ssr_deploy", "train", "--genotype", "ssr-cityscapes", "--data", "synthetic:8",
         "--out", str(tmp_path / "ddp"), "--size", "32x64", "--epochs", "1", "--batch", "2",
         "--workers", "0"], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    log = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len(log) == 1  # one writer
    state = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["state_dict"])
