"""Fault injection for every command that writes: a full disk, a read-only folder, kill -9
mid-write. For each: nothing good from before is lost, nothing half-written stays under a
final name, and the command exits non-zero with one line.

A full disk is a real one: a small tmpfs mounted where the tests run as root (ENOSPC from
the kernel, whatever library writes); elsewhere the process's file-size limit is lowered
(EFBIG from the kernel, the same code paths). A read-only folder is a tmpfs remounted
read-only (root ignores permission bits), or a chmod 555 folder for other users.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ssr_deploy.cli import main

SLACK = 4096  # bytes left on the "full" disk: one page


def _mount_tmpfs(where: Path, size_mb: int) -> bool:
    """A tmpfs at ``where`` (root only); SSR_TESTS_NO_MOUNT=1 tries the fallbacks here."""
    if os.geteuid() != 0 or not shutil.which("mount") or os.environ.get("SSR_TESTS_NO_MOUNT"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                           str(where)], capture_output=True)
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


class Disk:
    """A folder whose disk can be filled (and emptied) on demand."""

    def __init__(self, root: Path) -> None:
        self.root = root / "disk"
        self.tmpfs = _mount_tmpfs(self.root, 320)
        self.root.mkdir(exist_ok=True)
        self.filler = self.root / ".filler"

    @contextlib.contextmanager
    def full(self):
        if self.tmpfs:
            free = shutil.disk_usage(self.root).free
            with open(self.filler, "wb") as f:
                f.truncate(0)
                chunk = b"\0" * (1 << 20)
                left = free - SLACK
                while left > 0:
                    left -= f.write(chunk[:min(len(chunk), left)])
            try:
                yield
            finally:
                self.filler.unlink()
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))  # below any PNG or model
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    def close(self) -> None:
        if self.tmpfs:
            _umount(self.root)


@pytest.fixture
def disk(tmp_path):
    d = Disk(tmp_path)
    yield d
    d.close()


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".filler"}


def _commands(i: Path, d: Path) -> dict[str, list[str]]:
    """Every writing command, writing under ``d`` from the inputs in ``i``."""
    return {
        "data synth": ["data", "synth", "--out", str(d / "synth"), "--n", "3", "--size",
                       "32x64", "--overwrite"],
        "data synth --video": ["data", "synth", "--out", str(d / "s2"), "--n", "2", "--size",
                               "64x128", "--video", str(d / "drive.avi"), "--frames", "30",
                               "--overwrite"],
        "export onnx": ["export", "onnx", str(i / "ck.pt"), "-o", str(d / "m.onnx"), "--size",
                        "32x64", "--no-simplify"],
        "export onnx --precision fp16": ["export", "onnx", str(i / "ck.pt"), "-o",
                                         str(d / "m.fp16.onnx"), "--size", "32x64",
                                         "--no-simplify", "--precision", "fp16",
                                         "--min-agreement", "0.9"],
        "export triton": ["export", "triton", str(i / "m.onnx"), "--repo", str(d / "repo"),
                          "--max-batch", "0", "--cpu"],
        "bench": ["bench", str(i / "m.onnx"), "--iters", "2", "--warmup", "0", "--json",
                  str(d / "b.json"), "--plot", str(d / "b.png")],
        "profile": ["profile", str(i / "m.onnx"), "--iters", "1", "--trace",
                    str(d / "trace.json")],
        "video to file": ["video", str(i / "clip.avi"), "--model", str(i / "m.onnx"), "-o",
                          str(d / "seg.avi")],
        "video to folder": ["video", str(i / "frames"), "--model", str(i / "m.onnx"), "-o",
                            str(d / "pngs"), "--overwrite"],
        "eval --save-preds": ["eval", "--weights", str(i / "ck.pt"), "--data", "synthetic:2",
                              "--size", "32x64", "--save-preds", str(d / "preds"),
                              "--overwrite"],
    }


def _one_line_error(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()  # notes (resuming ...) may come before it
    assert lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def test_a_full_disk_loses_nothing_and_says_so(tiny_inputs, disk):
    runner = CliRunner()
    commands = _commands(tiny_inputs, disk.root)
    for name, args in commands.items():  # the good outputs from before
        result = runner.invoke(main, args)
        assert result.exit_code == 0, (name, result.output)
    before = _snapshot(disk.root)
    assert len(before) > 20
    for name, args in commands.items():
        with disk.full():
            result = runner.invoke(main, args)
        line = _one_line_error(result)
        assert "disk is full" in line or "larger than this file system" in line, (name, line)
        assert _snapshot(disk.root) == before, name  # nothing lost, nothing half-written


def test_train_and_search_on_a_full_disk_keep_the_last_good_epoch(tiny_inputs, disk):
    runner = CliRunner()
    train = ["train", "--genotype", str(tiny_inputs / "g.json"), "--data", "synthetic:4", "--size",
             "32x64", "--batch", "2", "--workers", "0", "--out", str(disk.root / "run")]
    result = runner.invoke(main, [*train, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    search = ["search", "--data", "synthetic:8", "--size", "64x128", "--batch", "2",
              "--out", str(disk.root / "search")]
    result = runner.invoke(main, [*search, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    before = _snapshot(disk.root)
    for args in ([*train, "--epochs", "2", "--resume", "--override"],
                 [*search, "--epochs", "2", "--resume", "--override"]):
        with disk.full():
            result = runner.invoke(main, args)
        assert "disk is full" in _one_line_error(result) or "larger than" in result.stderr
        assert _snapshot(disk.root) == before


@pytest.fixture
def read_only(tmp_path):
    """A folder nothing can be written to, with one good file in it."""
    folder = tmp_path / "ro"
    mounted = _mount_tmpfs(folder, 4)
    if not mounted:
        folder.mkdir(exist_ok=True)
    (folder / "m.onnx").write_bytes(b"good")
    if mounted:
        if subprocess.run(["mount", "-o", "remount,ro", str(folder)],
                          capture_output=True).returncode:
            _umount(folder)
            pytest.skip("cannot remount a tmpfs read-only here")
    elif os.geteuid() == 0:
        pytest.skip("root without mount: permission bits do not stop root")
    else:
        folder.chmod(0o555)
    yield folder
    if mounted:
        _umount(folder)
    else:
        folder.chmod(0o755)


def test_a_read_only_folder_is_one_line_and_keeps_what_is_there(tiny_inputs, read_only):
    runner = CliRunner()
    for name, args in _commands(tiny_inputs, read_only).items():
        result = runner.invoke(main, args)
        line = _one_line_error(result)
        # the fp16 export would put its fp32 graph at m.onnx, the user's file: refused first
        why = ("is not the fp32 graph",) if name == "export onnx --precision fp16" else (
            "read-only", "permission denied")
        assert any(w in line for w in why), (name, line)
        assert (read_only / "m.onnx").read_bytes() == b"good"


def _kill_when(args: list[str], appears, timeout: float = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ssr_deploy", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not appears():
            assert proc.poll() is None, "the command ended before it started writing"
            assert time.monotonic() < deadline, "hang guard"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_mid_write_leaves_the_previous_outputs(tiny_inputs, tmp_path):
    """A kill -9 while frames are being written: the video and the PNG folder from before
    are intact, and no file under a final name is partial."""
    clip = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 32))
    rng = np.random.default_rng(0)
    for _ in range(3000):
        writer.write(rng.integers(0, 255, (32, 64, 3), np.uint8))
    writer.release()
    out_video, out_pngs = tmp_path / "seg.avi", tmp_path / "pngs"
    out_video.write_bytes(b"the good video from before")
    out_pngs.mkdir()
    (out_pngs / "000000.png").write_bytes(b"a good frame from before")
    before = _snapshot(tmp_path)

    def partial(prefix: str):
        return lambda: any(p.name.startswith(prefix) and p.stat().st_size > 0
                           for p in tmp_path.iterdir())

    _kill_when(["video", str(clip), "--model", str(tiny_inputs / "m.onnx"), "-o", str(out_video)],
               partial(".seg.avi."))
    _kill_when(["video", str(clip), "--model", str(tiny_inputs / "m.onnx"), "-o", str(out_pngs),
                "--overwrite"], lambda: any(p.name.startswith(".pngs.") and any(p.iterdir())
                                            for p in tmp_path.iterdir()))
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not Path(k).parts[0].startswith(".")} == before


def test_lut_build_keeps_what_it_measured_through_a_full_disk_and_a_kill(disk, tmp_path):
    """A latency table is published part by part: a full disk stops the build with one line
    and leaves the last good state (other files untouched, the new table whole if it got
    written at all); a kill -9 leaves a readable, unfinished table that the
    same command then finishes."""
    import json

    from ssr_deploy.latency.table import LatencyTable
    from tests.latency.test_latency import TINY

    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY.to_dict()))
    args = ["lut", "build", "--size", "32x64", "--space", str(space), "--width-grid", "2,2,2",
            "--repeats", "1", "--check", "0", "--passes", "1", "--calibrate", "2"]
    runner = CliRunner()
    table = disk.root / "lut.json"
    result = runner.invoke(main, [*args, "-o", str(table)])
    assert result.exit_code == 0, result.output
    before = _snapshot(disk.root)
    other = disk.root / "other.json"
    with disk.full():
        result = runner.invoke(main, [*args, "-o", str(other)])
    line = _one_line_error(result)
    assert "disk is full" in line or "larger than this file system" in line, line
    after = _snapshot(disk.root)
    assert {k: v for k, v in after.items() if k != other.name} == before
    if other.exists():  # the parts measured before the disk filled: whole, and unfinished
        assert not json.loads(other.read_text())["complete"]

    killed = tmp_path / "killed.json"

    def some_parts():
        try:
            return len(json.loads(killed.read_text())["timelines"][0]) >= 3
        except (OSError, ValueError, KeyError):
            return False

    _kill_when([*args, "-o", str(killed)], some_parts)
    partial = json.loads(killed.read_text())  # whole JSON, never half a file
    assert not partial["complete"]
    result = runner.invoke(main, [*args, "-o", str(killed)])
    assert result.exit_code == 0, result.output
    finished = LatencyTable.load(killed)
    assert set(finished.entries) == set(finished.required())
