"""Hostile inputs and faults against every command, classified: clean, traceback, wrong
result (accepted when it should be refused, or a check failed), unclear error, data lost,
hang / out of memory. Writes tools/results/hostile.json. A test harness run by hand (each
run's classes are then pinned by tests), not a benchmark.

    python tools/hostile.py                    # this checkout
    PYTHONPATH=/path/to/old python tools/hostile.py --out old.json   # another version

Each case runs in-process through click's test runner, under a memory cap (a huge
allocation raises MemoryError instead of waking the OOM killer) and a time limit. The full
disk is a 320 MB tmpfs filled to its last page (root with mount), read-only is a tmpfs
remounted read-only. HOSTILE_LIMIT=S sets every case's time limit (default 90 s, train and
search 300 s: a run that should have been refused trains on; use 75 s for an old version).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from click.testing import CliRunner


@dataclasses.dataclass
class Case:
    cls: str                       # failure class (issue 13's list)
    name: str
    args: list[str]
    expect: str = "error"          # "error": refused in one line; "ok": exit 0
    words: tuple[str, ...] = ()    # an error must contain one of these (else: unclear)
    keep: tuple[str, ...] = ()     # files (relative to the work folder) that must not change
    check: object = None           # callable(work, output) -> bool, for "ok" cases
    disk: str = ""                 # "full" | "ro": run with the work's disk full / read-only
    before: object = None          # callable(work, run): prepare state
    prefill: bool = True           # full disk: the command's good outputs exist beforehand


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def _snapshot(paths: list[Path]) -> dict[str, str | None]:
    out = {}
    for p in paths:
        if p.is_dir():
            out.update(_snapshot(sorted(p.rglob("*"))))
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[str(p)] = None
    return out


def _mount(where: Path, size_mb: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                         str(where)], capture_output=True).returncode == 0
    return ok


@contextlib.contextmanager
def _full(folder: Path):
    filler = folder / ".filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        left = free - 4096
        while left > 0:
            left -= f.write(b"\0" * min(1 << 20, left))
    try:
        yield
    finally:
        filler.unlink()


def run_case(case: Case, work: Path, runner, main) -> dict:
    """One case, from pristine inputs (an earlier case may have destroyed them)."""
    shutil.rmtree(work / "in")
    shutil.copytree(work / "in.pristine", work / "in")
    protected = [work / k for k in case.keep]
    if case.before:
        try:
            case.before(work, lambda args: runner.invoke(main, args))
        except Exception as e:  # noqa: BLE001  the version under test could not set it up
            return {"outcome": "traceback", "detail": f"setting up: {str(e)[:160]}"}
    before = _snapshot(protected)
    args = [a.replace("{W}", str(work)) for a in case.args]
    signal.signal(signal.SIGALRM, _alarm)
    limit = int(os.environ.get("HOSTILE_LIMIT", "0")) or (
        300 if args and args[0] in ("train", "search", "demo") else 90)
    signal.alarm(limit)
    try:
        with (_full(work / "disk") if case.disk == "full" else contextlib.nullcontext()):
            result = runner.invoke(main, args, catch_exceptions=True)
    except Timeout:
        return {"outcome": "hang or out of memory", "detail": f"over {limit} s"}
    finally:
        signal.alarm(0)
    exc = result.exception
    stderr = result.stderr.strip()
    lines = stderr.splitlines()
    if isinstance(exc, Timeout):
        return {"outcome": "hang or out of memory", "detail": f"over {limit} s"}
    if isinstance(exc, MemoryError):
        return {"outcome": "hang or out of memory", "detail": "MemoryError"}
    lost = _snapshot(protected) != before
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return {"outcome": "data lost" if lost else "traceback", "detail": tb[-200:]}
    if lost:
        return {"outcome": "data lost", "detail": stderr[-200:]}
    if case.expect == "ok":
        if result.exit_code != 0:
            return {"outcome": "wrong result", "detail": stderr[-200:]}
        if case.check and not case.check(work, result.output):
            return {"outcome": "wrong result", "detail": "check failed: " + result.output[-160:]}
        return {"outcome": "clean"}
    if result.exit_code == 0:
        return {"outcome": "wrong result", "detail": "accepted: " + result.output[-160:]}
    one = [line for line in lines if line.lower().startswith(("error:", "error: "))]
    if len(one) != 1 or "Traceback" in result.output:
        return {"outcome": "unclear error", "detail": stderr[-200:]}
    if case.words and not any(w.lower() in stderr.lower() for w in case.words):
        return {"outcome": "unclear error", "detail": one[0][:200]}
    return {"outcome": "clean", "detail": one[0][:200]}


# ---- the cases ---------------------------------------------------------------------------

def build_inputs(root: Path) -> None:
    """A tiny checkpoint, its ONNX (batch 1) and a batch-capped one, a genotype, a clip,
    frames, a folder dataset."""
    from ssr_deploy.data import classes
    from ssr_deploy.data.synthetic import render_video, street_scene
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.genotype import Genotype, Head, Layer, Stage
    from ssr_deploy.model.checkpoint import save_checkpoint
    from ssr_deploy.model.net import build_model
    from ssr_deploy.spec import RUNTIME_IO

    g = Genotype(name="tiny", stem_channels=8,
                 stages=(Stage(4, 16, 0.0, (Layer("fr", 1, 1.0, 16, 8, 16),)),),
                 head=Head((1, 2), 8, 8, 8, 8, 0.0), classes=classes.NAMES,
                 palette=classes.PALETTE)
    g.save(root / "g.json")
    net = build_model(g).eval()
    save_checkpoint(root / "ck.pt", net, g)
    export_onnx(net, root / "m.onnx", size=(32, 64), simplify=False,
                io=RUNTIME_IO)
    for name, cap in (("cap4.onnx", 4), ("b1024.onnx", 1024)):
        export_onnx(net, root / name, size=(32, 64), simplify=False, dynamic_batch=True,
                    max_batch=cap, io=RUNTIME_IO)
    render_video(root / "clip.avi", 20, (64, 128))
    (root / "frames").mkdir()
    for k in range(3):
        cv2.imwrite(str(root / "frames" / f"{k}.png"), street_scene(k, 64, 128)[0])
    ds = root / "ds"
    for sub in ("images", "masks"):
        (ds / sub).mkdir(parents=True)
    for i in range(10):
        cv2.imwrite(str(ds / "images" / f"{i:02d}.png"), street_scene(i, 32, 64)[0])
        cv2.imwrite(str(ds / "masks" / f"{i:02d}.png"), np.full((32, 64), i % 3, np.uint8))
    (ds / "classes.json").write_text(json.dumps({"names": ["road", "car", "tree"]}))


def cases() -> list[Case]:
    I = "{W}/in"  # noqa: E741  inputs
    D = "{W}/disk"  # outputs (a tmpfs that can fill up)
    ck, m, cap, clip, g = f"{I}/ck.pt", f"{I}/m.onnx", f"{I}/cap4.onnx", f"{I}/clip.avi", \
        f"{I}/g.json"
    tiny_train = ["train", "--genotype", g, "--data", "synthetic:4", "--size", "32x64",
                  "--batch", "2", "--workers", "0", "--epochs", "1"]
    writers = {
        "data synth": ["data", "synth", "--out", f"{D}/synth", "--n", "3", "--size", "32x64"],
        "data synth --video": ["data", "synth", "--out", f"{D}/s2", "--n", "1", "--size",
                               "64x128", "--video", f"{D}/drive.avi", "--frames", "20"],
        "export onnx": ["export", "onnx", ck, "-o", f"{D}/m.onnx", "--size", "32x64",
                        "--no-simplify"],
        "export onnx fp16": ["export", "onnx", ck, "-o", f"{D}/m.fp16.onnx", "--size",
                             "32x64", "--no-simplify", "--precision", "fp16",
                             "--min-agreement", "0.9"],
        "export triton": ["export", "triton", m, "--repo", f"{D}/repo", "--max-batch", "0",
                          "--cpu"],
        "bench --json --plot": ["bench", m, "--iters", "2", "--warmup", "0", "--json",
                                f"{D}/b.json", "--plot", f"{D}/b.png"],
        "profile --trace": ["profile", m, "--iters", "1", "--trace", f"{D}/t.json"],
        "video to .avi": ["video", clip, "--model", m, "-o", f"{D}/seg.avi"],
        "video to folder": ["video", f"{I}/frames", "--model", m, "-o", f"{D}/pngs"],
        "eval --save-preds": ["eval", "--weights", ck, "--data", "synthetic:2", "--size",
                              "32x64", "--save-preds", f"{D}/preds"],
        "train": [*tiny_train, "--out", f"{D}/run"],
        "search": ["search", "--data", "synthetic:8", "--size", "64x128", "--batch", "2",
                   "--epochs", "1", "--out", f"{D}/search"],
    }
    out: list[Case] = []
    full = ("disk is full", "no space", "larger than", "file too large", "write elsewhere")
    for name, args in writers.items():  # folders are new: a used one is refused, not filled
        out.append(Case("full disk", f"{name} onto a full disk", args, words=full,
                        keep=("disk",), disk="full",
                        prefill=name not in ("video to folder", "eval --save-preds", "train",
                                             "search", "data synth")))
    ro = ("read-only", "permission")
    for name, args in writers.items():
        # the fp16 export would put its fp32 graph at ro/m.onnx, a file of the user's there:
        # refused before the read-only folder is met
        why = (*ro, "is not the fp32 graph") if name == "export onnx fp16" else ro
        out.append(Case("read-only folder", f"{name} into a read-only folder",
                        [a.replace("{W}/disk", "{W}/ro") for a in args], words=why,
                        keep=("ro",)))
    # outputs that would destroy inputs
    same = ("input", "same", "overwrite")
    for name, args in [
        ("export onnx -o the checkpoint", ["export", "onnx", ck, "-o", ck]),
        ("export onnx -o the genotype's name", ["export", "onnx", g, "--weights", ck, "-o",
                                                f"{I}/g"]),
        ("video -o the source", ["video", clip, "--model", m, "-o", clip]),
        ("video -o the model", ["video", clip, "--model", m, "-o", f"{I}/m.avi"]),
        ("bench --json the model", ["bench", m, "--json", m]),
        ("bench --json the model's sidecar", ["bench", m, "--json", f"{m}.json"]),
        ("bench --plot the model", ["bench", m, "--plot", m]),
        ("profile --trace the model", ["profile", m, "--trace", m]),
        ("profile --trace the sidecar", ["profile", m, "--trace", f"{m}.json"]),
        ("eval --save-preds the data folder", ["eval", "--weights", ck, "--data",
                                               f"folder:{I}/ds", "--save-preds", f"{I}/ds"]),
        ("eval --save-preds the inputs' parent", ["eval", "--weights", ck, "--data",
                                                  f"folder:{I}/ds", "--save-preds", I]),
        ("export engine -o the onnx", ["export", "engine", m, "-o", m]),
        ("export onnx fp16 whose fp32 is the ckpt", ["export", "onnx", ck, "-o",
                                                     f"{I}/ck.fp16.pt", "--precision",
                                                     "fp16"]),
    ]:
        expect = "error"
        if name == "video -o the model":
            expect, words = "ok", ()
        else:
            words = same
        out.append(Case("output destroys input", name, args, expect=expect, words=words,
                        keep=("in",) if expect == "error" else ()))
    # OSError and paths of the wrong kind
    for name, args, words in [
        ("export onnx into a file-as-folder", ["export", "onnx", ck, "-o",
                                               f"{I}/ck.pt/m.onnx"], ("is a file",)),
        ("export onnx into a missing folder", ["export", "onnx", ck, "-o",
                                               "{W}/nope/m.onnx"], ("does not exist",)),
        ("export onnx -o a folder", ["export", "onnx", ck, "-o", I], ("folder", "directory")),
        ("data synth --out under a file", ["data", "synth", "--out", f"{I}/ck.pt/d"],
         ("parent", "is a file")),
        ("data synth --out a file", ["data", "synth", "--out", ck], ("file",)),
        ("bench --json into a missing folder", ["bench", m, "--json", "{W}/nope/b.json"],
         ("does not exist",)),
        ("bench a folder", ["bench", I], ("is a folder",)),
        ("bench a missing model", ["bench", "{W}/none.onnx"], ("does not exist",)),
        ("video a folder as model", ["video", clip, "--model", I, "-o", f"{D}/v.avi"],
         ("is a folder",)),
        ("video a device as source", ["video", "/dev/null", "--model", m, "-o",
                                      f"{D}/v.avi"], ("not a regular file", "cannot read")),
        ("eval a folder as weights", ["eval", "--weights", I, "--data", "synthetic:1"],
         ("is a folder",)),
        ("info a folder as genotype", ["info", I], ("folder",)),
        ("export triton a folder", ["export", "triton", I, "--repo", f"{D}/r"],
         ("is a folder",)),
        ("train --out a file", [*tiny_train, "--out", ck], ("file",)),
        ("search --space a folder", ["search", "--data", "synthetic:8", "--out", f"{D}/s",
                                     "--space", I], ("folder", "directory")),
        ("export onnx --calib a file", ["export", "onnx", ck, "-o", f"{D}/q.onnx",
                                        "--precision", "int8", "--calib", ck],
         ("is a file",)),
    ]:
        out.append(Case("OSError / wrong kind of path", name, args, words=words))
    # resource bounds
    for name, args, words in [
        ("bench --frame-size 20000x20000", ["bench", m, "--frame-size", "20000x20000"],
         ("8192",)),
        ("bench --batch 100000", ["bench", m, "--batch", "100000"], ("1024", "batch")),
        ("bench --batch 1000 of 8192x8192 frames", ["bench", f"{I}/b1024.onnx", "--batch",
                                                    "1000", "--frame-size", "8192x8192"],
         ("memory",)),
        ("train --batch 100000", [*tiny_train, "--batch", "100000", "--size", "1024x2048",
                                  "--out", f"{D}/big"], ("memory",)),
        ("search --batch 5000 at 1024x2048", ["search", "--data", "synthetic:8", "--size",
                                              "1024x2048", "--batch", "5000", "--out",
                                              f"{D}/bigs"], ("memory", "batch")),
        ("info --size 100000x100000", ["info", "ssr-cityscapes", "--size", "100000x100000"],
         ("8192",)),
        ("info --classes 10^9", ["info", "ssr-cityscapes", "--classes", "1000000000"],
         ("65536",)),
        ("a genotype with a 10^7-channel width", ["info", "{W}/wide.json"], ("4096",)),
        ("data synth --n 10^9", ["data", "synth", "--out", f"{D}/huge", "--n",
                                 "1000000000"], ("1000000",)),
    ]:
        before = None
        if "10^7" in name:
            def before(work, run):
                d = json.loads((work / "in" / "g.json").read_text())
                d["stages"][0]["layers"][0]["mid"] = 10**7
                (work / "wide.json").write_text(json.dumps(d))
        out.append(Case("resource bounds", name, args, words=words, before=before,
                        expect="error"))

    # --resume
    def finished_run(work, run, lr="0.001"):
        if not (work / "runs" / "r" / "last.pt").exists():
            (work / "runs").mkdir(exist_ok=True)
            run([*[a.replace("{W}", str(work)) for a in tiny_train], "--lr", lr,
                 "--out", str(work / "runs" / "r")])

    run_dir = "{W}/runs/r"
    out += [
        Case("--resume settings", "train --resume with another --lr",
             [*tiny_train, "--lr", "0.01", "--out", run_dir, "--resume"],
             words=("--lr",), before=finished_run, keep=("runs",)),
        Case("--resume settings", "train --resume with another --size",
             [*tiny_train, "--size", "64x128", "--out", run_dir, "--resume"],
             words=("--size",), before=finished_run, keep=("runs",)),
        Case("--resume settings", "train --resume with another --batch",
             [*tiny_train, "--batch", "4", "--out", run_dir, "--resume"],
             words=("--batch",), before=finished_run, keep=("runs",)),
        Case("--resume settings", "train --resume with another --preset",
             [*tiny_train, "--preset", "modern", "--out", run_dir, "--resume"],
             words=("--preset",), before=finished_run, keep=("runs",)),
        Case("--resume settings", "train --resume with other --data",
             ["train", "--genotype", g, "--data", "synthetic:6", "--size", "32x64",
              "--batch", "2", "--workers", "0", "--epochs", "1", "--out", run_dir,
              "--resume"], words=("--data",), before=finished_run, keep=("runs",)),
        Case("--resume settings", "train --resume extending a finished run trains at lr > 0",
             ["train", "--genotype", g, "--data", "synthetic:4", "--workers", "0",
              "--epochs", "2", "--out", "{W}/runs/r2", "--resume", "--override"],
             expect="ok", before=lambda w, r: finished_run(w, r) or shutil.copytree(
                 w / "runs" / "r", w / "runs" / "r2", dirs_exist_ok=True),
             check=lambda w, o: json.loads((w / "runs/r2/log.jsonl").read_text().splitlines()[-1]
                                        )["lr"] > 0),
        Case("--resume settings", "search --resume with another --tau",
             ["search", "--data", "synthetic:8", "--size", "64x128", "--batch", "2",
              "--epochs", "2", "--tau", "0.3", "--out", "{W}/runs/s", "--resume"],
             words=("--tau",), keep=("runs",),
             before=lambda w, r: (w / "runs/s/search.pt").exists() or r(
                 ["search", "--data", "synthetic:8", "--size", "64x128", "--batch", "2",
                  "--epochs", "1", "--out", str(w / "runs/s")])),
    ]
    # arguments
    req_train = ["--genotype", "ssr-cityscapes", "--data", "synthetic:4", "--out", f"{D}/t"]
    req_search = ["--data", "synthetic:4", "--out", f"{D}/s"]
    for name, args, words in [
        ("train --lr nan", ["train", "--lr", "nan", *req_train], ("finite",)),
        ("train --lr -1", ["train", "--lr", "-1", *req_train], ("> 0",)),
        ("train --lr 0", ["train", "--lr", "0", *req_train], ("> 0",)),
        ("train --lr inf", ["train", "--lr", "inf", *req_train], ("finite",)),
        ("train --weight-decay -1", ["train", "--weight-decay", "-1", *req_train], (">= 0",)),
        ("train --weight-decay nan", ["train", "--weight-decay", "nan", *req_train],
         ("finite",)),
        ("train --epochs 0", ["train", "--epochs", "0", *req_train], ("1",)),
        ("train --batch 0", ["train", "--batch", "0", *req_train], ("1",)),
        ("train --size 0x10", ["train", "--size", "0x10", *req_train], ("size",)),
        ("train --size 33x65", ["train", "--size", "33x65", *req_train], ("multiple",)),
        ("train --data synthetic:-5", ["train", "--genotype", "ssr-cityscapes", "--data",
                                       "synthetic:-5", "--out", f"{D}/t"], ("whole number",)),
        ("train --data synthetic:abc", ["train", "--genotype", "ssr-cityscapes", "--data",
                                        "synthetic:abc", "--out", f"{D}/t"],
         ("whole number",)),
        ("train --data mnist:x", ["train", "--genotype", "ssr-cityscapes", "--data",
                                  "mnist:x", "--out", f"{D}/t"], ("not known",)),
        ("train --device cuda (none)", ["train", "--device", "cuda", *req_train], ("cuda",)),
        ("train without genotype", ["train", "--data", "synthetic:4", "--out", f"{D}/t"],
         ("--genotype",)),
        ("train --weights and --init-from-search", ["train", "--weights", ck,
                                                    "--init-from-search", I, *req_train],
         ("not both", "init-from-search")),
        ("search --tau 5", ["search", "--tau", "5", *req_search], ("< 1",)),
        ("search --tau -0.1", ["search", "--tau", "-0.1", *req_search], ("> 0",)),
        ("search --tau nan", ["search", "--tau", "nan", *req_search], ("finite",)),
        ("search --target-ratio 0", ["search", "--target-ratio", "0", *req_search], ("> 0",)),
        ("search --target-ratio 3", ["search", "--target-ratio", "3", *req_search], ("<= 1",)),
        ("search --target-gmacs -1", ["search", "--target-gmacs", "-1", *req_search],
         ("> 0",)),
        ("search --arch-lr nan", ["search", "--arch-lr", "nan", *req_search], ("finite",)),
        ("search --loss-weights 1,2", ["search", "--loss-weights", "1,2", *req_search],
         ("five",)),
        ("search --loss-weights with nan", ["search", "--loss-weights", "1,2,3,4,nan",
                                            *req_search], ("five finite",)),
        ("search --loss-weights negative", ["search", "--loss-weights", "1,-2,3,4,5",
                                            *req_search], (">= 0",)),
        ("search --size 64x120", ["search", "--size", "64x120", *req_search], ("multiples",)),
        ("export onnx --opset 99", ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size",
                                    "32x64", "--opset", "99"], ("opset",)),
        ("export onnx --opset 9", ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--opset", "9"],
         ("17",)),
        ("export onnx --max-batch without --dynamic-batch",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size", "32x64", "--max-batch", "4"],
         ("--dynamic-batch",)),
        ("export onnx --min-size without --dynamic-size",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size", "32x64", "--min-size",
          "32x64"], ("--dynamic-size",)),
        ("export onnx --max-size without --dynamic-size",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size", "32x64", "--max-size",
          "64x128"], ("--dynamic-size",)),
        ("export onnx --label-dtype with logits",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size", "32x64", "--label-dtype",
          "int32"], ("--output labels",)),
        ("export onnx --calib without --precision",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--calib", f"{I}/frames"],
         ("--precision",)),
        ("export onnx --batch 8 --max-batch 4",
         ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size", "32x64", "--batch", "8",
          "--dynamic-batch", "--max-batch", "4"], ("--max-batch",)),
        ("export onnx --size 30x60", ["export", "onnx", ck, "-o", f"{D}/o.onnx", "--size",
                                      "30x60"], ("multiple",)),
        ("export onnx a genotype without weights", ["export", "onnx", g, "-o",
                                                    f"{D}/o.onnx"], ("--random-init",)),
        ("export triton --instances 0", ["export", "triton", m, "--repo", f"{D}/r",
                                         "--instances", "0"], ("1",)),
        ("export triton --max-batch 8 on batch-1 model", ["export", "triton", m, "--repo",
                                                          f"{D}/r", "--max-batch", "8"],
         ("--max-batch",)),
        ("video --alpha 5", ["video", clip, "--model", m, "-o", f"{D}/v.avi", "--alpha", "5"],
         ("0<=x<=1", "range", "1")),
        ("video -o x.txt", ["video", clip, "--model", m, "-o", f"{D}/v.txt"], ("video file",)),
        ("video --max-frames 0", ["video", clip, "--model", m, "-o", f"{D}/v.avi",
                                  "--max-frames", "0"], ("1",)),
        ("bench --batch 1,x", ["bench", m, "--batch", "1,x"], ("batch sizes",)),
        ("bench --batch 0", ["bench", m, "--batch", "0"], ("1",)),
        ("bench --backend nope", ["bench", m, "--backend", "nope"], ("backend",)),
        ("bench --device tpu", ["bench", m, "--device", "tpu"], ("device",)),
        ("profile --iters 0", ["profile", m, "--iters", "0"], ("1",)),
        ("info no genotype", ["info"], ("GENOTYPE",)),
        ("info unknown zoo name", ["info", "ssr-nope"], ("zoo",)),
        ("data synth --n 0", ["data", "synth", "--out", f"{D}/z", "--n", "0"], ("1",)),
        ("data synth --size 1x1", ["data", "synth", "--out", f"{D}/z", "--size", "1x1",
                                   "--n", "1"], ()),
        ("eval --split nope on folder data", ["eval", "--weights", ck, "--data",
                                              f"folder:{I}/ds", "--split", "nope"],
         ("split", "train and val")),
    ]:
        expect = "ok" if name == "data synth --size 1x1" else "error"
        out.append(Case("arguments", name, args, words=words, expect=expect))
    # more arguments, every command
    o = f"{D}/o.onnx"
    ex = ["export", "onnx", ck, "-o", o, "--size", "32x64"]
    for name, args, words in [
        ("info --size abc", ["info", "ssr-cityscapes", "--size", "abc"], ("HEIGHTxWIDTH",)),
        ("info --size 512x", ["info", "ssr-cityscapes", "--size", "512x"], ("HEIGHTxWIDTH",)),
        ("info --size -1x5", ["info", "ssr-cityscapes", "--size", "-1x5"], ("HEIGHTxWIDTH",)),
        ("info --size 8x8x3", ["info", "ssr-cityscapes", "--size", "8x8x3"], ("HEIGHTxWIDTH",)),
        ("info --classes 0", ["info", "ssr-cityscapes", "--classes", "0"], ("1",)),
        ("info --size 60x120 (no fit)", ["info", "ssr-cityscapes", "--size", "60x120"],
         ("multiples",)),
        ("bench --iters 0", ["bench", m, "--iters", "0"], ("1",)),
        ("bench --warmup -1", ["bench", m, "--warmup", "-1"], ("0",)),
        ("bench --frame-size 0x0", ["bench", m, "--frame-size", "0x0"], ("HEIGHTxWIDTH",)),
        ("bench --batch ''", ["bench", m, "--batch", ""], ("batch",)),
        ("bench --batch ,", ["bench", m, "--batch", ","], ("batch",)),
        ("bench --compare nope", ["bench", m, "--compare", "nope"], ("nope",)),
        ("bench --compare torch:tpu", ["bench", m, "--compare", "onnxruntime:tpu"],
         ("tpu",)),
        ("bench --json into a folder", ["bench", m, "--json", I], ("directory", "folder")),
        ("bench an .engine without TensorRT", ["bench", "{W}/x.engine"], ("does not exist",)),
        ("bench a .txt model", ["bench", "{W}/notes.txt"], ("backend", "suffix", ".txt")),
        ("video --alpha nan", ["video", clip, "--model", m, "-o", f"{D}/v.avi", "--alpha",
                               "nan"], ("range", "0<=x<=1", "finite")),
        ("video --alpha -0.1", ["video", clip, "--model", m, "-o", f"{D}/v.avi", "--alpha",
                                "-0.1"], ("0<=x<=1", ">= 0")),
        ("video --max-frames -1", ["video", clip, "--model", m, "-o", f"{D}/v.avi",
                                   "--max-frames", "-1"], ("1",)),
        ("video from an absent camera", ["video", "7", "--model", m, "-o", f"{D}/v.avi"],
         ("camera 7",)),
        ("video --backend nope", ["video", clip, "--model", m, "-o", f"{D}/v.avi",
                                  "--backend", "nope"], ("nope",)),
        ("video --device cuda without a GPU", ["video", clip, "--model", m, "-o",
                                               f"{D}/v.avi", "--device", "cuda"],
         ("cuda", "CUDA")),
        ("video --show without a display", ["video", clip, "--model", m, "-o", f"{D}/v.avi",
                                            "--show"], ("display",)),
        ("video --size abc", ["video", clip, "--model", m, "-o", f"{D}/v.avi", "--size",
                              "abc"], ("HEIGHTxWIDTH",)),
        ("profile --top 0", ["profile", m, "--top", "0"], ("1",)),
        ("profile --trace a folder", ["profile", m, "--trace", I], ("directory", "folder")),
        ("profile --backend nope", ["profile", m, "--backend", "nope"], ("nope",)),
        ("export check without --against", ["export", "check", m], ("--against",)),
        ("export check --against a missing file", ["export", "check", m, "--against",
                                                   "{W}/none.onnx"], ("does not exist",)),
        ("export check -n 0", ["export", "check", m, "--against", m, "-n", "0"], ("1",)),
        ("export check --data a missing folder", ["export", "check", m, "--against", m,
                                                  "--data", "{W}/none"], ("does not exist",)),
        ("export check --data an empty folder", ["export", "check", m, "--against", m,
                                                 "--data", "{W}/emptydir"], ("no images",)),
        ("export triton --name ''", ["export", "triton", m, "--repo", f"{D}/r", "--name", ""],
         ("name",)),
        ("export triton --name 'a b'", ["export", "triton", m, "--repo", f"{D}/r", "--name",
                                        "a b"], ("name",)),
        ("export triton --max-batch -1", ["export", "triton", m, "--repo", f"{D}/r",
                                          "--max-batch", "-1"], ("0",)),
        ("export triton a checkpoint", ["export", "triton", ck, "--repo", f"{D}/r"],
         ("sidecar", ".onnx")),
        ("export triton an ONNX without sidecar", ["export", "triton", "{W}/nosidecar.onnx",
                                                   "--repo", f"{D}/r"], ("sidecar",)),
        ("export engine --workspace nan", ["export", "engine", m, "-o", f"{D}/e.engine",
                                           "--workspace", "nan"], ("finite",)),
        ("export engine --opt-level 9", ["export", "engine", m, "-o", f"{D}/e.engine",
                                         "--opt-level", "9"], ("0<=x<=5",)),
        # (with TensorRT-RTX installed the build would run: its fp16 graph's name is taken
        # by another export's file, which is refused first)
        ("export engine without TensorRT", ["export", "engine", m, "-o", f"{D}/e.engine"],
         ("TensorRT", "tensorrt", "is not the fp16 graph")),
        ("export onnx --batch 0", [*ex, "--batch", "0"], ("1",)),
        ("export onnx --size abc", ["export", "onnx", ck, "-o", o, "--size", "abc"],
         ("HEIGHTxWIDTH",)),
        ("export onnx --input nope", [*ex, "--input", "nope"], ("nope",)),
        ("export onnx --output nope", [*ex, "--output", "nope"], ("nope",)),
        ("export onnx --calib-n 0", [*ex, "--precision", "int8", "--calib-n", "0"], ("1",)),
        ("export onnx --calib-method nope", [*ex, "--precision", "int8", "--calib-method",
                                             "nope"], ("nope",)),
        ("export onnx --int8-target nope", [*ex, "--int8-target", "nope"], ("nope",)),
        ("export onnx --min-agreement 0", [*ex, "--precision", "fp16", "--min-agreement",
                                           "0"], ("0<x<=1",)),
        ("export onnx --min-agreement 1.5", [*ex, "--precision", "fp16", "--min-agreement",
                                             "1.5"], ("0<x<=1",)),
        ("export onnx --fp32-layers without --precision", [*ex, "--fp32-layers", "head"],
         ("--precision",)),
        ("export onnx --data without --precision", [*ex, "--data", f"{I}/frames"],
         ("--precision",)),
        ("export onnx int8 without --calib nor cache", [*ex, "--precision", "int8",
                                                        "--calib-cache", "{W}/emptydir"],
         ("--calib",)),
        ("export onnx --weights a missing file", ["export", "onnx", g, "--weights",
                                                  "{W}/none.pt", "-o", o], ("does not exist",)),
        ("export onnx --random-init with a checkpoint", [*ex, "--random-init"],
         ("checkpoint",)),
        ("export onnx --weights of another genotype", ["export", "onnx", "ssr-cityscapes",
                                                       "--weights", ck, "-o", o],
         ("genotype",)),
        ("train --preset nope", ["train", "--preset", "nope", *req_train], ("nope",)),
        ("train --class-weights nope", ["train", "--class-weights", "nope", *req_train],
         ("nope",)),
        ("train --workers -1", ["train", "--workers", "-1", *req_train], ("0",)),
        ("train --seed abc", ["train", "--seed", "abc", *req_train], ("integer",)),
        ("train --init-from-search a missing folder", ["train", "--init-from-search",
                                                       "{W}/none", "--data", "synthetic:4",
                                                       "--out", f"{D}/t"], ("genotype.json",)),
        ("train --weights a missing file", ["train", "--weights", "{W}/none.pt",
                                            *req_train], ("does not exist",)),
        ("train --resume with nothing to resume", ["train", "--resume", *req_train],
         ("does not exist",)),
        ("train --batch 64 on 4 images", [*tiny_train, "--batch", "64", "--out",
                                          f"{D}/b64"], ("make no batch",)),
        ("search --epochs 0", ["search", "--epochs", "0", *req_search], ("1",)),
        ("search --warmup -1", ["search", "--warmup", "-1", *req_search], ("0",)),
        ("search --shrink-every -1", ["search", "--shrink-every", "-1", *req_search], ("0",)),
        ("search --normalisation nope", ["search", "--normalisation", "nope", *req_search],
         ("nope",)),
        ("search --space a missing file", ["search", "--space", "{W}/none.json",
                                           *req_search], ("does not exist", "none.json")),
        ("search --space broken JSON", ["search", "--space", "{W}/broken.json", *req_search],
         ("JSON", "json")),
        ("search --target-gmacs beyond the space", ["search", "--size", "64x128",
                                                    "--target-gmacs", "1000", *req_search],
         ("outside what this space can reach",)),
        ("search on 1 image", ["search", "--data", "synthetic:1", "--size", "64x128",
                               "--out", f"{D}/s1"], ("batch",)),
        ("search --resume with nothing to resume", ["search", "--resume", *req_search],
         ("does not exist",)),
        ("eval --data a missing folder", ["eval", "--weights", ck, "--data",
                                          "cityscapes:{W}/none"], ("leftImg8bit",)),
        ("eval --weights a missing file", ["eval", "--weights", "{W}/none.pt", "--data",
                                           "synthetic:1"], ("does not exist",)),
        ("eval --size abc", ["eval", "--weights", ck, "--data", "synthetic:1", "--size",
                             "abc"], ("HEIGHTxWIDTH",)),
        ("data synth --size 20000x20000", ["data", "synth", "--out", f"{D}/z", "--size",
                                           "20000x20000"], ("8192",)),
        ("data synth --frames 0", ["data", "synth", "--out", f"{D}/z", "--video",
                                   f"{D}/z.avi", "--frames", "0"], ("1",)),
        ("data synth --video x.txt", ["data", "synth", "--out", f"{D}/z3", "--n", "1",
                                      "--size", "32x64", "--video", f"{D}/z.txt"],
         ("video file",)),
        ("data synth --seed abc", ["data", "synth", "--out", f"{D}/z", "--seed", "abc"],
         ("integer",)),
        ("demo --device cuda without a GPU", ["demo", "--out", f"{D}/demo", "--device",
                                              "cuda"], ("cuda", "CUDA")),
        ("demo --out a file", ["demo", "--out", ck], ("file", "directory")),
        ("an unknown command", ["nope"], ("nope",)),
        ("an unknown option", ["info", "--nope"], ("--nope",)),
    ]:
        out.append(Case("arguments", name, args, words=words, before=_odd_files))
    # wrong results
    out += [
        Case("wrong results", "all-NaN weights do not evaluate to an mIoU",
             ["eval", "--weights", "{W}/nan.pt", "--data", "synthetic:1", "--size", "32x64"],
             words=("NaN",), before=_nan_checkpoint),
        Case("wrong results", "classes.json with wrong types is refused",
             ["train", "--genotype", g, "--data", "folder:{W}/badds", "--out", f"{D}/b",
              "--size", "32x64"], words=("names",), before=_bad_classes),
        Case("wrong results", "classes.json names reach the checkpoint",
             ["train", "--genotype", g, "--data", f"folder:{I}/ds", "--out", f"{D}/named",
              "--size", "32x64", "--batch", "2", "--workers", "0", "--epochs", "1"],
             expect="ok", check=_names_in_checkpoint),
        Case("wrong results", "folder: data validates on images it does not train on",
             ["eval", "--weights", f"{D}/named/last.pt", "--data", f"folder:{I}/ds",
              "--split", "val", "--size", "32x64", "--json"], expect="ok",
             check=lambda w, o: json.loads(o)["images"] == 2),
        Case("wrong results", "train prints mIoU as the percentage it is",
             [*tiny_train, "--out", f"{D}/pct"], expect="ok",
             check=lambda w, o: "%" in o.split("val mIoU")[1][:12]),
        Case("wrong results", "export triton --name ../../x", ["export", "triton", m,
                                                                "--repo", f"{D}/r", "--name",
                                                                "../../x"], words=("name",)),
        Case("wrong results", "300 classes: labels keep their ids",
             ["export", "onnx", "{W}/c300.pt", "-o", f"{D}/c300.onnx", "--size", "32x64",
              "--output", "labels", "--label-dtype", "uint8"], words=("int32",),
             before=_classes_300),
        Case("wrong results", "--tau 0.99 cannot report an empty space as converged",
             ["search", "--data", "synthetic:8", "--size", "64x128", "--batch", "2",
              "--epochs", "1", "--tau", "0.99", "--out", f"{D}/tau"], expect="ok",
             check=lambda w, o: (w / "disk/tau/genotype.json").is_file()),
    ]
    # unclear errors
    for name, args, words in [
        ("an ONNX given as a checkpoint", ["eval", "--weights", m, "--data", "synthetic:1"],
         ("ONNX",)),
        ("random bytes given as a checkpoint", ["eval", "--weights", "{W}/rand.pt", "--data",
                                                "synthetic:1"], ("not a PyTorch",)),
        ("an empty checkpoint", ["eval", "--weights", "{W}/empty.pt", "--data",
                                 "synthetic:1"], ("empty",)),
        ("a genotype JSON as a checkpoint", ["export", "onnx", "{W}/g.pt", "-o",
                                             f"{D}/o.onnx"], ("JSON", "genotype")),
        ("a checkpoint as the model of video", ["video", clip, "--model", f"{I}/frames",
                                                "-o", f"{D}/v.avi"], ("folder",)),
        ("bench --batch 8 on a model capped at 4", ["bench", cap, "--batch", "8"],
         ("at most 4",)),
        ("an ONNX without its sidecar", ["bench", "{W}/nosidecar.onnx"], ("sidecar",)),
        ("a tampered ONNX", ["bench", "{W}/tampered.onnx"], ("changed", "sha256")),
        ("a corrupt video source", ["video", "{W}/rand.pt", "--model", m, "-o",
                                    f"{D}/v.avi"], ("cannot read video", "decode")),
        ("a folder of no images as source", ["video", "{W}/emptydir", "--model", m, "-o",
                                             f"{D}/v.avi"], ("no images",)),
        ("a genotype of broken JSON", ["info", "{W}/broken.json"], ("not JSON",)),
        ("--calib folder without images", ["export", "onnx", ck, "-o", f"{D}/q.int8.onnx",
                                           "--size", "32x64", "--precision", "int8",
                                           "--calib", "{W}/emptydir"], ("no images",)),
        ("--fp32-layers matching nothing", ["export", "onnx", ck, "-o", f"{D}/f.fp16.onnx",
                                            "--size", "32x64", "--precision", "fp16",
                                            "--fp32-layers", "nothing.*"], ("matches",
                                                                             "modules")),
        ("--init-from-search a non-search folder", ["train", "--init-from-search", I,
                                                    "--data", "synthetic:4", "--out",
                                                    f"{D}/t"], ("genotype.json",)),
        ("eval: classes differ from the data", ["eval", "--weights", ck, "--data",
                                                f"folder:{I}/ds", "--size", "32x64"],
         ("classes",)),
    ]:
        out.append(Case("unclear errors", name, args, words=words, before=_odd_files))
    # reused output folders
    for name, args in [
        ("data synth into a used folder", ["data", "synth", "--out", "{W}/used", "--n", "1",
                                           "--size", "32x64"]),
        ("video to a used PNG folder", ["video", f"{I}/frames", "--model", m, "-o",
                                        "{W}/used"]),
        ("eval --save-preds into a used folder", ["eval", "--weights", ck, "--data",
                                                  "synthetic:1", "--size", "32x64",
                                                  "--save-preds", "{W}/used"]),
        ("train into a used folder", [*tiny_train, "--out", "{W}/used"]),
        ("search into a used folder", ["search", "--data", "synthetic:8", "--size", "64x128",
                                       "--epochs", "1", "--out", "{W}/used"]),
    ]:
        out.append(Case("reused output folders", name, args,
                        words=("already holds", "overwrite"), keep=("used",),
                        before=_used_folder))
    out.append(Case("reused output folders", "export triton engine then onnx leaves no stale "
                    "model", ["export", "triton", m, "--repo", "{W}/trepo", "--max-batch", "0",
                              "--cpu"], expect="ok", before=_stale_plan,
                    check=lambda w, o: not (w / "trepo/ssrnet/1/model.plan").exists()))
    return out + third_round() + fifth_round()


# ---- the third hostile run (issue 34): security, data loss, hangs, wrong results,
# tracebacks, unclear errors; the cases a CLI run in-process can show (the server's are in
# tests/serving/) ---------------------------------------------------------------------------

def third_round() -> list[Case]:
    I, D = "{W}/in", "{W}/disk"  # noqa: E741
    ck, m, g = f"{I}/ck.pt", f"{I}/m.onnx", f"{I}/g.json"
    train = ["train", "--genotype", g, "--data", "synthetic:4", "--size", "32x64", "--batch",
             "2", "--workers", "0", "--epochs", "1"]
    bench = ["bench", f"{I}/x.onnx", "--iters", "1", "--warmup", "0"]
    out = [
        Case("r3 security", "a hard link at a run's lock is not written through",
             [*train, "--out", f"{D}/run"], words=("hard link",), keep=("disk/victim.txt",),
             before=_hard_link_lock),
        Case("r3 security", "an ONNX planted under a checkpoint's cache key is not run",
             ["bench", ck, "--backend", "onnxruntime", "--size", "32x64", "--iters", "1",
              "--warmup", "0"], expect="ok", before=_plant_cache, check=_cache_is_ck),
        Case("r3 security", "a PNG declaring 20000x20000 is not decoded",
             ["video", f"{I}/huge.png", "--model", m, "-o", f"{D}/v.mp4"],
             words=("pixels",), before=_huge_png),
        Case("r3 data lost", "demo --out a folder that is not a demo's",
             ["demo", "--out", f"{D}/mine", "--quick"], words=("not a demo",),
             keep=("disk/mine",), before=_users_folder),
        Case("r3 data lost", "export engine over a user's m.fp16.onnx",
             ["export", "engine", f"{D}/eng/m.onnx", "-o", f"{D}/eng/m.engine", "--builder",
              "tensorrt-rtx"], words=("is not the fp16 graph",),
             keep=("disk/eng/m.fp16.onnx",), before=_users_fp16),
        Case("r3 data lost", "export onnx fp16 over an unrelated x.onnx",
             ["export", "onnx", ck, "-o", f"{D}/d/x.fp16.onnx", "--size", "32x64",
              "--precision", "fp16", "--min-agreement", "0.5"],
             words=("is not the fp32 graph",), keep=("disk/d/x.onnx",), before=_users_fp32),
        Case("r3 data lost", "export onnx -o a FIFO (as /dev/null)",
             ["export", "onnx", ck, "-o", f"{D}/fifo.onnx", "--size", "32x64"],
             words=("FIFO",), keep=("disk/fifo.onnx",), before=_fifo_output),
        Case("r3 hangs", "a FIFO at a run's lock",
             [*train, "--out", f"{D}/run2"], words=("FIFO",), before=_fifo_lock),
        Case("r3 hangs", "search --space with a million layers",
             ["search", "--data", "synthetic:4", "--space", f"{I}/space.json", "--out",
              f"{D}/s3"], words=("max_layers",), before=_space({"max_layers": 10 ** 6})),
        Case("r3 wrong results", "export triton: external data named model.onnx",
             ["export", "triton", f"{I}/ext/x.onnx", "--repo", f"{D}/repo3", "--cpu",
              "--max-batch", "0"],
             words=("external data",), before=_external_named_model),
        Case("r3 wrong results", "export triton: a custom operator",
             ["export", "triton", f"{I}/x.onnx", "--repo", f"{D}/repo4", "--cpu",
              "--max-batch", "0"],
             words=("operator",), before=_custom_op),
        Case("r3 wrong results", "a latency table with NaN entries",
             ["info", "ssr-cityscapes", "--lut", f"{I}/lut.json"], words=("part",),
             before=_nan_lut),
    ]
    for name, change, words in (
            ("std [0, 0, 0]", ("input", "std", [0, 0, 0]), "input.std"),
            ("a NaN mean", ("input", "mean", [float("nan"), 0, 0]), "input.mean"),
            ("a one-element mean", ("input", "mean", [0.5]), "input.mean"),
            ("size_multiple 0", ("input", "size_multiple", 0), "size_multiple"),
            ("min_size -100", ("input", "min_size", -100), "min_size"),
            ("3 classes for 19 channels", (None, "classes", ["a", "b", "c"]), "channels")):
        out.append(Case("r3 wrong results", f"a sidecar with {name}", bench, words=(words,),
                        before=_sidecar(change, logits=name.startswith("3 classes"))))
    for name, change, words in (
            ("input.scale 'abc'", ("input", "scale", "abc"), "input.scale"),
            ("producer 5", (None, "producer", 5), "producer"),
            ("a string mean", ("input", "mean", "abc"), "input.mean"),
            ("another graph's output dtype", ("output", "dtype", "int32"), "another graph")):
        out.append(Case("r3 tracebacks", f"a sidecar with {name}", bench, words=(words,),
                        before=_sidecar(change)))
    for name, change, words in (
            ("resolutions ['abc']", {"resolutions": ["abc"]}, "resolutions"),
            ("width_choices 0", {"width_choices": 0}, "width_choices"),
            ("stages []", {"stages": []}, "stages"),
            ("channels 100000", {"channels": 100000}, "channels"),
            ("bn_eps -1", {"bn_eps": -1}, "bn_eps")):
        out.append(Case("r3 tracebacks", f"search --space with {name}",
                        ["search", "--data", "synthetic:4", "--space", f"{I}/space.json",
                         "--out", f"{D}/s4"], words=(words,), before=_space(change)))
    out += [
        Case("r3 tracebacks", "a genotype with a 5000-digit integer", ["info", f"{I}/big.json"],
             words=("not a",), before=_big_int),
        Case("r3 tracebacks", "export engine of a custom operator",
             ["export", "engine", f"{I}/x.onnx", "-o", f"{D}/x.engine", "--builder",
              "tensorrt-rtx"], words=("operator",), before=_custom_op),
        Case("r3 tracebacks", "export engine of a declared 4 TB initializer",
             ["export", "engine", f"{I}/x.onnx", "-o", f"{D}/x.engine", "--builder",
              "tensorrt-rtx"], words=("declares",), before=_huge_initializer),
        Case("r3 unclear errors", "export triton --repo whose model folder is a file",
             ["export", "triton", m, "--repo", f"{D}/repo5", "--cpu", "--max-batch", "0"],
             words=("is a file",), before=_repo_version_file),
        Case("r3 unclear errors", "serve with a tritonserver without a python backend",
             ["serve", m, "--tritonserver", "/bin/false"], words=("python backend",)),
    ]
    return out


def fifth_round() -> list[Case]:
    """The command-line cases of the fifth round; its door and API cases: hostile_door.py."""
    I, D = "{W}/in", "{W}/disk"  # noqa: E741
    ck, m, g = f"{I}/ck.pt", f"{I}/m.onnx", f"{I}/g.json"
    int8 = ["export", "onnx", ck, "-o", f"{D}/q.onnx", "--size", "32x64", "--precision",
            "int8", "--calib", f"{I}/calib"]
    return [
        Case("r5 beside the door", "D1 export triton into a linked model folder",
             ["export", "triton", m, "--repo", f"{D}/linked", "--cpu", "--max-batch", "0"],
             words=("symbolic link",), keep=("disk/outside",), before=_linked_repo),
        Case("r5 beside the door", "H3 a FIFO in --calib", int8, words=("not a regular",),
             before=_calib_with(lambda p: os.mkfifo(p))),
        Case("r5 beside the door", "H4 a link to /dev/zero in --calib", int8,
             words=("not a regular",), before=_calib_with(lambda p: p.symlink_to("/dev/zero"))),
        Case("r5 beside the door", "T1 search --loss-weights 1e308,...",
             ["search", "--data", "synthetic:4", "--loss-weights", "1e308,30,15,15,1", "--out",
              f"{D}/s5"], words=("loss-weights",)),
        Case("r5 beside the door", "W4 an edited last.pt resumed (batch -5)",
             ["train", "--data", "synthetic:4", "--genotype", g, "--out", f"{D}/edited",
              "--resume", "--workers", "0"], words=("edited or damaged",),
             before=_edited_run),
        Case("r5 beside the door", "U2 video from an http:// URL nothing serves",
             ["video", "http://127.0.0.1:1/x.mp4", "--model", m, "-o", f"{D}/u2.mp4"],
             words=("http://127.0.0.1:1/x.mp4",)),
    ]


def _linked_repo(work, run):
    outside = work / "disk" / "outside" / "1"
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "model.onnx").write_bytes(b"another user's model")
    (work / "disk" / "linked").mkdir(exist_ok=True)
    (work / "disk" / "linked" / "ssrnet").symlink_to(outside.parent)


def _calib_with(plant):
    def before(work, run):
        folder = work / "in" / "calib"
        shutil.copytree(work / "in" / "frames", folder, dirs_exist_ok=True)
        plant(folder / "x.png")
    return before


def _edited_run(work, run):
    import torch

    out = work / "disk" / "edited"
    run(["train", "--genotype", str(work / "in" / "g.json"), "--data", "synthetic:4", "--size",
         "32x64", "--batch", "2", "--workers", "0", "--epochs", "1", "--out", str(out)])
    state = torch.load(out / "last.pt", weights_only=True)
    state["config"]["batch"] = -5
    torch.save(state, out / "last.pt")


def _hard_link_lock(work, run):
    (work / "disk" / "victim.txt").write_text("precious\n")
    os.link(work / "disk" / "victim.txt", work / "disk" / ".run.lock")


def _fifo_lock(work, run):
    os.mkfifo(work / "disk" / ".run2.lock")


def _fifo_output(work, run):
    os.mkfifo(work / "disk" / "fifo.onnx")


def _plant_cache(work, run):
    """Another network's verified export under the key ``ck.pt`` has in the cache."""
    from ssr_deploy.export.onnx import export_onnx
    from ssr_deploy.model.net import build_model
    from ssr_deploy.spec import RUNTIME_IO

    digest = hashlib.sha256((work / "in" / "ck.pt").read_bytes()).hexdigest()
    name = f"{digest[:16]}-32x64-uint8-nhwc-bgr-labels-uint8-b32.onnx"
    folder = Path(os.environ["XDG_CACHE_HOME"]) / "ssr-deploy" / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(build_model("ssr-cityscapes"), folder / name, size=(32, 64),
                dynamic_batch=True, max_batch=32, io=RUNTIME_IO)


def _cache_is_ck(work, output) -> bool:
    from ssr_deploy.genotype import Genotype
    from ssr_deploy.spec import ModelSpec

    folder = Path(os.environ["XDG_CACHE_HOME"]) / "ssr-deploy" / "onnx"
    mine = Genotype.load(work / "in" / "g.json").hash
    return all(ModelSpec.load(p).genotype_hash == mine for p in folder.glob("*32x64*.onnx"))


def _huge_png(work, run):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    (work / "in" / "huge.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 60001 * 4)) + chunk(b"IEND", b""))


def _users_folder(work, run):
    (work / "disk" / "mine").mkdir()
    (work / "disk" / "mine" / "notes.txt").write_text("mine\n")


def _users_fp16(work, run):
    (work / "disk" / "eng").mkdir()
    for name in ("m.onnx", "m.onnx.json"):
        shutil.copyfile(work / "in" / name, work / "disk" / "eng" / name)
    (work / "disk" / "eng" / "m.fp16.onnx").write_text("the user's fp16 graph\n")


def _users_fp32(work, run):
    (work / "disk" / "d").mkdir()
    (work / "disk" / "d" / "x.onnx").write_text("the user's own\n")


def _sidecar(change, logits: bool = False):
    """``in/x.onnx``: m.onnx (or a logits export) with one sidecar field changed."""
    def before(work, run):
        source = work / "in" / "m.onnx"
        if logits:
            run(["export", "onnx", str(work / "in" / "ck.pt"), "-o", str(work / "in" / "l.onnx"),
                 "--size", "32x64", "--no-simplify"])
            source = work / "in" / "l.onnx"
        shutil.copyfile(source, work / "in" / "x.onnx")
        meta = json.loads(Path(f"{source}.json").read_text())
        section, key, value = change
        (meta[section] if section else meta)[key] = value
        (work / "in" / "x.onnx.json").write_text(json.dumps(meta))
    return before


def _space(change):
    def before(work, run):
        from ssr_deploy.space import SearchSpace

        space = SearchSpace().to_dict()
        for key, value in change.items():
            if key in ("max_layers", "channels"):
                space["stages"][0][key] = value
            else:
                space[key] = value
        (work / "in" / "space.json").write_text(json.dumps(space))
    return before


def _big_int(work, run):
    (work / "in" / "big.json").write_text('{"format": ' + "9" * 5000 + "}")


def _onnx_changed(work, edit) -> None:
    """``in/x.onnx``: m.onnx edited by ``edit(model)``, with a sidecar that vouches for it."""
    import onnx

    from ssr_deploy.spec import ModelSpec

    model = onnx.load(str(work / "in" / "m.onnx"))
    edit(model)
    onnx.save(model, str(work / "in" / "x.onnx"))
    meta = json.loads((work / "in" / "m.onnx.json").read_text())
    ModelSpec.save(work / "in" / "x.onnx", {k: v for k, v in meta.items()
                                            if k not in ("file", "sha256")})


def _custom_op(work, run):
    import onnx

    def edit(model):
        model.graph.node.append(onnx.helper.make_node(
            "EvilOp", [model.graph.input[0].name], ["evil"], domain="com.evil"))
        model.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))
    _onnx_changed(work, edit)


def _huge_initializer(work, run):
    import onnx

    def edit(model):
        weight = onnx.TensorProto(name="huge", data_type=onnx.TensorProto.FLOAT,
                                  dims=[1 << 20, 1 << 20, 1024])
        weight.data_location = onnx.TensorProto.EXTERNAL
        weight.external_data.add(key="location", value="huge.bin")
        model.graph.initializer.append(weight)
    (work / "in" / "huge.bin").write_bytes(b"\0" * 16)
    _onnx_changed(work, edit)


def _external_named_model(work, run):
    import onnx

    from ssr_deploy.spec import ModelSpec

    (work / "in" / "ext").mkdir()
    onnx.save(onnx.load(str(work / "in" / "m.onnx")), str(work / "in" / "ext" / "x.onnx"),
              save_as_external_data=True, location="model.onnx", size_threshold=0)
    meta = json.loads((work / "in" / "m.onnx.json").read_text())
    ModelSpec.save(work / "in" / "ext" / "x.onnx", {k: v for k, v in meta.items()
                                                    if k not in ("file", "sha256")})


def _nan_lut(work, run):
    space = {"stages": [{"stride": 4, "channels": 24, "max_layers": 2, "dropout": 0.0},
                        {"stride": 8, "channels": 40, "max_layers": 2, "dropout": 0.0}],
             "dilations": [1, 2], "width_choices": 3}
    (work / "in" / "tiny_space.json").write_text(json.dumps(space))
    run(["lut", "build", "--space", str(work / "in" / "tiny_space.json"), "--size", "32x64",
         "--width-grid", "2,2,2", "--repeats", "1", "--passes", "1", "--check", "0", "-o",
         str(work / "in" / "lut.json")])
    data = json.loads((work / "in" / "lut.json").read_text())
    data["entries"] = {k: float("nan") for k in data["entries"]}
    (work / "in" / "lut.json").write_text(json.dumps(data))


def _repo_version_file(work, run):
    (work / "disk" / "repo5" / "ssrnet").mkdir(parents=True)
    (work / "disk" / "repo5" / "ssrnet" / "1").write_text("a file")


def _nan_checkpoint(work, run):
    import torch

    from ssr_deploy.model.checkpoint import load_model, save_checkpoint

    net = load_model(work / "in" / "ck.pt")
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    save_checkpoint(work / "nan.pt", net, net.genotype)


def _bad_classes(work, run):
    shutil.copytree(work / "in" / "ds", work / "badds", dirs_exist_ok=True)
    (work / "badds" / "classes.json").write_text(json.dumps({"names": [1, {"a": 2}]}))


def _names_in_checkpoint(work, output) -> bool:
    from ssr_deploy.model.checkpoint import load_model

    return load_model(work / "disk/named/last.pt").genotype.classes == ("road", "car", "tree")


def _classes_300(work, run):
    from ssr_deploy.genotype import Genotype
    from ssr_deploy.model.checkpoint import save_checkpoint
    from ssr_deploy.model.net import build_model

    g = Genotype.load(work / "in" / "g.json")
    g = dataclasses.replace(g, classes=tuple(f"c{i}" for i in range(300)),
                            palette=tuple((i % 256, 0, 0) for i in range(300)))
    save_checkpoint(work / "c300.pt", build_model(g), g)


def _odd_files(work, run):
    rng = np.random.default_rng(0)
    (work / "rand.pt").write_bytes(rng.bytes(256))
    (work / "empty.pt").write_bytes(b"")
    shutil.copy(work / "in" / "g.json", work / "g.pt")
    shutil.copy(work / "in" / "m.onnx", work / "nosidecar.onnx")
    shutil.copy(work / "in" / "m.onnx", work / "tampered.onnx")
    shutil.copy(work / "in" / "m.onnx.json", work / "tampered.onnx.json")
    with open(work / "tampered.onnx", "ab") as f:
        f.write(b"\0")
    (work / "emptydir").mkdir(exist_ok=True)
    (work / "broken.json").write_text("{\"format\": 1, ")
    (work / "notes.txt").write_text("not a model")


def _used_folder(work, run):
    shutil.rmtree(work / "used", ignore_errors=True)
    (work / "used").mkdir()
    (work / "used" / "mine.txt").write_text("the user's own file")


def _stale_plan(work, run):
    folder = work / "trepo" / "ssrnet" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.plan").write_bytes(b"an engine from an earlier export")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "hostile.json"))
    parser.add_argument("--only", help="run cases whose name or class contains this")
    parser.add_argument("--merge", nargs=2, metavar=("BEFORE", "AFTER"),
                        help="write one document from two runs' JSON (another version's and "
                        "this one's), case by case")
    args = parser.parse_args()
    if args.merge:
        return merge(*args.merge, args.out)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from ssr_deploy.cli import main

    resource.setrlimit(resource.RLIMIT_AS, (16 << 30, resource.RLIM_INFINITY))
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # planted files stay in this run
    mounted = []
    try:
        (work / "in").mkdir()
        build_inputs(work / "in")
        shutil.copytree(work / "in", work / "in.pristine")
        for sub in ("disk", "ro"):
            if _mount(work / sub, 320):
                mounted.append(work / sub)
        if work / "ro" in mounted:
            (work / "ro" / "m.onnx").write_bytes(b"good")
            subprocess.run(["mount", "-o", "remount,ro", str(work / "ro")], check=True)
        runner = CliRunner()
        # the good outputs that a full disk must not take away
        for case in cases():
            if case.disk == "full" and case.prefill and (not args.only or args.only in
                                                          case.name + case.cls):
                runner.invoke(main, [a.replace("{W}", str(work)) for a in case.args])
        results = []
        for case in cases():
            if args.only and args.only not in case.name + case.cls:
                continue
            if case.disk == "full" and work / "disk" not in mounted:
                continue
            outcome = run_case(case, work, runner, main)
            results.append({"class": case.cls, "case": case.name, **outcome})
            print(f"{outcome['outcome']:>22}  {case.cls}: {case.name}", flush=True)
        import hostile_door

        shutil.rmtree(work / "in")
        shutil.copytree(work / "in.pristine", work / "in")
        results += hostile_door.run(work, args.only)
        results += hostile_door.run_beside(work, args.only)
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    by_class: dict[str, Counter] = {}
    for r in results:
        by_class.setdefault(r["class"], Counter())[r["outcome"]] += 1
    summary = {c: dict(n) for c, n in by_class.items()}
    total = Counter(r["outcome"] for r in results)
    import ssr_deploy

    doc = {"label": f"ssr-deploy {ssr_deploy.__version__} from {Path(ssr_deploy.__file__).parent}",
           "cases": len(results), "outcomes": dict(total), "by_class": summary,
           "results": results}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"cases": len(results), "outcomes": dict(total)}))


def merge(before_path: str, after_path: str, out: str) -> None:
    before, after = (json.loads(Path(p).read_text()) for p in (before_path, after_path))
    old = {r["case"]: r for r in before["results"]}
    rows = [{"class": r["class"], "case": r["case"],
             "before": old.get(r["case"], {}).get("outcome"), "after": r["outcome"],
             "after_detail": r.get("detail", "")} for r in after["results"]]
    doc = {"cases": len(rows),
           "before": {k: before[k] for k in ("label", "outcomes", "by_class") if k in before},
           "after": {k: after[k] for k in ("label", "outcomes", "by_class") if k in after},
           "results": rows}
    Path(out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"before": before["outcomes"], "after": after["outcomes"]}))


if __name__ == "__main__":
    sys.exit(main_())
