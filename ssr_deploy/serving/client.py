"""Talking to ``ssr-deploy serve`` (or any Triton serving our model) with NVIDIA's
``tritonclient``: frames in, label maps out, over HTTP or gRPC.

    client = SegmentationClient("localhost:8001", protocol="grpc")
    labels = client.segment(frames)          # (batch, H, W, 3) uint8 BGR -> (batch, H, W)

``load`` drives it from many threads at once and reports latency and throughput.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError


class SegmentationClient:
    def __init__(self, url: str, model: str = "ssrnet", protocol: str = "http",
                 timeout: float = 60.0) -> None:
        try:
            if protocol == "grpc":
                import tritonclient.grpc as tc
            elif protocol == "http":
                import tritonclient.http as tc
            else:
                raise SsrDeployError(f"protocol {protocol!r}: use http or grpc")
        except ImportError:
            raise SsrDeployError("the client needs tritonclient: pip install "
                                 "'ssr-deploy[serve]'") from None
        self.tc, self.protocol, self.model, self.timeout = tc, protocol, model, timeout
        kwargs = ({"network_timeout": timeout, "connection_timeout": timeout}
                  if protocol == "http" else {})
        self.client = tc.InferenceServerClient(url, **kwargs)

    def ready(self) -> bool:
        return bool(self.client.is_server_ready()) and bool(
            self.client.is_model_ready(self.model))

    def segment(self, frames: np.ndarray) -> np.ndarray:
        """(batch, H, W, 3) uint8 BGR (or one (H, W, 3) frame) -> label maps of the same
        batch and size. The array is sent as it is (its dtype declared): what the server
        refuses raises tritonclient's InferenceServerException."""
        from tritonclient.utils import np_to_triton_dtype

        frames = np.asarray(frames)
        single = frames.ndim == 3
        batch = frames[None] if single else frames
        tensor = self.tc.InferInput("images", list(batch.shape), np_to_triton_dtype(batch.dtype))
        if self.protocol == "http":
            tensor.set_data_from_numpy(batch, binary_data=True)
            output = self.tc.InferRequestedOutput("labels", binary_data=True)
        else:
            tensor.set_data_from_numpy(batch)
            output = self.tc.InferRequestedOutput("labels")
        kwargs = {"client_timeout": self.timeout} if self.protocol == "grpc" else {}
        result = self.client.infer(self.model, [tensor], outputs=[output], **kwargs)
        labels = result.as_numpy("labels")
        return labels[0] if single else labels

    def close(self) -> None:
        self.client.close()


def load(url: str, frames: np.ndarray, clients: int = 8, requests: int = 25,
         model: str = "ssrnet", protocol: str = "grpc", expected: np.ndarray | None = None
         ) -> dict[str, Any]:
    """``clients`` threads, each with its own connection, each sending ``requests`` requests
    of ``frames`` (one (H, W, 3) frame or a batch) back to back. Returns latency percentiles,
    throughput, and every error (and, given ``expected``, every wrong answer)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        client = SegmentationClient(url, model, protocol)
        try:
            for _ in range(requests):
                start = time.perf_counter()
                try:
                    labels = client.segment(frames)
                except Exception as e:  # noqa: BLE001 - counted, not raised
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    if expected is not None and not np.array_equal(labels, expected):
                        errors.append("wrong labels")
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    per_request = 1 if np.asarray(frames).ndim == 3 else len(frames)
    return {"clients": clients, "requests_per_client": requests, "protocol": protocol,
            "requests": clients * requests, "ok": len(latencies), "errors": errors,
            "seconds": wall, "requests_per_s": len(latencies) / wall,
            "frames_per_s": len(latencies) * per_request / wall,
            "latency_ms": {"mean": float(ms.mean()), "p50": float(np.percentile(ms, 50)),
                           "p90": float(np.percentile(ms, 90)),
                           "p99": float(np.percentile(ms, 99)), "max": float(ms.max())}}
