"""The second hostile run's classes: planted links and predictable temp names, names that
would inject into configs, JSON that would exhaust the stack, concurrent runs into one
folder, models that `export triton` copies without opening, and the unclear lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from ssr_deploy import Genotype, Segmenter, SsrDeployError, build_model
from ssr_deploy.cli import main
from ssr_deploy.errors import SpecError
from ssr_deploy.io import atomic_write_text, read_json
from ssr_deploy.runs import run_lock
from ssr_deploy.spec import RUNTIME_IO, ModelSpec, file_sha256, sidecar_path


@pytest.fixture(scope="module")
def small_onnx(paper_uint8_onnx):
    return paper_uint8_onnx


def _one_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output


# ---- temp names and links --------------------------------------------------------------

def test_writers_replace_a_link_at_the_final_name_and_use_random_temps(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "table.json"
    out.symlink_to(victim)
    atomic_write_text(out, "{}\n")
    assert victim.read_text() == "keep me" and not out.is_symlink() and out.read_text() == "{}\n"
    from ssr_deploy.io import temp_beside

    seen = set()
    for _ in range(3):
        tmp = temp_beside(out)
        seen.add(tmp.name)
        tmp.unlink()
    assert len(seen) == 3  # no name another run (or user) can predict


# ---- names that go into configs ----------------------------------------------------------

INJECTION = 'x" } } instance_group [ { count: 64 kind: KIND_CPU } ] name: "y'


def test_a_genotype_name_with_quotes_braces_or_newlines_is_refused_at_load(tmp_path):
    data = json.loads(Genotype.load("ssr-cityscapes").to_json())
    for name, problem in ((INJECTION, "holds '\"'"), ("a\nb", "holds '\\n'"),
                          ("x" * 50_000, "50,000 characters long")):
        path = tmp_path / "g.json"
        path.write_text(json.dumps({**data, "name": name}))
        with pytest.raises(SsrDeployError, match=re.escape(problem)) as err:
            Genotype.load(path)
        assert "\n" not in str(err.value) and len(str(err.value)) < 300
    result = CliRunner().invoke(main, ["info", str(path)])
    assert "characters long" in _one_line(result)


def test_a_sidecar_with_injected_names_is_refused(small_onnx, tmp_path):
    meta = json.loads(sidecar_path(small_onnx).read_text())
    for key, value in (("genotype", {**meta["genotype"], "name": INJECTION}),
                       ("input", {**meta["input"], "name": 'images" }'}),
                       ("output", {**meta["output"], "name": "labels\n"})):
        with pytest.raises(SpecError, match=r"\.name holds"):
            ModelSpec.from_dict({**meta, key: value})


def test_the_config_writer_escapes_whatever_it_is_given(small_onnx):
    """Validation stops such names at load; the writer escapes anyway (a second wall)."""
    from ssr_deploy.export.triton import config_pbtxt
    from ssr_deploy.names import pbtxt_string

    quoted = pbtxt_string(INJECTION + "\n\x01\\")
    assert quoted == '"' + INJECTION.replace('"', '\\"') + '\\n\\001\\\\"'
    assert re.fullmatch(r'"(?:[^"\\\n]|\\.)*"', quoted)  # one string, nothing after it
    meta = json.loads(sidecar_path(small_onnx).read_text())
    text = config_pbtxt(ModelSpec.from_dict(meta), "ssrnet", "onnxruntime_onnx", 4, 1, "KIND_CPU")
    assert 'name: "ssrnet"' in text and 'string_value: "ssr-cityscapes ' in text


# ---- JSON handed in ------------------------------------------------------------------------

def test_deep_or_huge_json_is_one_line_not_a_crash(tmp_path, small_onnx):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SsrDeployError, match="nests deeper than"):
        read_json(deep, "genotype")
    assert "nests deeper" in _one_line(CliRunner().invoke(main, ["info", str(deep)]))
    shallow_deep = tmp_path / "d.json"
    shallow_deep.write_text(json.dumps({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]
                                                  ]]]]]]]]]]]]]]]]]]}))
    with pytest.raises(SsrDeployError, match="nests deeper than 32"):
        read_json(shallow_deep, "sidecar")
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(65 << 20)
    with pytest.raises(SsrDeployError, match=r"huge.json is 68.2 MB; no genotype is over 67.1 MB"):
        read_json(huge, "genotype")


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(dynamic={"batch": [1, 10**12]}), "dynamic.batch is"),
    (lambda m: m.update(dynamic={"batch": {"min": 1, "opt": 1, "max": 10**12}}),
     "dynamic.batch is"),
    (lambda m: m["input"].update(shape=[-1, 64, 64, 3]), "has height 64, its size says 32"),
    (lambda m: m.update(dynamic="x"), "dynamic is str"),
])
def test_bench_refuses_a_contradicting_sidecar(small_onnx, tmp_path, change, message):
    model = tmp_path / "m.onnx"
    model.write_bytes(small_onnx.read_bytes())
    meta = json.loads(sidecar_path(small_onnx).read_text())
    change(meta)
    sidecar_path(model).write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["bench", str(model), "--iters", "1"])
    assert message in _one_line(result)


# ---- one run per output folder ---------------------------------------------------------------

HOLD = textwrap.dedent("""
    import sys, time
    from ssr_deploy.runs import run_lock
    with run_lock(sys.argv[1], sys.argv[2]):
        print("held", flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("command, args", [
    ("train", ["--genotype", "ssr-cityscapes", "--data", "synthetic:4", "--size", "32x64",
               "--epochs", "1", "--batch", "2"]),
    ("search", ["--data", "synthetic:4", "--size", "32x64", "--epochs", "1", "--batch", "2"]),
    ("demo", ["--quick"]),
])
def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(tmp_path, command, args):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), command],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(main, [command, *args, "--out", str(out)])
        line = _one_line(result)
        assert f"--out {out} is in use by `ssr-deploy {command}` (pid {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()


def test_lut_build_into_a_busy_table_is_refused(tmp_path):
    out = tmp_path / "lut.json"
    with run_lock(out, "lut build", "-o"):
        result = CliRunner().invoke(main, ["lut", "build", "-o", str(out), "--size", "32x64"])
    assert "is in use by `ssr-deploy lut build`" in _one_line(result)


def test_a_dead_runs_lock_is_taken_over_and_said(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out), "train"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL: no clean-up, the lock file stays with its words
    holder.wait()
    assert (tmp_path / ".run.lock").is_file()
    with run_lock(out, "train"):
        pass
    assert f"taking over {out} from `ssr-deploy train` (pid {holder.pid}" in \
        capsys.readouterr().err
    assert not (tmp_path / ".run.lock").exists()


# ---- export triton opens what it copies ---------------------------------------------------

def test_export_triton_refuses_what_bench_would_refuse(small_onnx, tmp_path):
    runner = CliRunner()
    truncated = tmp_path / "t.onnx"
    truncated.write_bytes(small_onnx.read_bytes()[:5000])
    meta = json.loads(sidecar_path(small_onnx).read_text())
    sidecar_path(truncated).write_text(json.dumps({**meta, "file": truncated.name,
                                                   "sha256": file_sha256(truncated)}))
    assert "not a readable ONNX file" in _one_line(runner.invoke(
        main, ["export", "triton", str(truncated), "--repo", str(tmp_path / "r1")]))
    changed = tmp_path / "c.onnx"
    changed.write_bytes(small_onnx.read_bytes() + b"x")
    sidecar_path(changed).write_text(json.dumps(meta))
    assert "sha256 differs" in _one_line(runner.invoke(
        main, ["export", "triton", str(changed), "--repo", str(tmp_path / "r2")]))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def _with_external_data(src: Path, folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src))
    path = folder / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.data")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(path))
    meta = json.loads(sidecar_path(src).read_text())
    sidecar_path(path).write_text(json.dumps({**meta, "file": path.name,
                                              "sha256": file_sha256(path)}))
    return path


def test_external_data_is_checked_and_copied_along(small_onnx, tmp_path):
    runner = CliRunner()
    good = _with_external_data(small_onnx, tmp_path / "good", "ext.data")
    result = runner.invoke(main, ["export", "triton", str(good), "--repo", str(tmp_path / "r"),
                                  "--cpu", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    copied = tmp_path / "r" / "ssrnet" / "1"
    assert (copied / "ext.data").read_bytes() == (tmp_path / "good" / "ext.data").read_bytes()
    with Segmenter.load(copied / "model.onnx") as seg:  # the repository's copy runs
        assert seg(np.zeros((32, 64, 3), np.uint8)).shape == (32, 64)
    escaping = _with_external_data(small_onnx, tmp_path / "bad", "../good/ext.data")
    for command in (["export", "triton", str(escaping), "--repo", str(tmp_path / "r3")],
                    ["export", "engine", str(escaping), "-o", str(tmp_path / "e.engine")]):
        assert "outside the model's folder" in _one_line(runner.invoke(main, command))
    missing = _with_external_data(small_onnx, tmp_path / "missing", "ext.data")
    (tmp_path / "missing" / "ext.data").unlink()
    assert "external data file ext.data is missing" in _one_line(runner.invoke(
        main, ["export", "triton", str(missing), "--repo", str(tmp_path / "r4")]))


# ---- unclear lines, made clear ------------------------------------------------------------

def test_a_truncated_checkpoint_and_a_pickle_payload_are_named(tmp_path):
    import pickle

    import torch

    from ssr_deploy.model.checkpoint import read_checkpoint, save_checkpoint

    good = tmp_path / "good.pt"
    save_checkpoint(good, build_model("ssr-cityscapes"), Genotype.load("ssr-cityscapes"))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SsrDeployError, match="cut.pt: it is truncated or damaged"):
        read_checkpoint(cut)

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"genotype": {}, "state_dict": {}, "x": Payload()}, evil,
               pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(SsrDeployError) as err:
        read_checkpoint(evil)
    assert "loads weights only" in str(err.value) and "weights_only=False" not in str(err.value)


def test_a_closed_segmenter_says_so(small_onnx):
    seg = Segmenter.load(small_onnx)
    seg.close()
    with pytest.raises(SsrDeployError, match="this Segmenter was closed"):
        seg(np.zeros((32, 64, 3), np.uint8))
    seg.close()  # twice is harmless


def test_a_failed_profile_leaves_no_trace_file(small_onnx, monkeypatch):
    import glob
    import tempfile

    from ssr_deploy.backends.onnxruntime import OnnxRuntimeBackend
    from ssr_deploy.runtime import profile as profile_module

    before = set(glob.glob(str(Path(tempfile.gettempdir()) / "ssr-deploy-ort-profile-*")))

    def fail(self, batch):
        raise RuntimeError("device lost")

    monkeypatch.setattr(OnnxRuntimeBackend, "infer", fail)
    with pytest.raises(RuntimeError, match="device lost"):
        profile_module.profile(small_onnx, iters=2, size=(32, 64))
    after = set(glob.glob(str(Path(tempfile.gettempdir()) / "ssr-deploy-ort-profile-*")))
    assert after == before


def test_sigterm_is_one_line_like_ctrl_c(tmp_path):
    import signal
    import time

    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "ssr_deploy", "train", "--genotype",
                                 "ssr-cityscapes", "--data", "synthetic:8", "--size", "64x128",
                                 "--epochs", "500", "--batch", "2", "--out", str(tmp_path / "t")],
                                stderr=stderr)
        deadline = time.monotonic() + 120
        while not (tmp_path / "t" / "log.jsonl").exists():  # mid-run: an epoch is done
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = log.read_text()
    assert proc.returncode == 143, err[-500:]
    assert "terminated (SIGTERM): files finished before are kept" in err
    assert "Traceback" not in err


def test_a_forked_child_keeps_sigterm_default():
    # A DataLoader worker inherits the CLI's handler; its loader stops it with SIGTERM, which
    # must end it quietly, not raise Terminated there (a traceback in the run's stderr).
    script = """
import os, signal, sys, time
from ssr_deploy.cli import signals
signals._CLI_PID = os.getpid()
signal.signal(signal.SIGTERM, signals._terminate)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
time.sleep(0.5)
os.kill(child, signal.SIGTERM)
_, status = os.waitpid(child, 0)
print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "True", done.stderr
    assert done.stderr == ""


def test_sigterm_that_lands_in_a_finalizer_is_delivered_again_to_the_run():
    # Seen under load: SIGTERM while a DataLoader forks its workers raised Terminated inside
    # logging's fork hook, where Python swallows it ("Exception ignored in ..."), and the run
    # went on until the watchdog. Here it lands in a __del__, as deterministically.
    script = """
import os, signal, sys, time
from ssr_deploy.cli import signals
signals._CLI_PID = os.getpid()
signal.signal(signal.SIGTERM, signals._terminate)
sys.unraisablehook = signals._unraisable
class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(100000))
try:
    Finalised()
    for _ in range(300):  # the run's own code, for up to 3 s
        time.sleep(0.01)
    print("missed")
except signals.Terminated:
    print("caught")
class HalfBuilt:  # as a DataLoader iterator the interrupt stopped mid-start
    def __del__(self):
        raise AttributeError("'HalfBuilt' object has no attribute '_workers_status'")
HalfBuilt()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "caught", done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, \
        done.stderr


def test_a_sidecar_of_another_file_is_refused(small_onnx, tmp_path):
    other = tmp_path / "prod.onnx"
    other.write_bytes(small_onnx.read_bytes())
    meta = json.loads(sidecar_path(small_onnx).read_text())  # says "m.onnx"
    sidecar_path(other).write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["bench", str(other), "--iters", "1"])
    assert result.exit_code == 0, result.output  # renamed together: its sha256 vouches
    del meta["sha256"]  # nothing vouches for it
    sidecar_path(other).write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["bench", str(other), "--iters", "1"])
    assert "describes 'm.onnx', not prod.onnx" in _one_line(result)


def test_onnxruntime_prints_no_log_line_before_ours(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x07" + b"garbage" * 20)
    proc = subprocess.run([sys.executable, "-c", "import sys\n"
                           "from ssr_deploy.backends.onnxruntime import new_session\n"
                           "try:\n    new_session(sys.argv[1])\n"
                           "except Exception as e:\n    print('ours:', e, file=sys.stderr)",
                           str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.stderr.startswith("ours: onnxruntime cannot load"), proc.stderr
    assert "[E:onnxruntime" not in proc.stderr


def test_a_replaced_output_folder_leaves_no_predictable_name(tmp_path):
    from ssr_deploy.runs import output_folder

    out = tmp_path / "pngs"
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / f".pngs.old-{os.getpid()}").symlink_to(victim)  # the name it used to take
    with output_folder(out, overwrite=True) as folder:
        (folder / "new.png").write_bytes(b"new")
    assert sorted(p.name for p in out.iterdir()) == ["new.png"] and victim.is_dir()


# ---- the third hostile round: security and data loss ---------------------------------
def test_a_hard_link_or_fifo_at_a_lock_or_log_is_refused_and_the_other_file_untouched(
        tmp_path):
    """Locks and logs are written in place: a hard link would carry the writes into the
    other file (and print its bytes in the take-over note), a FIFO would hang open()."""
    import os

    from ssr_deploy.serving.triton import open_log

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, tmp_path / ".run.lock")
    with pytest.raises(SsrDeployError, match=r"\.run\.lock is a hard link .*remove it"), \
            run_lock(tmp_path / "run", "train"):
        pass
    os.link(victim, tmp_path / "serve.log")
    with pytest.raises(SsrDeployError, match="serve.log is a hard link"):
        open_log(tmp_path / "serve.log")
    assert victim.read_text() == "precious\n"
    for name in (".run2.lock", "fifo.log"):
        os.mkfifo(tmp_path / name)
    with pytest.raises(SsrDeployError, match="is a FIFO"), run_lock(tmp_path / "run2", "train"):
        pass
    with pytest.raises(SsrDeployError, match="fifo.log is a FIFO"):
        open_log(tmp_path / "fifo.log")


def test_the_checkpoint_export_cache_checks_what_it_finds(tiny_inputs, tmp_path, monkeypatch):
    """One export per content, size and I/O, in the cache folder, found again by key, not by
    time; an ONNX planted under the key (another network's, or this network with other
    weights and a forged record) is exported again, never run."""
    import shutil

    import torch

    import ssr_deploy.export.onnx as onnx_export
    from ssr_deploy.export.cache import onnx_for_checkpoint
    from ssr_deploy.model.checkpoint import load_model, save_checkpoint

    real, exports = onnx_export.export_onnx, []

    def counting(net, path, **kw):
        exports.append(kw["size"])
        return real(net, path, **kw)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ckpt = tmp_path / "user" / "net.pt"
    ckpt.parent.mkdir()
    shutil.copyfile(tiny_inputs / "ck.pt", ckpt)
    first = onnx_for_checkpoint(ckpt, (32, 64))
    assert first.parent == tmp_path / "cache" / "ssr-deploy" / "onnx"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["net.pt"]  # nothing beside it
    ckpt.touch()  # a newer file, same content: the cached export is reused
    assert onnx_for_checkpoint(ckpt, (32, 64)) == first and exports == [(32, 64)]
    assert onnx_for_checkpoint(ckpt, (64, 128)) != first and len(exports) == 2

    net = load_model(ckpt)  # the same genotype, other weights, under the right key
    with torch.no_grad():
        for param in net.parameters():
            param.mul_(-1.0)
    forged = tmp_path / "forged"
    forged.mkdir()
    save_checkpoint(forged / "f.pt", net, net.genotype)
    planted = real(net, forged / "f.onnx", size=(32, 64), dynamic_batch=True, max_batch=32,
                   io=RUNTIME_IO).path
    shutil.copyfile(planted, first)
    shutil.copyfile(sidecar_path(planted), sidecar_path(first))
    assert ModelSpec.load(first).genotype_hash == net.genotype.hash  # a consistent plant
    assert onnx_for_checkpoint(ckpt, (32, 64)) == first and len(exports) == 3  # exported again
    assert file_sha256(first) != file_sha256(planted)
    other = tmp_path / "other"  # another network's export, its sidecar consistent
    other.mkdir()
    other_onnx = real(build_model("ssr-cityscapes"), other / "o.onnx", size=(32, 64),
                      dynamic_batch=True, max_batch=32,
                      io=RUNTIME_IO).path
    shutil.copyfile(other_onnx, first)
    shutil.copyfile(sidecar_path(other_onnx), sidecar_path(first))
    assert onnx_for_checkpoint(ckpt, (32, 64)) == first and len(exports) == 4
    assert ModelSpec.load(first).genotype_hash == load_model(ckpt).genotype.hash


def test_demo_refuses_a_folder_that_is_not_a_demos(tmp_path):
    from ssr_deploy.app.demo import Demo

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    with pytest.raises(SsrDeployError, match=r"holds files that are not a demo's \(notes.txt\)"):
        Demo(mine, quick=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    Demo(tmp_path / "empty", quick=True)  # empty: fine; a demo's own folder: continued
    Demo(tmp_path / "empty", quick=True)


def test_an_export_never_replaces_a_users_file_with_its_companion(tmp_path, small_onnx):
    """`export onnx -o d/x.fp16.onnx` writes the fp32 graph to d/x.onnx, `export engine`
    its converted graph to eng/m.fp16.onnx: a file of the user's there is refused, before
    any work; the companion of an earlier run of the same export is replaced."""
    import shutil

    from ssr_deploy.export.metadata import check_companion
    from ssr_deploy.export.precision import PrecisionOptions, convert_precision

    d = tmp_path / "d"
    d.mkdir()
    (d / "x.onnx").write_text("the user's own\n")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "onnx", "ssr-cityscapes", "--random-init", "--size",
                                  "32x64", "-o", str(d / "x.fp16.onnx"), "--precision", "fp16"])
    assert "x.onnx exists and is not the fp32 graph of x.fp16.onnx" in _one_line(result)
    assert sorted(p.name for p in d.iterdir()) == ["x.onnx"]
    assert (d / "x.onnx").read_text() == "the user's own\n"

    eng = tmp_path / "eng"
    eng.mkdir()
    shutil.copyfile(small_onnx, eng / "m.onnx")
    shutil.copyfile(sidecar_path(small_onnx), sidecar_path(eng / "m.onnx"))
    (eng / "m.fp16.onnx").write_text("the user's fp16 graph\n")
    with pytest.raises(SsrDeployError, match="m.fp16.onnx exists and is not the fp16 graph"):
        check_companion(eng / "m.fp16.onnx", "fp16 graph", eng / "m.engine",
                        eng / "m.fp16.onnx", eng / "m.onnx")
    result = runner.invoke(main, ["export", "engine", str(eng / "m.onnx"), "-o",
                                  str(eng / "m.engine"), "--builder", "tensorrt-rtx"])
    assert "m.fp16.onnx exists and is not the fp16 graph of m.engine" in _one_line(result)
    assert (eng / "m.fp16.onnx").read_text() == "the user's fp16 graph\n"
    (eng / "m.fp16.onnx").unlink()  # an earlier run's own companion is replaced
    convert_precision(eng / "m.onnx", eng / "m.fp16.onnx", PrecisionOptions("fp16"))
    check_companion(eng / "m.fp16.onnx", "fp16 graph", eng / "m.engine", eng / "m.fp16.onnx",
                    eng / "m.onnx")


def _png_declaring(path, width: int, height: int) -> None:
    """A small PNG whose header declares ``width`` x ``height`` pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * (3 * width + 1) * 4))
                     + chunk(b"IEND", b""))


def test_an_image_declaring_a_huge_size_is_refused_before_it_is_decoded(tmp_path, small_onnx):
    from ssr_deploy.media import read_image

    huge = tmp_path / "huge.png"
    _png_declaring(huge, 20000, 20000)
    assert huge.stat().st_size < 1 << 20
    with pytest.raises(SsrDeployError, match="is 20000x20000 pixels; images are read up to 8192"):
        read_image(huge)
    result = CliRunner().invoke(main, ["video", str(huge), "--model", str(small_onnx), "-o",
                                       str(tmp_path / "o.mp4")])
    assert "is 20000x20000 pixels; frames are read up to 8192" in _one_line(result)
    assert "[ERROR" not in result.output


def _resaved(model, path):
    """``model`` saved at ``path`` (its sidecar written by the caller)."""
    import onnx

    onnx.save(model, str(path))
    return path


def test_export_triton_and_engine_refuse_custom_ops_and_size_lies(small_onnx, tmp_path):
    import onnx

    from ssr_deploy.export.triton import write_repository

    meta = json.loads(sidecar_path(small_onnx).read_text())
    evil = onnx.load(str(small_onnx))
    evil.graph.node.append(onnx.helper.make_node("EvilOp", [evil.graph.input[0].name],
                                                 ["evil_out"], domain="com.evil"))
    evil.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))
    custom = _resaved(evil, tmp_path / "custom.onnx")
    ModelSpec.save(custom, {k: v for k, v in meta.items() if k not in ("file", "sha256")})
    with pytest.raises(SsrDeployError, match="uses the operator com.evil:EvilOp"):
        write_repository(custom, tmp_path / "repo")
    result = CliRunner().invoke(main, ["export", "engine", str(custom), "-o",
                                       str(tmp_path / "c.engine"), "--builder", "tensorrt-rtx"])
    assert "uses the operator com.evil:EvilOp" in _one_line(result)

    huge = onnx.load(str(small_onnx))
    weight = onnx.TensorProto(name="huge", data_type=onnx.TensorProto.FLOAT,
                              dims=[1 << 20, 1 << 20, 1024])
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.external_data.add(key="location", value="huge.bin")
    (tmp_path / "huge.bin").write_bytes(b"\0" * 16)
    huge.graph.initializer.append(weight)
    lying = _resaved(huge, tmp_path / "huge.onnx")
    ModelSpec.save(lying, {k: v for k, v in meta.items() if k not in ("file", "sha256")})
    result = CliRunner().invoke(main, ["export", "engine", str(lying), "-o",
                                       str(tmp_path / "h.engine"), "--builder", "tensorrt-rtx"])
    assert "tensor 'huge' declares 4,503,599,627,370,496 bytes" in _one_line(result)
    assert not (tmp_path / "repo").exists()


def test_export_triton_refuses_external_data_named_as_the_model_and_a_busy_repo(
        small_onnx, tmp_path):
    import onnx

    from ssr_deploy.export.triton import write_repository

    meta = json.loads(sidecar_path(small_onnx).read_text())
    folder = tmp_path / "src"
    folder.mkdir()
    onnx.save(onnx.load(str(small_onnx)), str(folder / "x.onnx"), save_as_external_data=True,
              location="model.onnx", size_threshold=0)
    ModelSpec.save(folder / "x.onnx", {k: v for k, v in meta.items()
                                       if k not in ("file", "sha256")})
    with pytest.raises(SsrDeployError, match="keeps its external data in a file named "
                                             "model.onnx"):
        write_repository(folder / "x.onnx", tmp_path / "repo")
    (tmp_path / "repo2" / "ssrnet").mkdir(parents=True)
    with run_lock(tmp_path / "repo2" / "ssrnet", "export triton", "--repo"), \
            pytest.raises(SsrDeployError, match="is in use by `ssr-deploy export triton`"):
        write_repository(small_onnx, tmp_path / "repo2")
    (tmp_path / "repo3" / "ssrnet").mkdir(parents=True)
    (tmp_path / "repo3" / "ssrnet" / "1").write_text("a file")
    with pytest.raises(SsrDeployError, match="is a file where the repository needs a folder"):
        write_repository(small_onnx, tmp_path / "repo3")


def test_a_device_fifo_or_socket_at_an_output_is_never_replaced(tmp_path, small_onnx,
                                                                tiny_inputs):
    """`-o /dev/null` once replaced the device with a regular file (the rename of a temp file
    onto it): an output that exists and is not a file (or a link) is refused. Shown with a
    FIFO here, never with /dev/null itself."""
    import os
    import stat

    fifo = tmp_path / "out.onnx"
    os.mkfifo(fifo)
    runner = CliRunner()
    for args in (["export", "onnx", "ssr-cityscapes", "--random-init", "--size", "32x64",
                  "-o", str(fifo)],
                 ["bench", str(small_onnx), "--iters", "1", "--warmup", "0", "--json",
                  str(fifo)],
                 ["video", str(tiny_inputs / "clip.avi"), "--model", str(small_onnx), "-o",
                  str(fifo.with_suffix(".mp4")), "--max-frames", "2"]):
        target = Path(args[args.index("-o") + 1] if "-o" in args else args[-1])
        if not target.exists():
            os.mkfifo(target)
        result = runner.invoke(main, args)
        assert "is a device, FIFO or socket, not a file" in _one_line(result), args
        assert stat.S_ISFIFO(target.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "out.onnx"]


def test_the_segmenter_says_what_is_wrong_in_one_line(small_onnx, tmp_path):
    import copy
    import pickle

    from ssr_deploy.errors import UsageTypeError

    for bad in (b"onnx bytes", None, 3):
        with pytest.raises(UsageTypeError, match="a model is a file path"):
            Segmenter.load(bad)
    other = tmp_path / "m.onnx"  # its sidecar edited to describe another graph's output
    other.write_bytes(small_onnx.read_bytes())
    meta = json.loads(sidecar_path(small_onnx).read_text())
    meta["output"]["dtype"] = "int32"
    sidecar_path(other).write_text(json.dumps(meta))
    with pytest.raises(SsrDeployError, match="the sidecar belongs to another graph"):
        Segmenter.load(other)
    with Segmenter.load(small_onnx) as seg:
        frame = np.zeros((32, 64, 3), np.uint8)
        with pytest.raises(UsageTypeError, match="labels are class ids, an integer"):
            seg.overlay(frame, np.zeros((32, 64), np.float32))
        with pytest.raises(SsrDeployError, match="labels hold 0 to 70000"):
            seg.overlay(frame, np.full((32, 64), 70000, np.int32) * np.eye(32, 64, dtype=int))
        with pytest.raises(UsageTypeError, match="not copied"):
            copy.copy(seg)
        with pytest.raises(UsageTypeError, match="cannot be pickled"):
            pickle.dumps(seg)


def test_serve_names_a_server_without_a_python_backend_and_leaves_no_temp(small_onnx,
                                                                          monkeypatch):
    import glob
    import tempfile

    before = set(glob.glob(str(Path(tempfile.gettempdir()) / "ssr-serve-*")))
    monkeypatch.setenv("TRITONSERVER", "/bin/false")
    result = CliRunner().invoke(main, ["serve", str(small_onnx)])
    assert "no python backend at" in _one_line(result)
    assert set(glob.glob(str(Path(tempfile.gettempdir()) / "ssr-serve-*"))) == before


def test_an_output_folder_that_holds_the_working_folder_is_refused(tmp_path, small_onnx,
                                                                   tiny_inputs, monkeypatch):
    """`video ... -o . --overwrite` from inside the target: once "Device or resource busy"
    and two temp folders left; now one line before anything is made."""
    out = tmp_path / "frames"
    out.mkdir()
    (out / "old.png").write_bytes(b"x")
    monkeypatch.chdir(out)
    result = CliRunner().invoke(main, ["video", str(tiny_inputs / "clip.avi"), "--model",
                                       str(small_onnx), "-o", ".", "--overwrite",
                                       "--max-frames", "2"])
    assert "is the folder you are in" in _one_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
    assert sorted(p.name for p in out.iterdir()) == ["old.png"]
