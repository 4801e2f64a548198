"""Hostile input, one test per failure class (issue 13): outputs that would destroy inputs,
OSError, resource bounds, --resume with changed settings, unvalidated arguments, wrong
results, unclear errors, reused output folders. Full disks, read-only folders and kill -9
are in test_faults.py."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ssr_deploy.cli import main
from ssr_deploy.data import open_dataset
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.genotype import Genotype
from ssr_deploy.model.checkpoint import load_model, save_checkpoint
from ssr_deploy.model.net import build_model
from ssr_deploy.runtime.segmenter import Segmenter
from ssr_deploy.settings import SIZE, Number

runner = CliRunner()


def _error(args: list[str]) -> str:
    """The one line a refused command prints (exit status 1 or click's 2, no traceback)."""
    result = runner.invoke(main, args)
    assert result.exit_code in (1, 2), (args, result.exit_code, result.output)
    assert "Traceback" not in result.output and not isinstance(
        result.exception, (AssertionError, TypeError, KeyError, AttributeError))
    return " ".join(result.stderr.split())


# ---- outputs that would destroy inputs ---------------------------------------------------

def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tiny_inputs, tmp_path):
    ck, model, clip = tiny_inputs / "ck.pt", tiny_inputs / "m.onnx", tiny_inputs / "clip.avi"
    kept = {p: p.read_bytes() for p in (ck, model, clip, tiny_inputs / "g.json")}
    cases = [
        ["export", "onnx", str(ck), "-o", str(ck)],
        ["export", "onnx", str(tiny_inputs / "g.json"), "--weights", str(ck), "-o",
         str(tiny_inputs / "g")],  # its sidecar g.json would replace the genotype
        ["video", str(clip), "--model", str(model), "-o", str(clip)],
        ["bench", str(model), "--json", str(model)],
        ["bench", str(model), "--plot", str(model) + ".json"],  # its sidecar
        ["profile", str(model), "--trace", str(model)],
        ["eval", "--weights", str(ck), "--data", f"folder:{tiny_inputs}", "--save-preds",
         str(tiny_inputs)],
        ["export", "triton", str(tmp_path / "r/ssrnet/1/model.onnx"), "--repo",
         str(tmp_path / "r"), "--max-batch", "0"],  # a served model, re-exported onto itself
    ]
    served = tmp_path / "r/ssrnet/1"
    served.mkdir(parents=True)
    shutil.copy(model, served / "model.onnx")
    shutil.copy(str(model) + ".json", served / "model.onnx.json")
    for args in cases:
        line = _error(args)
        assert "input" in line and "choose another path" in line, (args, line)
    assert {p: p.read_bytes() for p in kept} == kept


# ---- OSError: one line, the path and what the errno means ----------------------------------

def test_os_errors_are_one_line_with_the_path(tiny_inputs, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, words in [
        (["export", "onnx", str(tiny_inputs / "ck.pt"), "-o", str(a_file / "m.onnx")],
         "is a file, not a folder"),
        (["data", "synth", "--out", str(a_file / "d"), "--n", "1"], "parent folder"),
        (["bench", str(tiny_inputs / "m.onnx"), "--json", str(a_file / "b.json")],
         "is a file, not a folder"),
        (["info", str(tmp_path)], "is a folder"),
        (["eval", "--weights", str(tmp_path), "--data", "synthetic:1"], "is a folder"),
        (["video", str(tmp_path / "none.mp4"), "--model", str(tiny_inputs / "m.onnx"), "-o",
          str(tmp_path / "o.avi")], "does not exist"),
        (["bench", str(tmp_path)], "is a folder, not a file"),
    ]:
        line = _error(args)
        assert words in line, (args, line)


def test_the_cli_turns_an_oserror_into_its_path_and_meaning(monkeypatch, tiny_inputs):
    import errno

    import ssr_deploy.runtime.profile as profile

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", "/mnt/share/model.onnx")

    monkeypatch.setattr(profile, "profile", fail)
    line = _error(["profile", str(tiny_inputs / "m.onnx")])
    assert line == ("error: cannot read or write /mnt/share/model.onnx: an I/O error (a "
                    "failing disk or a lost network share)")


# ---- resource bounds ---------------------------------------------------------------------

def test_sizes_batches_and_memory_are_bounded_before_allocation(tiny_inputs):
    model = str(tiny_inputs / "m.onnx")
    assert "above 8192 pixels" in _error(["bench", model, "--frame-size", "20000x20000"])
    assert "1 to 1024" in _error(["bench", model, "--batch", "100000"])
    assert "takes batches of at most 1" in _error(["bench", model, "--batch", "8"])
    line = _error(["train", "--genotype", "ssr-cityscapes", "--data", "synthetic:4",
                   "--size", "4096x8192", "--batch", "1024", "--out", "/tmp/never-made"])
    assert "of memory" in line and "lower --batch or --size" in line
    assert not Path("/tmp/never-made").exists()


# ---- --resume holds to the run's settings ------------------------------------------------

def test_resume_refuses_changed_settings_unless_overridden(tiny_inputs, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--genotype", str(tiny_inputs / "g.json"), "--data", "synthetic:4",
            "--size", "32x64", "--batch", "2", "--workers", "0", "--out", str(out)]
    first = runner.invoke(main, [*base, "--epochs", "1", "--lr", "0.001"])
    assert first.exit_code == 0, first.output
    logged = json.loads((out / "log.jsonl").read_text())["val_miou"]  # a fraction
    assert f"val mIoU {100 * logged:.2f}%" in first.output  # printed as the percentage it is
    line = _error([*base, "--epochs", "1", "--lr", "0.01", "--resume"])
    assert "--lr 0.01 (the run used 0.001)" in line and "--override" in line
    # not given: the run's own settings, said; a finished run extended trains at a real lr
    result = runner.invoke(main, ["train", "--data", "synthetic:4", "--genotype",
                                  str(tiny_inputs / "g.json"), "--out", str(out), "--resume",
                                  "--epochs", "2", "--override", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "lr 0.001" in result.stderr and "size 32x64" in result.stderr
    rows = [json.loads(r) for r in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert math.isclose(rows[1]["lr"], 0.001 * 0.5 ** 0.9, rel_tol=1e-6), rows[1]["lr"]
    assert "already holds a run" in _error([*base, "--epochs", "1"])  # without --resume


# ---- arguments: validated, never silently ignored ----------------------------------------

@pytest.mark.parametrize("args, words", [
    (["train", "--lr", "nan"], "not a finite number > 0"),
    (["train", "--lr", "-1"], "not a finite number > 0"),
    (["train", "--weight-decay", "inf"], "not a finite number >= 0"),
    (["search", "--tau", "5"], "< 1"),
    (["search", "--tau", "nan"], "not a finite number"),
    (["search", "--target-ratio", "0"], "> 0"),
    (["search", "--arch-lr", "-0.1"], "> 0"),
    (["search", "--loss-weights", "1,2,3,4,nan"], "five finite numbers >= 0"),
    (["search", "--loss-weights", "0,30,15,15,1"], "CE weight must be above 0"),
])
def test_numbers_are_finite_and_in_range(args, words, tmp_path):
    required = ["--data", "synthetic:4", "--out", str(tmp_path / "o")]
    if args[0] == "train":
        required += ["--genotype", "ssr-cityscapes"]
    assert words in _error([*args, *required])


def test_options_that_would_be_ignored_are_refused(tiny_inputs, tmp_path):
    ck, out = str(tiny_inputs / "ck.pt"), str(tmp_path / "m.onnx")
    for args, words in [
        (["--max-batch", "4"], "--max-batch applies with --dynamic-batch only"),
        (["--min-size", "32x64"], "--min-size applies with --dynamic-size only"),
        (["--label-dtype", "int32"], "--label-dtype applies with --output labels only"),
        (["--opset", "99"], "SSRNet exports at opset 17 to"),
    ]:
        assert words in _error(["export", "onnx", ck, "-o", out, "--size", "32x64", *args])
    assert not Path(out).exists()
    for source in ("synthetic:-5", "synthetic:abc", "synthetic:0"):
        with pytest.raises(SsrDeployError, match="N must be a whole number"):
            open_dataset(source)


@given(st.text(max_size=12))
def test_any_size_text_is_a_size_or_a_usage_error(text):
    import click

    try:
        h, w = SIZE.convert(text, None, None)
    except click.BadParameter:
        return
    assert 1 <= h <= 8192 and 1 <= w <= 8192


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6)))
def test_any_number_text_is_finite_in_range_or_refused(value):
    import click

    try:
        x = Number(0, 1, low_open=True).convert(str(value), None, None)
    except click.BadParameter:
        return
    assert math.isfinite(x) and 0 < x <= 1


# ---- wrong results -----------------------------------------------------------------------

def test_more_than_256_classes_keep_their_ids(tmp_path):
    genotype = Genotype.load("ssr-cityscapes")
    names = tuple(f"c{i}" for i in range(300))
    genotype = dataclasses.replace(genotype, classes=names,
                                   palette=tuple((i % 256, 0, 0) for i in range(300)))
    net = build_model(genotype).eval()
    with torch.no_grad():  # make class 299 win everywhere
        net.head.classifier.bias.fill_(-10)
        net.head.classifier.bias[299] = 10
    save_checkpoint(tmp_path / "c300.pt", net, genotype)
    with Segmenter.load(tmp_path / "c300.pt", "torch", size=(64, 128)) as seg:
        labels = seg(np.zeros((64, 128, 3), np.uint8))
        assert labels.dtype == np.uint16 and (labels == 299).all()
        assert seg.colorize(labels).shape == (64, 128, 3)
    line = _error(["export", "onnx", str(tmp_path / "c300.pt"), "-o", str(tmp_path / "x.onnx"),
                   "--output", "labels", "--label-dtype", "uint8", "--size", "64x128"])
    assert "use --label-dtype int32" in line


def test_nan_weights_are_refused(tiny_inputs, tmp_path):
    net = load_model(tiny_inputs / "ck.pt")
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.pt", net, net.genotype)
    with pytest.raises(SsrDeployError, match="NaN or inf .* diverged"):
        load_model(tmp_path / "nan.pt")


def _folder_dataset(root: Path, n: int = 10, names=("road", "car")) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "images" / f"{i:02d}.png"), np.full((8, 8, 3), i, np.uint8))
        cv2.imwrite(str(root / "masks" / f"{i:02d}.png"), np.full((8, 8), i % 2, np.uint8))
    (root / "classes.json").write_text(json.dumps({"names": list(names)}))
    return root


def test_folder_data_splits_and_checks_its_classes(tmp_path):
    root = _folder_dataset(tmp_path / "d")
    train, val = open_dataset(f"folder:{root}", "train"), open_dataset(f"folder:{root}", "val")
    assert len(train) == 8 and len(val) == 2 and not set(train.names) & set(val.names)
    with pytest.raises(SsrDeployError, match="only train and val"):
        open_dataset(f"folder:{root}", "test")
    for bad, words in [({"names": "road"}, "list of non-empty strings"),
                       ({"names": ["a", 3]}, "list of non-empty strings"),
                       ({"names": ["a", "a"]}, "more than once"),
                       ({"names": ["a", "b"], "colors": [[1, 2, 3]]}, "one [r, g, b]"),
                       ({"names": ["a", "b"], "colors": [[1, 2, 300], [0, 0, 0]]}, "0-255"),
                       ([1, 2], "list of non-empty strings")]:
        (root / "classes.json").write_text(json.dumps(bad))
        with pytest.raises(SsrDeployError, match=words.replace("[", r"\[")):
            open_dataset(f"folder:{root}")


def test_class_names_from_classes_json_reach_the_checkpoint(tiny_inputs, tmp_path):
    root = _folder_dataset(tmp_path / "d", n=6, names=("road", "car", "tree"))
    result = runner.invoke(main, ["train", "--genotype", str(tiny_inputs / "g.json"),
                                  "--data", f"folder:{root}", "--size", "32x64", "--epochs",
                                  "1", "--batch", "2", "--workers", "0", "--out",
                                  str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "run" / "last.pt").genotype.classes == ("road", "car", "tree")


def test_triton_names_stay_inside_the_repository(tiny_inputs, tmp_path):
    for name in ("../../x", "a/b", "..", ""):
        assert "a Triton model name is" in _error(
            ["export", "triton", str(tiny_inputs / "m.onnx"), "--repo", str(tmp_path / "r"),
             "--name", name, "--max-batch", "0"])
    assert not (tmp_path / "r").exists() and not (tmp_path.parent / "x").exists()


# ---- unclear errors ----------------------------------------------------------------------

def test_a_wrong_kind_of_file_is_named(tiny_inputs, tmp_path):
    model = str(tiny_inputs / "m.onnx")
    assert "looks like an ONNX model" in _error(["eval", "--weights", model, "--data",
                                                 "synthetic:1"])
    (tmp_path / "r.pt").write_bytes(np.random.default_rng(0).bytes(64))
    assert "not a PyTorch checkpoint" in _error(["export", "onnx", str(tmp_path / "r.pt"),
                                                 "-o", str(tmp_path / "o.onnx")])


# ---- reused output folders ---------------------------------------------------------------

def test_a_used_output_folder_is_refused_or_replaced_whole(tmp_path):
    out = tmp_path / "synth"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    args = ["data", "synth", "--out", str(out), "--n", "2", "--size", "32x64"]
    assert "already holds files" in _error(args) and (out / "stale.png").exists()
    assert runner.invoke(main, [*args, "--overwrite"]).exit_code == 0
    assert not (out / "stale.png").exists() and len(list(out.rglob("*.png"))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no temp folder left
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert "already holds files" in _error(["train", "--genotype", "ssr-cityscapes", "--data",
                                            "synthetic:4", "--out", str(run)])


# ---- what a new user reads ---------------------------------------------------------------

def test_help_and_messages_read_right(tiny_inputs, tmp_path):
    text = runner.invoke(main, ["search", "--help"]).output
    assert "\\b" not in text and "\b" not in text
    assert "  Examples:\n    ssr-deploy search --data cityscapes" in text
    result = runner.invoke(main, ["export", "triton", str(tiny_inputs / "m.onnx"), "--repo",
                                  str(tmp_path / "r"), "--max-batch", "0", "--cpu"])
    assert "1/model.onnx" in result.output and (tmp_path / "r/ssrnet/1/model.onnx").is_file()


@given(st.fixed_dictionaries({}, optional={
    "--dynamic-batch": st.just(None), "--dynamic-size": st.just(None),
    "--output": st.sampled_from(["logits", "labels"]),
    "--max-batch": st.sampled_from(["4", "0", "x"]),
    "--min-size": st.sampled_from(["16x32", "0x1", "9000x9000"]),
    "--max-size": st.sampled_from(["64x128", "abc"]),
    "--label-dtype": st.sampled_from(["uint8", "int32", "int64"]),
    "--opset": st.sampled_from(["17", "18", "99", "-1"])}))
def test_export_option_combinations_are_checked_before_any_work(tiny_inputs, options):
    """Any combination: refused in one line naming the option at fault, or (all consistent)
    carried through to the first real check, the missing output folder."""
    args = ["export", "onnx", str(tiny_inputs / "ck.pt"), "-o", "/nonexistent/m.onnx",
            "--size", "32x64"]
    for flag, value in options.items():
        args += [flag] if value is None else [flag, value]
    line = _error(args)
    dynamic_batch, dynamic_size = "--dynamic-batch" in options, "--dynamic-size" in options
    faults = [
        options.get("--max-batch") in ("0", "x"), options.get("--min-size") in ("0x1",
                                                                                "9000x9000"),
        options.get("--max-size") == "abc", options.get("--label-dtype") == "int64",
        options.get("--opset") in ("99", "-1"),
        "--max-batch" in options and not dynamic_batch,
        ("--min-size" in options or "--max-size" in options) and not dynamic_size,
        "--label-dtype" in options and options.get("--output") != "labels"]
    if not any(faults):
        assert "/nonexistent does not exist" in line, (options, line)
    else:
        assert "/nonexistent" not in line and "--" in line, (options, line)


# ---- the fifth hostile round, beside the door (tests/serving/test_door.py) ----------------

def test_export_triton_never_writes_through_a_linked_model_folder(tiny_inputs, tmp_path):
    """D1: a symlinked model folder inside --repo had the export replace files elsewhere."""
    outside = tmp_path / "outside"
    (outside / "1").mkdir(parents=True)
    victim = outside / "1" / "model.onnx"
    victim.write_bytes(b"someone else's")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "ssrnet").symlink_to(outside)
    line = _error(["export", "triton", str(tiny_inputs / "m.onnx"), "--repo", str(repo),
                   "--cpu", "--max-batch", "0"])
    assert "is a symbolic link" in line and "real folders" in line
    assert victim.read_bytes() == b"someone else's" and sorted(outside.rglob("*")) == [
        outside / "1", victim]


@pytest.mark.parametrize("plant", ["fifo", "link to /dev/zero"])
def test_a_calibration_folder_with_a_fifo_or_device_is_refused_not_read(
        tiny_inputs, tmp_path, plant):
    """H3/H4: a FIFO blocked the calibration reader; a link to /dev/zero never ended."""
    import os

    folder = tmp_path / "calib"
    shutil.copytree(tiny_inputs / "frames", folder)
    if plant == "fifo":
        os.mkfifo(folder / "x.png")
    else:
        (folder / "x.png").symlink_to("/dev/zero")
    line = _error(["export", "onnx", str(tiny_inputs / "ck.pt"), "-o", str(tmp_path / "m.onnx"),
                   "--size", "32x64", "--precision", "int8", "--calib", str(folder)])
    assert "x.png is not a regular file" in line, line


def test_a_loss_weight_past_a_million_is_refused_at_the_option():
    """T1: 1e308 was taken, then overflowed to a TypeError deep in the supernet."""
    line = _error(["search", "--data", "synthetic:4", "--loss-weights", "1e308,30,15,15,1"])
    assert "--loss-weights" in line and "<= 1e+06" in line


@pytest.mark.parametrize("edit, words", [
    ({"epochs": float("nan")}, "--epochs = nan"),
    ({"batch": -5}, "--batch = -5"),
    ({"lr": float("inf")}, "--lr = inf"),
    ({"size": [0, 64]}, "--size = [0, 64]"),
    ("epoch", "epoch 1000000000, not 0 to"),
])
def test_an_edited_run_state_is_refused_on_resume(tiny_inputs, tmp_path, edit, words):
    """W4: a search.pt / last.pt edited to epochs NaN, batch -5, lr inf or epoch 10**9 was
    resumed as if it were the run's."""
    out = tmp_path / "run"
    base = ["train", "--genotype", str(tiny_inputs / "g.json"), "--data", "synthetic:4",
            "--size", "32x64", "--batch", "2", "--workers", "0", "--out", str(out)]
    assert runner.invoke(main, [*base, "--epochs", "1"]).exit_code == 0
    state = torch.load(out / "last.pt", weights_only=True)
    if edit == "epoch":
        state["epoch"] = 10 ** 9
    else:
        state["config"].update(edit)
    torch.save(state, out / "last.pt")
    line = _error(["train", "--data", "synthetic:4", "--genotype", str(tiny_inputs / "g.json"),
                   "--out", str(out), "--resume", "--workers", "0"])
    assert words in line and "edited or damaged" in line, line


def test_closing_a_segmenter_while_other_threads_infer_is_clean(tiny_inputs):
    """U1: close() racing calls on other threads raised raw AttributeError / TypeError; now
    close waits for the running calls, and later calls get the one-line refusal."""
    import threading

    from ssr_deploy.errors import UsageError

    seg = Segmenter.load(tiny_inputs / "m.onnx")
    frame = np.zeros((32, 64, 3), np.uint8)
    outcomes, start = [], threading.Event()

    def worker():
        start.wait()
        for _ in range(200):
            try:
                seg(frame)
                outcomes.append("ok")
            except UsageError as e:
                outcomes.append("closed" if "was closed" in str(e) else repr(e))
            except Exception as e:  # noqa: BLE001 - what must not happen
                outcomes.append(repr(e))
                return

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    start.set()
    while "ok" not in outcomes:
        pass
    seg.close()
    for t in threads:
        t.join()
    assert set(outcomes) == {"ok", "closed"}, set(outcomes)

