"""The engine cache (``engine_for`` and ``--backend tensorrt`` on an .onnx): real TensorRT-RTX
builds for a named compute capability (no GPU here): built once and found again, another
build when the ONNX or the key changes, a damaged, stale or foreign cached engine rebuilt
with one line saying why, two processes on one key, a cache that cannot be written, and the
one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

import ssr_deploy.backends.tensorrt as trt_package
from ssr_deploy import Segmenter, SsrDeployError
from ssr_deploy.backends.tensorrt import cache, library
from ssr_deploy.cli import main
from ssr_deploy.export import engine_for
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.spec import IOFormat, ModelSpec, sidecar_path
from tests.helpers import confident_net

RTX = {"builder": "tensorrt-rtx", "compute_capability": "8.9"}


@pytest.fixture(scope="module", autouse=True)
def rtx():
    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """An fp32 uint8-in / labels-out ONNX, batch 1-4 at 32x64 (seconds to build)."""
    folder = tmp_path_factory.mktemp("small")
    return export_onnx(confident_net(), folder / "m.onnx", size=(32, 64), dynamic_batch=True,
                       max_batch=4, io=IOFormat("uint8-nhwc-bgr", "labels")).path


def lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def test_built_once_then_found_again(small_onnx, tmp_path, capsys):
    engine = engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX)
    assert [line for line in lines(capsys) if "building the engine of m.onnx for sm_89" in line]
    stamp = engine.stat().st_mtime_ns
    assert engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX) == engine
    assert lines(capsys) == [] and engine.stat().st_mtime_ns == stamp
    meta = json.loads(sidecar_path(engine).read_text())
    key = meta["cache"]
    assert key["builder"] == "tensorrt-rtx" and key["compute_capabilities"] == ["8.9"]
    assert key["precision"] == "fp32" and key["version"] == meta["tensorrt"]["version"]
    assert key["onnx_sha256"] == ModelSpec.load(small_onnx).sha256
    assert key["profile"]["max"] == [4, 32, 64, 3] and key["format"] == cache.ENGINE_FORMAT
    assert engine.read_bytes()[:4] == b"vtrt" and ModelSpec.load(engine).output.dtype == "uint8"


def test_another_onnx_or_key_is_another_engine(small_onnx, tmp_path, capsys):
    first = engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX)
    other_gpu = engine_for(small_onnx, "fp32", builder="tensorrt-rtx", compute_capability="8.6",
                           cache_dir=tmp_path)
    narrower = engine_for(small_onnx, "fp32", max_shape="2x32x64", cache_dir=tmp_path, **RTX)
    retrained = tmp_path / "retrained.onnx"
    net = confident_net()
    with torch.no_grad():
        next(net.parameters()).mul_(1.01)
    export_onnx(net, retrained, size=(32, 64), dynamic_batch=True, max_batch=4,
                io=IOFormat("uint8-nhwc-bgr", "labels"))
    changed = engine_for(retrained, "fp32", cache_dir=tmp_path, **RTX)
    paths = {first, other_gpu, narrower, changed}
    assert len(paths) == 4 and all(p.is_file() for p in paths)  # each kept beside the others
    assert sum("building the engine" in line for line in lines(capsys)) == 4
    assert ModelSpec.load(narrower).profile[2][0] == 2


def test_fp16_is_converted_and_verified_once(small_onnx, tmp_path, capsys):
    engine = engine_for(small_onnx, cache_dir=tmp_path, **RTX)  # fp16 by default
    out = lines(capsys)
    assert any("converting m.onnx to fp16" in line for line in out)
    assert ModelSpec.load(engine).precision == "fp16"
    assert engine_for(small_onnx, cache_dir=tmp_path, **RTX) == engine
    assert lines(capsys) == []


@pytest.mark.parametrize("damage, why", [
    ("truncate", "is damaged or incomplete"),
    ("no sidecar", "is damaged or incomplete"),
    ("version", "was built with tensorrt-rtx 1.7.0.1, this is TensorRT-RTX"),
    ("older project", "was built by an older ssr-deploy (engine format 1"),
    ("foreign", "does not match its name (compute_capabilities differ)"),
])
def test_a_cached_engine_that_no_longer_matches_is_rebuilt(small_onnx, tmp_path, capsys, damage,
                                                           why):
    engine = engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX)
    good = engine.read_bytes()
    side = sidecar_path(engine)
    meta = json.loads(side.read_text())
    if damage == "truncate":
        engine.write_bytes(good[:len(good) // 2])
    elif damage == "no sidecar":
        side.unlink()
    else:
        change = {"version": ("version", "1.7.0.1"), "older project": ("format", 1),
                  "foreign": ("compute_capabilities", ["8.6"])}[damage]
        meta["cache"][change[0]] = change[1]
        side.write_text(json.dumps(meta))
    capsys.readouterr()
    assert engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX) == engine
    out = lines(capsys)
    assert len(out) == 1 and why in out[0] and out[0].endswith("building it again"), out
    assert ModelSpec.load(engine).cache["version"] != "1.7.0.1"
    assert len(engine.read_bytes()) > len(good) // 2  # whole again


def test_an_engine_planted_under_a_cache_name_is_not_run(small_onnx, tmp_path, capsys):
    """W2: another network's engine copied over an entry, its sidecar's sha256 edited to
    match, was used; the cache's seal (an HMAC under this user's key) no longer matches."""
    engine = engine_for(small_onnx, "fp32", cache_dir=tmp_path / "cache", **RTX)
    other = tmp_path / "other.onnx"
    net = confident_net()
    with torch.no_grad():
        next(net.parameters()).mul_(-1.0)
    export_onnx(net, other, size=(32, 64), dynamic_batch=True, max_batch=4,
                io=IOFormat("uint8-nhwc-bgr", "labels"))
    planted = engine_for(other, "fp32", cache_dir=tmp_path / "elsewhere", **RTX)
    engine.write_bytes(planted.read_bytes())
    meta = json.loads(sidecar_path(engine).read_text())
    meta["sha256"] = ModelSpec.load(planted).sha256
    sidecar_path(engine).write_text(json.dumps(meta))
    capsys.readouterr()
    assert engine_for(small_onnx, "fp32", cache_dir=tmp_path / "cache", **RTX) == engine
    out = lines(capsys)
    assert len(out) == 1 and "was not written by this cache" in out[0], out
    assert engine.read_bytes() != planted.read_bytes()


def test_a_fifo_at_a_cache_entry_is_replaced_not_read(small_onnx, tmp_path, capsys):
    """H2: a FIFO at an entry's name blocked engine_for for ever."""
    import os

    engine = engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX)
    engine.unlink()
    os.mkfifo(engine)
    capsys.readouterr()
    assert engine_for(small_onnx, "fp32", cache_dir=tmp_path, **RTX) == engine
    out = lines(capsys)
    assert len(out) == 1 and "is not a plain file" in out[0], out
    ModelSpec.load(engine)


def test_a_cache_others_can_write_is_not_used(small_onnx, tmp_path, capsys):
    """Seen once: a world-writable engine folder was used without a word (anyone could
    plant an engine there)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    engine = engine_for(small_onnx, "fp32", cache_dir=shared, **RTX)
    out = lines(capsys)
    assert len(out) == 1 and "is writable by other users" in out[0] and (
        "will not be kept" in out[0]), out
    assert not engine.is_relative_to(shared) and list(shared.iterdir()) == []


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path):
    """W3: the XDG spec says a relative path there is invalid and to be ignored."""
    from pathlib import Path

    from ssr_deploy.io import cache_root

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_root() == Path.home() / ".cache" / "ssr-deploy"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_root() == tmp_path / "ssr-deploy"


def test_two_processes_on_one_key_build_it_once(small_onnx, tmp_path):
    code = ("import sys\nfrom ssr_deploy.export import engine_for\n"
            "print(engine_for(sys.argv[1], 'fp32', builder='tensorrt-rtx', "
            "compute_capability='8.9', cache_dir=sys.argv[2]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(small_onnx), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert sum("building the engine" in err for _, err in outs) == 1
    ModelSpec.load(paths.pop())  # whole: the file matches its sidecar


def test_a_cache_that_cannot_be_written_builds_in_a_temp_folder(small_onnx, tmp_path, capsys):
    from tests.test_faults import _mount_tmpfs, _umount

    folder = tmp_path / "ro"
    if not _mount_tmpfs(folder, 4) or subprocess.run(["mount", "-o", "remount,ro", str(folder)],
                                                      capture_output=True).returncode:
        pytest.skip("needs root and mount (a read-only tmpfs; root ignores permission bits)")
    try:
        engine = engine_for(small_onnx, "fp32", cache_dir=folder, **RTX)
        out = lines(capsys)
        assert len(out) == 1 and "cannot be written" in out[0] and "will not be kept" in out[0]
        assert engine.is_file() and not engine.is_relative_to(folder)
        ModelSpec.load(engine)
        assert list(folder.iterdir()) == []
    finally:
        _umount(folder)


def test_a_full_cache_still_gives_this_run_its_engine(small_onnx, tmp_path, capsys):
    from tests.test_faults import Disk

    disk = Disk(tmp_path)
    if not disk.tmpfs:
        pytest.skip("needs root and mount (a tmpfs to fill)")
    try:
        with disk.full():
            engine = engine_for(small_onnx, "fp32", cache_dir=disk.root / "engines", **RTX)
        out = lines(capsys)
        assert any("cannot be written" in line and "will not be kept" in line for line in out)
        ModelSpec.load(engine)
        assert not [p for p in (disk.root / "engines").iterdir() if p.suffix == ".engine"]
    finally:
        from tests.test_faults import _umount

        _umount(disk.root)


def test_refusals_are_one_line(small_onnx, tmp_path, monkeypatch):
    cases = [
        (dict(precision="int8"), "an int8 engine needs calibration frames"),
        (dict(precision="fp64"), "precision 'fp64' is not known"),
        (dict(builder="trt"), "builder 'trt' is not known"),
        (dict(compute_capability="9.0", builder="tensorrt-rtx"),
         "--compute-capability 9.0: TensorRT-RTX"),
        (dict(max_shape="8x32x64", **RTX), "--max 8x32x64 is outside what the ONNX allows"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SsrDeployError, match=message) as err:
            engine_for(small_onnx, cache_dir=tmp_path, **kwargs)
        assert "\n" not in str(err.value)
    fp16 = engine_for(small_onnx, cache_dir=tmp_path, **RTX).parent
    converted = next(fp16.glob("*.fp16.onnx"))
    with pytest.raises(SsrDeployError, match="is fp16; an fp32 engine comes from the fp32"):
        engine_for(converted, "fp32", cache_dir=tmp_path, **RTX)
    before = set(tmp_path.glob("*.engine"))
    monkeypatch.setattr(library, "_try_import", lambda name: None)  # no TensorRT at all
    with pytest.raises(SsrDeployError, match=r"TensorRT is not installed: .*ssr-deploy\[cu12\].*"
                                             "or run m.onnx as it is with --backend onnxruntime"):
        engine_for(small_onnx, "fp32", cache_dir=tmp_path)
    assert set(tmp_path.glob("*.engine")) == before


def test_backend_tensorrt_on_an_onnx_without_a_gpu_is_one_line(small_onnx, tmp_path,
                                                                monkeypatch):
    """This machine: TensorRT-RTX, no GPU. Refused before any build, naming what runs."""
    from ssr_deploy.backends.tensorrt import cuda

    if cuda.find_gpu()[0] is not None:
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["bench", str(small_onnx), "--backend", "tensorrt",
                                       "--iters", "1"])
    assert result.exit_code != 0
    assert "--backend tensorrt runs m.onnx on an NVIDIA GPU, and this machine has no usable " \
           "one: run it with --backend onnxruntime" in result.output
    assert not list(tmp_path.rglob("*.engine"))  # nothing was built


def test_segmenter_on_an_onnx_goes_through_the_cache(small_onnx, tmp_path, monkeypatch):
    """`Segmenter.load("m.onnx", backend="tensorrt")`: the runner asks the cache for the
    engine (its builder, device and folder; refusing early where nothing could run it), says
    an fp32 graph builds an fp32 engine, and runs what it gets (a fake GPU and runtime)."""
    import numpy as np

    from ssr_deploy.backends.tensorrt import runner
    from ssr_deploy.backends.tensorrt.library import TensorRT
    from tests.backends.tensorrt_fakes import FakeCuda, fake_tensorrt
    from tests.backends.test_tensorrt_runner import as_full_tensorrt

    real = engine_for(small_onnx, "fp32", cache_dir=tmp_path / "c", **RTX)
    full = as_full_tensorrt(real, tmp_path)
    asked = []

    def cached_engine(path, builder=None, compute_capabilities=None, device=0,
                      shapes=(None, None, None), folder=None, to_run=False):
        asked.append((path, builder, device, folder, to_run))
        return full

    fake = FakeCuda()
    trt = fake_tensorrt(fake)
    spec = ModelSpec.load(full)
    trt.engine_io = [(spec.input.name, True, "uint8", spec.input.shape),
                     (spec.output.name, False, "uint8", spec.output.shape)]
    monkeypatch.setattr(cache, "cached_engine", cached_engine)
    monkeypatch.setattr(trt_package, "cuda", fake, raising=False)
    monkeypatch.setattr(runner, "load_tensorrt", lambda builder=None: TensorRT("tensorrt", trt))
    with Segmenter.load(small_onnx, backend="tensorrt", device="cuda:0",
                        engine_cache=str(tmp_path / "e")) as seg:
        frame = np.full((32, 64, 3), 23, np.uint8)
        assert (seg(frame) == 23 % 19).all()
        assert "m.onnx is fp32, and so is its engine" in seg.backend.notes[0]
    assert asked == [(small_onnx, None, 0, str(tmp_path / "e"), True)]
    with pytest.raises(SsrDeployError, match="builder and engine_cache are for an .onnx"):
        Segmenter.load(full, builder="tensorrt-rtx")
