"""cuda-python as the TensorRT backend uses it (no TensorRT needed): buffers, streams, events,
a stream waiting on another, CUDA graphs. Marked ``cuda``: the first thing a GPU run checks."""

import numpy as np
import pytest

pytestmark = pytest.mark.cuda


@pytest.fixture(autouse=True)
def cuda_python():
    pytest.importorskip("cuda.bindings", reason="cuda-python is not installed here")


def test_host_device_round_trip_on_a_stream():
    from ssr_deploy.backends.tensorrt.cuda import DeviceBuffer, HostBuffer, Stream, gpu_info

    info = gpu_info()
    assert info["name"] and "." in info["compute_capability"]
    src = HostBuffer((4, 64, 128, 3), np.uint8)
    dst = HostBuffer((4, 64, 128, 3), np.uint8)
    src.array[...] = np.random.default_rng(0).integers(0, 256, src.array.shape, dtype=np.uint8)
    device = DeviceBuffer(src.nbytes)
    stream = Stream()
    stream.copy_to_device(device.ptr, src.ptr, src.nbytes)
    stream.copy_to_host(dst.ptr, device.ptr, dst.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(src.array, dst.array)
    for resource in (src, dst, device):
        resource.free()
    stream.destroy()


def test_events_time_the_work_between_them():
    from ssr_deploy.backends.tensorrt.cuda import DeviceBuffer, Event, HostBuffer, Stream

    host = HostBuffer((64, 1024, 1024), np.uint8)  # 64 MiB: a copy long enough to time
    device = DeviceBuffer(host.nbytes)
    stream, start, end = Stream(), Event(), Event()
    start.record(stream)
    stream.copy_to_device(device.ptr, host.ptr, host.nbytes)
    end.record(stream)
    end.synchronize()
    ms = end.ms_since(start)
    assert 0.0 < ms < 10_000.0
    for resource in (host, device):
        resource.free()
    for event in (start, end):
        event.destroy()
    stream.destroy()


def test_a_stream_waits_for_an_event_of_another():
    """Upload on one stream, download on another after waiting for the upload's event: the
    bytes that come back are the ones that went up (no wait: the download may read stale)."""
    from ssr_deploy.backends.tensorrt.cuda import DeviceBuffer, Event, HostBuffer, Stream

    src = HostBuffer((32, 1024, 1024), np.uint8)
    dst = HostBuffer((32, 1024, 1024), np.uint8)
    src.array[...] = 7
    device = DeviceBuffer(src.nbytes)
    up, down, uploaded = Stream(), Stream(), Event()
    up.copy_to_device(device.ptr, src.ptr, src.nbytes)
    uploaded.record(up)
    down.wait(uploaded)
    down.copy_to_host(dst.ptr, device.ptr, dst.nbytes)
    down.synchronize()
    assert (dst.array == 7).all()
    for resource in (src, dst, device):
        resource.free()
    uploaded.destroy()
    up.destroy()
    down.destroy()


def test_a_captured_graph_replays_its_copies():
    from ssr_deploy.backends.tensorrt.cuda import DeviceBuffer, Graph, HostBuffer, Stream

    src, dst = HostBuffer((1024,), np.float32), HostBuffer((1024,), np.float32)
    device = DeviceBuffer(src.nbytes)
    stream = Stream()

    def enqueue(s):
        s.copy_to_device(device.ptr, src.ptr, src.nbytes)
        s.copy_to_host(dst.ptr, device.ptr, dst.nbytes)

    graph = Graph(stream, enqueue)
    for value in (1.5, -2.0):  # each launch copies what the host buffer holds now
        src.array[...] = value
        graph.launch(stream)
        stream.synchronize()
        assert (dst.array == value).all()
    graph.destroy()
    graph.destroy()  # a second destroy does nothing
    for resource in (src, dst, device):
        resource.free()
    stream.destroy()


def test_a_capture_that_raises_leaves_the_stream_usable():
    from ssr_deploy.backends.tensorrt.cuda import DeviceBuffer, Graph, HostBuffer, Stream
    from ssr_deploy.errors import SsrDeployError

    stream = Stream()

    def broken(s):
        raise SsrDeployError("TensorRT execution failed")

    with pytest.raises(SsrDeployError, match="TensorRT execution failed"):
        Graph(stream, broken)
    src, dst = HostBuffer((16,), np.int32), HostBuffer((16,), np.int32)
    src.array[...] = np.arange(16)
    device = DeviceBuffer(src.nbytes)
    stream.copy_to_device(device.ptr, src.ptr, src.nbytes)
    stream.copy_to_host(dst.ptr, device.ptr, dst.nbytes)
    stream.synchronize()
    np.testing.assert_array_equal(dst.array, np.arange(16))
    for resource in (src, dst, device):
        resource.free()
    stream.destroy()
