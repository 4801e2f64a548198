"""The TensorRT backend's CUDA runner on a real GPU, without TensorRT: its buffers, streams,
events, double buffering and CUDA-graph capture and replay through cuda-python, with a
stand-in engine whose execution is real device work (``standin_tensorrt``). Outputs are
checked frame by frame across batch sizes, shape changes, threads and close(). Marked
``cuda`` (part of benchmarks/gpu_check.sh); ``test_the_standin_matches_its_sidecar`` checks
the stand-in itself anywhere."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.spec import ModelSpec, file_sha256, sidecar_path
from tests.runtime import standin_tensorrt

PROFILE = {"min": [1, 32, 64, 3], "opt": [4, 64, 128, 3], "max": [8, 128, 256, 3]}


def engine_files(labels_onnx, folder, gpu: dict[str, str]):
    """An engine file and its sidecar as full TensorRT would write them on ``gpu``, for the
    shared labels ONNX (dynamic batch and size)."""
    engine = folder / "standin.engine"
    engine.write_bytes(b"ftrt" + bytes(60))  # any bytes but TensorRT-RTX's header
    meta = read_sidecar(labels_onnx)
    meta.update(profile=PROFILE, onnx=labels_onnx.name, file=engine.name,
                sha256=file_sha256(engine),
                tensorrt={"builder": "tensorrt", "version": standin_tensorrt.VERSION,
                          "gpu": {k: gpu[k] for k in ("name", "compute_capability")}})
    sidecar_path(engine).write_text(json.dumps(meta))
    return engine


def io_of(engine) -> list[tuple[str, bool, str, tuple[int, ...]]]:
    spec = ModelSpec.load(engine)
    return [(spec.input.name, True, spec.input.dtype, tuple(spec.input.shape)),
            (spec.output.name, False, spec.output.dtype, tuple(spec.output.shape))]


def test_the_standin_matches_its_sidecar(labels_onnx, tmp_path):
    """What the backend reads of the stand-in engine (its I/O) is what the sidecar says."""
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed here")
    from ssr_deploy.backends.tensorrt.engine import check_engine_io, engine_io

    engine = engine_files(labels_onnx, tmp_path, {"name": "any", "compute_capability": "9.0"})
    trt = standin_tensorrt.module(io_of(engine))
    check_engine_io(ModelSpec.load(engine), engine_io(trt, trt.Runtime(None)
                                                      .deserialize_cuda_engine(b"")), "x")
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    assert standin_tensorrt.expected_labels(frames)[1, 0, 0] == frames[1].reshape(-1)[0]


@pytest.fixture
def backend(labels_onnx, tmp_path, monkeypatch):
    """(open(**options) -> TensorRTBackend on GPU 0, the stand-in module)."""
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed here")
    from ssr_deploy.backends.tensorrt import cuda, runner
    from ssr_deploy.backends.tensorrt.library import TensorRT

    gpu, why = cuda.find_gpu(0)
    if gpu is None:
        pytest.skip(f"no GPU: {why}")
    engine = engine_files(labels_onnx, tmp_path, gpu)
    trt = standin_tensorrt.module(io_of(engine))
    monkeypatch.setattr(runner, "load_tensorrt", lambda builder=None: TensorRT("tensorrt", trt))
    opened = []

    def open_(**options):
        opened.append(runner.TensorRTBackend(engine, "cuda", 0,
                                             runner.TensorRTOptions(**options)))
        return opened[-1]

    yield open_, trt
    for b in opened:
        b.close()


def batch(n: int, h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


SHAPES = [(1, 64, 128), (3, 64, 128), (8, 128, 256), (2, 32, 64), (1, 64, 128), (5, 96, 192)]


@pytest.mark.cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_batches_of_every_size_and_shape_come_back_right(backend, cuda_graph):
    open_, trt = backend
    b = open_(cuda_graph=cuda_graph)
    for k, shape in enumerate(SHAPES * 2):  # each shape twice: a graph is replayed
        frames = batch(*shape, seed=k)
        np.testing.assert_array_equal(b.infer(frames), standin_tensorrt.expected_labels(frames))
    if cuda_graph:  # one capture per shape, replays after (no new executions)
        assert b.cuda_graph and len(b._graphs) == len(set(SHAPES))
    else:
        assert b.last_timing["compute_ms"] >= 0 and b.last_timing["copy_ms"] > 0


@pytest.mark.cuda
def test_a_stream_is_double_buffered_and_in_order(backend):
    open_, trt = backend
    b = open_()
    batches = [batch(*SHAPES[k % len(SHAPES)], seed=100 + k) for k in range(12)]
    outs = list(b.infer_stream(iter(batches)))
    assert len(outs) == len(batches)
    for frames, labels in zip(batches, outs, strict=True):
        np.testing.assert_array_equal(labels, standin_tensorrt.expected_labels(frames))
    streams = {s for s, _ in trt.executions}
    assert streams == {b.compute.ptr}  # executions on compute; copies on upload/download


@pytest.mark.cuda
def test_threads_sharing_the_backend_each_get_their_own_frames(backend):
    open_, _ = backend
    b = open_(cuda_graph=True)
    wrong = []

    def worker(seed: int) -> None:
        for k in range(20):
            frames = batch(*SHAPES[(seed + k) % len(SHAPES)], seed=1000 * seed + k)
            if not np.array_equal(b.infer(frames), standin_tensorrt.expected_labels(frames)):
                wrong.append((seed, k))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


@pytest.mark.cuda
def test_close_frees_everything_once_and_a_new_backend_runs(backend):
    open_, _ = backend
    from ssr_deploy.backends.tensorrt import cuda

    free_before = cuda.check(cuda._cudart().cudaMemGetInfo())[0]
    b = open_(cuda_graph=True)
    frames = batch(2, 64, 128, seed=5)
    b.infer(frames)
    list(b.infer_stream([frames, frames]))
    b.close()
    b.close()  # a second close frees nothing
    assert b.slots == () and b.compute is None and b._graphs == {}
    free_after = cuda.check(cuda._cudart().cudaMemGetInfo())[0]
    assert free_before - free_after < 8 << 20  # the buffers (about 2 MB) are back
    again = open_()
    np.testing.assert_array_equal(again.infer(frames), standin_tensorrt.expected_labels(frames))
