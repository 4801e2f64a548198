"""The quickstart page as a new user runs it: every command block after the install line,
in order, in one fresh folder, through the installed ``ssr-deploy``; the Python block in a
fresh interpreter. The stream example reads a live MJPEG stream served here (its address is
the one thing changed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.test_bench_video import _clip
from tests.runtime.test_streams import Streams

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "quickstart.md"


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced code block, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S)]


def test_the_quickstart_runs_as_written(tmp_path):
    found = blocks(PAGE.read_text())
    assert [lang for lang, _ in found].count("bash") >= 5 and tuple(
        lang for lang, _ in found if lang == "python") >= ("python", )
    cli = Path(sys.executable).with_name("ssr-deploy")
    assert cli.exists() or shutil.which("ssr-deploy"), "ssr-deploy is not installed"
    env = {**os.environ, "PATH": f"{cli.parent}{os.pathsep}{os.environ['PATH']}"}
    streams = Streams(_clip(tmp_path / "clip.avi", 12, fourcc="MJPG"), frames=60, fps=30)
    ran = 0
    try:
        for lang, body in found:
            if "pip install" in body:
                continue  # the install line: the suite runs where it was done
            if lang == "bash":
                body = re.sub(r"rtsp://\S+", f"{streams.url}/live.mjpg", body)
                for line in filter(str.strip, body.splitlines()):
                    run = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=tmp_path,
                                         env=env, capture_output=True, text=True, timeout=600)
                    assert run.returncode == 0, f"{line}\n{run.stderr[-3000:]}"
                    ran += 1
            elif lang == "python":
                run = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, env=env,
                                     capture_output=True, text=True, timeout=300)
                assert run.returncode == 0, run.stderr[-3000:]
                assert run.stdout.strip() == "(720, 1280) ['road', 'sidewalk', 'building']"
                ran += 1
    finally:
        streams.close()
    assert ran >= 8
    # what the page says each step leaves behind
    assert (tmp_path / "model.onnx.json").is_file()
    images = sorted(p.name for p in (tmp_path / "scenes/leftImg8bit/val/synth").glob("*.png"))
    assert sorted(p.name for p in (tmp_path / "overlays").glob("*.png")) == images
    assert (tmp_path / "drive_seg.mp4").stat().st_size > 0
    assert (tmp_path / "cam.mp4").stat().st_size > 0
    import json

    spec = json.loads((tmp_path / "model.onnx.json").read_text())
    assert spec["input"]["size"] == [128, 256]  # the checkpoint's size, not 512x1024


@pytest.mark.parametrize("page", sorted((ROOT / "docs").glob("*.md")), ids=lambda p: p.name)
def test_every_page_is_in_the_site(page):
    nav = (ROOT / "mkdocs.yml").read_text()
    assert f": {page.name}" in nav, f"{page.name} is not in mkdocs.yml's nav"
