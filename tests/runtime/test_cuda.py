"""cuda-python buffers and streams (no TensorRT needed). Marked ``cuda``."""

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
