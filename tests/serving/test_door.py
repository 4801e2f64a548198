"""The front door under a hostile client, against a real `serve` (Triton behind uvicorn and
grpc.aio): the fifth hostile round's ways in (S1-S8), its hang (H1), traceback (T2) and wrong
result (W1), and the once-seen cases. Each must end in a status a client library expects, the
same Triton process serving on, and honest requests answered."""

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ssr_deploy.serving.triton import TritonServer, free_port, is_ready, tcp_ports
from tests.serving.test_serve import INSTALL, _export, _frames  # noqa: F401 - skips as it does
from tools.hostile_door import raw  # the hostile harness's raw socket client

grpc = pytest.importorskip("grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ssr_deploy.serving.client import SegmentationClient  # noqa: E402

HUGE = json.dumps({"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3],
                               "datatype": "UINT8", "data": [1, 2, 3]}]}).encode()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("door"), (32, 64))


@pytest.fixture(scope="module")
def server(model):
    with TritonServer(model, http_port=free_port(), grpc_port=free_port(),
                      metrics_port=free_port()) as s:
        yield s




def _post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}",
             "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _serves_on(server, pid: int) -> None:
    assert server.process.poll() is None and server.process.pid == pid
    assert SegmentationClient(server.url).segment(_frames(1)).shape == (1, 48, 80)
    client = SegmentationClient(server.grpc_url, protocol="grpc")
    assert client.segment(_frames(1)).shape == (1, 48, 80)
    client.close()


@pytest.mark.parametrize("body", [
    # S1: the first "shape" is 30 GB, the last 3 values: Triton read the first, we the last
    b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], "shape": [1, 1, 1, 3], '
    b'"datatype": "UINT8", "data": [1, 2, 3]}]}',
    # S2: the same with "inputs"
    b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], "datatype": "UINT8", '
    b'"data": [1, 2, 3]}], "inputs": [{"name": "images", "shape": [1, 1, 1, 3], '
    b'"datatype": "UINT8", "data": [1, 2, 3]}]}',
])
def test_keys_given_twice_are_refused_and_triton_serves_on(server, body):
    pid = server.process.pid
    answer = raw(server.http_port, _post("/v2/models/ssrnet/infer", body))
    assert answer.startswith(b"HTTP/1.1 400") and b"twice; send each key once" in answer
    _serves_on(server, pid)


def test_absolute_form_targets_smuggling_and_malformed_heads_never_reach_triton(server):
    pid = server.process.pid
    cases = {
        # S3: an absolute-form target is no path of ours: it reaches nothing
        "absolute": (_post("http://127.0.0.1/v2/models/ssrnet/infer", HUGE), b"404"),
        # S4: chunked then identity, with a Content-Length, and a request behind it
        "smuggled": (b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                     b"Content-Length: 5\r\n\r\n0\r\n\r\n" + _post("/v2/models/ssrnet/infer",
                                                                  HUGE), b"400"),
        "Content-Length 1_9_0": (b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Length: 1_9_0\r\n\r\n", b"400"),
        "Content-Length +5": (b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: +5\r\n\r\nhello", b"400"),
        "lowercase method": (b"get /v2/health/ready HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n", b"405"),
        "generate": (_post("/v2/models/ssrnet/generate", b"{}"), b"404"),
        "huge head": (b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 100_000
                      + b"\r\n\r\n", b"431"),
        "NUL in the name": (b"GET /v2/models/ssrnet%00 HTTP/1.1\r\nHost: x\r\n"
                            b"Connection: close\r\n\r\n", b"404"),
    }
    for name, (request, status) in cases.items():
        answer = raw(server.http_port, request)
        assert answer.startswith(b"HTTP/1.1 " + status), (name, answer[:200])
        assert answer.count(b"HTTP/1.1 ") == 1, (name, answer)  # nothing smuggled answered
    _serves_on(server, pid)


def test_an_http_1_0_health_check_is_answered_and_closed(server):
    """H1: HAProxy's default check is HTTP/1.0; it hung before."""
    answer = raw(server.http_port, b"GET /v2/health/ready HTTP/1.0\r\n\r\n", wait=20)
    assert answer.startswith(b"HTTP/1.1 200") and not answer.endswith(b"<still open>")


def test_declared_bodies_never_sent_hold_nothing(server):
    """S5: heads declaring 4 MiB with no body took the in-flight budget; now bytes are
    counted as they arrive, and honest HTTP, gRPC and health calls are answered while the
    heads stay open."""
    head = (b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 4194304\r\n\r\n")
    held = [socket.create_connection(("127.0.0.1", server.http_port)) for _ in range(8)]
    try:
        for s in held:
            s.sendall(head)
        time.sleep(0.5)
        client = SegmentationClient(server.grpc_url, protocol="grpc", timeout=20)
        assert client.segment(_frames(1)).shape == (1, 48, 80)
        client.close()
        assert SegmentationClient(server.url, timeout=20).segment(_frames(1)).shape == (
            1, 48, 80)
        assert is_ready(server.http_port)
    finally:
        for s in held:
            s.close()


def test_idle_streams_hold_no_thread(server):
    """S6: 16 idle ModelStreamInfer streams held all 16 workers of the threaded proxy."""
    channel = grpc.insecure_channel(server.grpc_url)
    stop = threading.Event()

    def nothing():
        stop.wait()
        return
        yield

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    streams = [stub.ModelStreamInfer(nothing()) for _ in range(32)]
    try:
        time.sleep(0.5)
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=20).ready
        client = SegmentationClient(server.grpc_url, protocol="grpc", timeout=20)
        assert client.segment(_frames(1)).shape == (1, 48, 80)
        client.close()
    finally:
        stop.set()
        for s in streams:
            s.cancel()
        channel.close()


def test_a_refused_request_in_a_stream_is_answered_and_the_stream_goes_on(server):
    frames = _frames(1)
    good = service_pb2.ModelInferRequest(model_name="ssrnet", raw_input_contents=[
        frames.tobytes()])
    good.inputs.add(name="images", datatype="UINT8", shape=list(frames.shape))
    bad = service_pb2.ModelInferRequest(model_name="ssrnet")
    bad.inputs.add(name="images", datatype="UINT8", shape=[1, 8200, 8200, 3])
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = list(stub.ModelStreamInfer(iter([good, bad, good]), timeout=60))
    errors = [a.error_message for a in answers if a.error_message]
    assert len(answers) == 3 and len(errors) == 1 and "H and W 1 to 8192" in errors[0]


def test_no_way_around_the_door(server):
    """S7: no secret on Triton's command line (anyone reads /proc/PID/cmdline); a client's
    admin header opens nothing; Triton listens on no TCP port but its metrics, and its
    socket is in a folder only this user can enter."""
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert not [a for a in cmdline if b"restricted" in a or b"secret" in a or b"admin" in a]
    assert b"--allow-http=false" in cmdline
    answer = raw(server.http_port, b"GET /v2/models/ssrnet/stats HTTP/1.1\r\nHost: x\r\n"
                                   b"ssr-deploy-admin: anything\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403")
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=10,
                                 metadata=[("ssr-deploy-admin", "anything")])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    socket_path = Path(server.upstream.removeprefix("unix:"))
    assert socket_path.parent.stat().st_mode & 0o077 == 0
    ports = tcp_ports(server.process.pid)
    assert ports == {server.metrics_port}, ports


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_another_local_user_cannot_reach_triton(server):
    socket_path = server.upstream.removeprefix("unix:")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # as nobody: only a socket call, then out
        outcome = b"error"
        try:
            os.setgid(65534)
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(socket_path)
            outcome = b"reached"
        except PermissionError:
            outcome = b"denied"
        finally:
            os.write(write, outcome)
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 16) == b"denied"
    os.close(read)


def test_a_nul_in_a_grpc_model_name_is_another_model(server):
    """W1: "ssrnet\\x00" passed the old guard as another model and Triton cut the name:
    an 8200-pixel side went past the 8192 limit."""
    request = service_pb2.ModelInferRequest(model_name="ssrnet\x00", raw_input_contents=[
        bytes(8200 * 8 * 3)])
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 8200, 8, 3])
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert "unknown model 'ssrnet\\x00'" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="ssrnet\x00"), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def _serve(model, *args, preexec=None):
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ssr_deploy", "serve", str(model),
                             "--http-port", str(http), "--grpc-port", str(grpc_port),
                             "--metrics-port", str(metrics), *args], stderr=subprocess.PIPE,
                            text=True, preexec_fn=preexec,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while not is_ready(http):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.2)
    return proc, http, grpc_port


def test_sigterm_mid_body_is_quiet(model):
    """T2: SIGTERM with a request half sent printed asyncio CancelledError tracebacks."""
    proc, http, _ = _serve(model)
    half = socket.create_connection(("127.0.0.1", http))
    half.sendall(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Length: 1000\r\n\r\n" + b"{" * 10)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=120) == 0
    finally:
        half.close()
    err = proc.stderr.read()
    assert "Traceback" not in err and "CancelledError" not in err, err


def test_idle_sockets_past_the_open_files_limit_starve_nobody(model):
    """S8: under ``ulimit -n 256``, 300 silent connections starved every honest request and
    filled the log with "Too many open files" tracebacks. Now each front holds at most its
    share of the limit, closes the connection idle longest for a new one, and closes silent
    ones after the head timeout; honest requests are answered, the log stays short."""
    limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))  # noqa: E731
    proc, http, grpc_port = _serve(model, preexec=limit)
    idle = []
    try:
        grpc_client = SegmentationClient(f"127.0.0.1:{grpc_port}", protocol="grpc", timeout=30)
        grpc_client.segment(_frames(1))  # its channel open before (gRPC's cap refuses new
        for i in range(300):             # connections while silent ones hold it)
            port = http if i % 2 else grpc_port
            idle.append(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1)
        fresh = SegmentationClient(f"127.0.0.1:{http}", timeout=30)  # connects during it
        for _ in range(5):
            assert fresh.segment(_frames(1)).shape == (1, 48, 80)
            assert grpc_client.segment(_frames(1)).shape == (1, 48, 80)
        grpc_client.close()
        dropped = {http: 0, grpc_port: 0}
        for s in idle:  # silent sockets are closed (gRPC's beyond its cap wait unaccepted)
            s.settimeout(15)
            try:
                dropped[s.getpeername()[1]] += s.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                dropped[s.getpeername()[1]] += 1
        assert dropped[http] == 150 and dropped[grpc_port] > 0, dropped
    finally:
        for s in idle:
            s.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    err = proc.stderr.read()
    assert "Traceback" not in err and len(err.splitlines()) < 40, err[-2000:]


def test_the_door_answers_json_and_binary_like_triton(server, model):
    """KServe v2 over HTTP, translated: JSON data in and out, binary in and out, the request
    id echoed, metadata and readiness."""
    import urllib.request

    frames = _frames(1, 8, 8)
    body = json.dumps({"id": "r1", "inputs": [{"name": "images", "shape": [1, 8, 8, 3],
                                               "datatype": "UINT8",
                                               "data": frames.ravel().tolist()}]}).encode()
    request = urllib.request.Request(f"http://{server.url}/v2/models/ssrnet/infer", data=body)
    with urllib.request.urlopen(request, timeout=30) as r:
        answer = json.loads(r.read())
    labels = SegmentationClient(server.url).segment(frames)
    assert answer["id"] == "r1" and answer["outputs"][0]["shape"] == [1, 8, 8]
    np.testing.assert_array_equal(np.array(answer["outputs"][0]["data"]).reshape(1, 8, 8),
                                  labels)
    with urllib.request.urlopen(f"http://{server.url}/v2/models/ssrnet", timeout=30) as r:
        meta = json.loads(r.read())
    assert meta["inputs"][0]["shape"] == [-1, -1, -1, 3] and meta["versions"] == ["1"]
    with urllib.request.urlopen(f"http://{server.url}/v2/models/ssrnet/ready", timeout=30) as r:
        assert r.status == 200
    with pytest.raises(InferenceServerException, match="unknown model 'other'"):
        SegmentationClient(server.url, model="other").segment(frames)
    big = _frames(1, 256, 512)  # head and 393 KB of body arrive in one read
    assert SegmentationClient(server.url).segment(big).shape == (1, 256, 512)
