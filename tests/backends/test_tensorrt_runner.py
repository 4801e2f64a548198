"""The TensorRT backend's own logic where no GPU is: the order it frees in, what a failed
open leaves, which device each thread runs on, a refused CUDA-graph capture, static-batch
engines padded, and the notes it shows. The engines are real TensorRT-RTX builds; their bytes
are handed to a fake runtime and GPU (``tensorrt_fakes``) whose every call is checked against
the real bindings. What only a GPU can show runs in the `tensorrt` and `cuda` tests."""

from __future__ import annotations

import inspect
import json
import threading
import types
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import ssr_deploy.backends.tensorrt as trt_package
from ssr_deploy import Segmenter, SsrDeployError, build_model
from ssr_deploy.backends.tensorrt import runner
from ssr_deploy.backends.tensorrt.library import TensorRT
from ssr_deploy.cli import main
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.export.onnx import export_onnx
from ssr_deploy.export.tensorrt import EngineOptions, build_engine
from ssr_deploy.spec import IOFormat, ModelSpec, file_sha256, sidecar_path
from tests.backends.tensorrt_fakes import (
    H100,
    FakeCuda,
    check_against_bindings,
    check_against_module,
    fake_tensorrt,
)

VERSION = "10.16.1.11"


@pytest.fixture(scope="module")
def rtx_engine(labels_onnx, tmp_path_factory):
    """A real fp32 TensorRT-RTX engine of the shared labels ONNX (dynamic batch 1-16)."""
    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    engine = tmp_path_factory.mktemp("engine") / "m.engine"
    build_engine(labels_onnx, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    return engine


@pytest.fixture(scope="module")
def static_engine(tmp_path_factory):
    """A real engine of an ONNX exported with a fixed batch of 4 (its profile is 4..4)."""
    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    folder = tmp_path_factory.mktemp("static")
    onnx_path = export_onnx(build_model("ssr-cityscapes"), folder / "m4.onnx", size=(32, 64),
                            batch=4, io=IOFormat("uint8-nhwc-bgr", "labels")).path
    engine = folder / "m4.engine"
    build_engine(onnx_path, engine, EngineOptions(precision="fp32", builder="tensorrt-rtx"))
    return engine


def as_full_tensorrt(engine, folder, built_on=H100):
    """``engine``'s sidecar as full TensorRT would have written it on ``built_on`` (the bytes
    get full TensorRT's header; the fake runtime reads nothing else)."""
    copy = folder / engine.name
    copy.write_bytes(b"ftrt" + engine.read_bytes()[4:])
    meta = read_sidecar(engine)
    meta["tensorrt"] = {**meta["tensorrt"], "builder": "tensorrt", "version": VERSION,
                        "gpu": {k: built_on[k] for k in ("name", "compute_capability")}}
    meta["tensorrt"].pop("compute_capabilities", None)
    meta.update(file=copy.name, sha256=file_sha256(copy))
    sidecar_path(copy).write_text(json.dumps(meta))
    return copy


@pytest.fixture
def fake_gpu(monkeypatch):
    """Install a FakeCuda and a fake TensorRT module; returns a function that opens an
    engine's sidecar with them: (engine, **FakeCuda args) -> (cuda, trt)."""

    def install(engine, **kwargs):
        cuda = FakeCuda(**kwargs)
        trt = fake_tensorrt(cuda)
        spec = ModelSpec.load(engine)
        trt.engine_io = [(spec.input.name, True, spec.input.dtype, spec.input.shape),
                         (spec.output.name, False, spec.output.dtype, spec.output.shape)]
        monkeypatch.setattr(trt_package, "cuda", cuda, raising=False)
        monkeypatch.setattr(runner, "load_tensorrt", lambda builder=None: TensorRT("tensorrt",
                                                                                   trt))
        return cuda, trt

    return install


def frame(blue: int, h=48, w=80) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = blue
    return image


def test_the_fakes_are_the_real_apis():
    """Every method the fakes define exists in the real binding with those parameters."""
    import tensorrt_rtx

    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    checked = [name for fake, real in ((trt.Runtime, tensorrt_rtx.Runtime),
                                       (trt.ICudaEngine, tensorrt_rtx.ICudaEngine),
                                       (trt.IExecutionContext, tensorrt_rtx.IExecutionContext))
               for name in check_against_bindings(fake, real)]
    assert "IExecutionContext.execute_async_v3" in checked and len(checked) == 11
    assert isinstance(tensorrt_rtx.IExecutionContext.profiler, property)  # set by layer_times
    assert len(check_against_module(cuda)) >= 20


def test_frames_and_streams_come_back_in_order(rtx_engine, tmp_path, fake_gpu):
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    with Segmenter.load(engine) as seg:
        assert seg.backend.notes == []
        assert (seg(frame(25)) == 25 % 19).all()
        colours = [3, 40, 7, 100, 18]
        labels = list(seg.predict_stream(frame(c) for c in colours))
        assert [int(lab[0, 0]) for lab in labels] == [c % 19 for c in colours]
        batch = seg.predict_batch([frame(c) for c in colours])
        assert [int(lab[0, 0]) for lab in batch] == [c % 19 for c in colours]
        assert labels[0].dtype == np.uint8 and labels[0].shape == (48, 80)


def test_close_waits_for_the_streams_then_frees_each_thing_once(rtx_engine, tmp_path,
                                                                fake_gpu):
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    seg = Segmenter.load(engine, cuda_graph=True)
    seg(frame(1))
    list(seg.predict_stream(frame(c) for c in range(3)))
    assert any(kind == "Graph" for kind, _ in cuda.live)
    before = len(cuda.log)
    seg.close()
    closing = cuda.log[before:]
    first_free = next(i for i, entry in enumerate(closing) if entry[0] == "free")
    synced = {entry[1] for entry in closing[:first_free] if entry[0] == "synchronize"}
    streams = {handle for kind, handle in
               ((e[1], e[2]) for e in cuda.log[:before] if e[0] == "new") if kind == "Stream"}
    assert synced == streams and len(streams) == 3
    assert cuda.live == set()  # every buffer, event, stream and graph, once
    after = len(cuda.log)
    seg.backend.close()  # a second close frees nothing (the fake fails on a double free)
    assert len(cuda.log) == after


@pytest.mark.parametrize("fail", [("Stream", 2), ("HostBuffer", 3), ("DeviceBuffer", 4),
                                  ("Event", 6)])
def test_a_failed_open_frees_what_it_made(rtx_engine, tmp_path, fake_gpu, fail):
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine, fail=fail)
    with pytest.raises(SsrDeployError, match="out of memory"):
        Segmenter.load(engine)
    assert cuda.counts[fail[0]] == fail[1]  # it got that far
    assert cuda.live == set()


def test_every_thread_that_runs_the_engine_is_on_its_device(rtx_engine, tmp_path, fake_gpu):
    """cudaSetDevice is per thread: cuda:1's video thread must not run on device 0."""
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    seg = Segmenter.load(engine, device="cuda:1")
    seg(frame(2))
    seg(frame(3))

    def other_thread():
        seg(frame(4))
        list(seg.predict_stream([frame(5)]))
        cuda.check_calls_on_this_device(1)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    cuda.check_calls_on_this_device(1)
    sets = [entry for entry in cuda.log if entry[0] == "set_device"]
    assert {entry[1] for entry in sets} == {1}
    assert len(sets) == 2 and sets[0][2] != sets[1][2]  # once per thread
    seg.close()


def test_a_refused_capture_runs_without_graphs_and_says_so(rtx_engine, tmp_path, fake_gpu):
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine, fail_capture=True)
    with Segmenter.load(engine, cuda_graph=True) as seg:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert (seg(frame(30)) == 30 % 19).all()
        assert any("CUDA graph capture failed" in str(w.message) for w in caught)
        assert "cudaErrorStreamCaptureUnsupported" in seg.backend.notes[-1]
        assert (seg(frame(31)) == 31 % 19).all()
        assert not seg.backend.cuda_graph and "launch" not in {e[0] for e in cuda.log}


def test_a_static_batch_engine_is_padded_by_bench_profile_and_check(static_engine, tmp_path,
                                                                     fake_gpu):
    engine = as_full_tensorrt(static_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    with Segmenter.load(engine) as seg:
        assert seg.spec.profile[0][0] == seg.spec.profile[2][0] == 4
        assert seg.fixed_batch == 4
        assert (seg(frame(9, 32, 64)) == 9).all()
    assert [e[2][0] for e in cuda.log if e[0] == "execute"] == [4]
    out = tmp_path / "b.json"
    for args in (["bench", str(engine), "--batch", "1", "--iters", "2", "--warmup", "0",
                  "--json", str(out)],
                 ["profile", str(engine), "--iters", "2"],
                 ["export", "check", str(engine), str(static_engine.with_suffix(".onnx")),
                  "-n", "4"]):
        result = CliRunner().invoke(main, args)
        assert "outside the engine's profile" not in result.output, result.output
        if args[0] != "export":  # the fake's labels are not the network's: check fails
            assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["results"][0]["batch"] == 1


def test_the_cli_shows_the_backends_notes(rtx_engine, tmp_path, fake_gpu):
    """An engine tuned on another board of the same chip runs, and bench says so."""
    engine = as_full_tensorrt(rtx_engine, tmp_path, built_on={**H100, "name": "NVIDIA H100 PCIe"})
    fake_gpu(engine)
    result = CliRunner().invoke(main, ["bench", str(engine), "--iters", "1", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "note: m.engine was tuned on NVIDIA H100 PCIe, running on NVIDIA H100 80GB HBM3" \
        in result.output


def test_the_timer_refuses_tensorrt_rtx_on_a_gpu_it_does_not_run_on(monkeypatch):
    """Hopper has no TensorRT-RTX: one line, not an AttributeError at the first part."""
    from ssr_deploy.backends.tensorrt import timer

    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    monkeypatch.setattr(trt_package, "cuda", FakeCuda(H100), raising=False)
    monkeypatch.setattr(timer, "load_tensorrt", lambda: runner.load_tensorrt("tensorrt-rtx"))
    with pytest.raises(SsrDeployError, match=r"TensorRT-RTX \S+ does not run on NVIDIA H100 "
                                             r"80GB HBM3 \(sm_90\).*--backend torch"):
        timer.TensorRTTimer("cuda:0", "fp16", 3)
    ada = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "driver": "13.0"}
    monkeypatch.setattr(trt_package, "cuda", FakeCuda(ada), raising=False)
    clock = timer.TensorRTTimer("cuda:0", "fp16", 3)
    assert clock.settings.compute_capabilities == ("8.9",)  # built for the GPU that runs it
    assert clock.device_label() == "NVIDIA GeForce RTX 4090"


def test_the_timer_says_when_a_parts_engine_does_not_load(monkeypatch):
    """A real part, really built for sm_89; this machine's TensorRT-RTX runtime cannot load
    it (no GPU): one line instead of an AttributeError on None."""
    from ssr_deploy.backends.tensorrt import timer
    from ssr_deploy.latency import LutOptions, export_part, probes
    from tests.latency.test_latency import TINY

    pytest.importorskip("tensorrt_rtx", reason="needs pip install 'ssr-deploy[rtx]'")
    ada = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "driver": "13.0"}
    monkeypatch.setattr(trt_package, "cuda", FakeCuda(ada), raising=False)
    monkeypatch.setattr(timer, "load_tensorrt", lambda: runner.load_tensorrt("tensorrt-rtx"))
    clock = timer.TensorRTTimer("cuda:0", "fp32", 3)
    probe = next(p for p in probes(TINY, LutOptions(size=(32, 64), width_grid=(2, 2, 2),
                                                     check_points=0)) if p.key.startswith("head"))
    inputs = [np.zeros(shape, dtype) for shape, dtype in probe.inputs]
    with pytest.raises(SsrDeployError, match="could not load a part's engine here") as err:
        clock.time(export_part(probe), inputs)
    assert "\n" not in str(err.value)


def test_a_failed_capture_reports_its_own_error(monkeypatch):
    """cuda.Graph over a cudart whose every call is the real one's signature: the error that
    broke a capture is the one raised (ending the capture's own error would hide it), a
    capture the driver invalidates is named, and a graph that will not instantiate is
    destroyed."""
    real = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python comes with [rtx]")
    from ssr_deploy.backends.tensorrt import cuda

    ok, calls, results = real.cudaError_t.cudaSuccess, [], {}

    def fake(name):
        params = list(inspect.signature(getattr(real, name)).parameters)

        def call(*args):
            assert len(args) == len(params), (name, args, params)
            calls.append(name)
            return results.get(name, (ok,))
        return call

    names = ("cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate",
             "cudaGraphDestroy", "cudaGraphExecDestroy")
    cudart = types.SimpleNamespace(**{n: fake(n) for n in names}, **{
        n: getattr(real, n) for n in ("cudaError_t", "cudaStreamCaptureMode",
                                      "cudaGetErrorName", "cudaGetErrorString")})
    monkeypatch.setattr(cuda, "_cudart", lambda: cudart)
    stream = types.SimpleNamespace(handle=7)
    results["cudaStreamEndCapture"] = (real.cudaError_t.cudaErrorStreamCaptureInvalidated, None)

    def failing(s):
        raise SsrDeployError("TensorRT execution failed; see the TensorRT log above")

    with pytest.raises(SsrDeployError, match="TensorRT execution failed"):
        cuda.Graph(stream, failing)
    assert calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture"]
    with pytest.raises(SsrDeployError, match="cudaErrorStreamCaptureInvalidated"):
        cuda.Graph(stream, lambda s: None)
    calls.clear()
    results.update(cudaStreamEndCapture=(ok, "graph"),
                   cudaGraphInstantiate=(real.cudaError_t.cudaErrorInvalidValue, None))
    with pytest.raises(SsrDeployError, match="cudaErrorInvalidValue"):
        cuda.Graph(stream, lambda s: None)
    assert calls == ["cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate",
                     "cudaGraphDestroy"]


def model_batch(seg, blue: int) -> np.ndarray:
    """One frame as the engine takes it (uint8 BGR at the model's size)."""
    return frame(blue, *seg.spec.input.size)[None]


def test_threads_sharing_a_segmenter_each_get_their_own_labels(rtx_engine, tmp_path,
                                                               fake_gpu):
    """The Segmenter is safe across threads: the engine's context and buffers serve one call
    at a time (each execution here takes 1 ms, time for another thread to overwrite them)."""
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, trt = fake_gpu(engine)
    trt.execute_delay = 0.001
    wrong = []
    with Segmenter.load(engine) as seg:
        def worker(colour: int) -> None:
            for _ in range(15):
                if int(seg(frame(colour))[0, 0]) != colour % 19:
                    wrong.append(colour)
            if [int(x[0, 0]) for x in seg.predict_stream(frame(colour) for _ in range(3))] \
                    != [colour % 19] * 3:
                wrong.append(colour)

        threads = [threading.Thread(target=worker, args=(c,)) for c in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert wrong == []


def test_a_call_inside_its_own_stream_is_refused(rtx_engine, tmp_path, fake_gpu):
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    fake_gpu(engine)
    with Segmenter.load(engine) as seg:
        stream = seg.backend.infer_stream([model_batch(seg, 1)])
        next(stream)
        with pytest.raises(SsrDeployError, match="inside its own infer_stream"):
            seg.backend.infer(model_batch(seg, 2))
        stream.close()
        assert (seg(frame(3)) == 3).all()


def test_a_new_thread_with_a_reused_id_is_set_to_the_device(rtx_engine, tmp_path, fake_gpu,
                                                            monkeypatch):
    """CPython reuses thread ids: a thread that starts after another ended may have its id.
    Here every thread has the same id, as the worst case of reuse."""
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    seg = Segmenter.load(engine, device="cuda:1")
    same_id = types.SimpleNamespace(**{name: getattr(threading, name) for name in dir(threading)
                                       if not name.startswith("__")})
    same_id.get_ident = lambda: 1
    monkeypatch.setattr(runner, "threading", same_id)
    errors = []

    def run() -> None:
        try:
            seg(frame(5))
            cuda.check_calls_on_this_device(1)
        except AssertionError as e:
            errors.append(e)

    for _ in range(2):  # one after the other, as a thread pool's replacements start
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    seg.close()
    assert errors == []


def test_an_onnx_on_cuda_n_is_built_on_gpu_n(labels_onnx, tmp_path, fake_gpu, monkeypatch,
                                              rtx_engine):
    """TensorRT builds on the thread's current device: it is set before the build."""
    from ssr_deploy.backends.tensorrt import cache

    engine = as_full_tensorrt(rtx_engine, tmp_path)
    cuda, _ = fake_gpu(engine)
    built_on = []

    def cached_engine(path, builder=None, device=0, folder=None, to_run=False):
        built_on.append((device, getattr(cuda.current, "device", None)))
        return engine

    monkeypatch.setattr(cache, "cached_engine", cached_engine)
    with Segmenter.load(labels_onnx, backend="tensorrt", device="cuda:1") as seg:
        assert (seg(frame(6)) == 6).all()
    assert built_on == [(1, 1)]


def test_layer_times_report_with_cuda_graphs_on(rtx_engine, tmp_path, fake_gpu):
    """A CUDA graph replays on a context of its own: the profiled runs are plain launches on
    the profiled context, so the layers are reported."""
    engine = as_full_tensorrt(rtx_engine, tmp_path)
    fake_gpu(engine)
    with Segmenter.load(engine, cuda_graph=True) as seg:
        batch = model_batch(seg, 7)
        seg.backend.infer(batch)  # a graph is captured and replayed first
        times = seg.backend.layer_times(batch, iters=3)
        assert times.times_ms == {"stages.0.layers.0/node_Conv_1": pytest.approx(1.5)}
        assert (seg(frame(8)) == 8).all()  # and the graphs still run after
