"""The fifth hostile round, as classes of its own for tools/hostile.py: the front door of a
real `serve` (S1-S8, H1, T2, W1 and the cases seen once), run as a hostile client would, and
the cases beside the door (D1, H2-H4, T1, W2-W4, U1, U2) as the CLI cases are. Each outcome
is classified as hostile.py's are: clean, traceback, wrong result, unclear error, data lost,
hang or out of memory.

    python tools/hostile.py --only r5          # these alone
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

HUGE = json.dumps({"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3],
                               "datatype": "UINT8", "data": [1, 2, 3]}]}).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`ssr-deploy serve MODEL` in a child process, as a user runs it."""

    def __init__(self, model: Path, limit_files: int | None = None) -> None:
        self.http, self.grpc, self.metrics = _free_port(), _free_port(), _free_port()
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit_files,) * 2)
                   ) if limit_files else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ssr_deploy", "serve", str(model), "--http-port",
             str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics)],
            stderr=subprocess.PIPE, text=True, preexec_fn=preexec,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 120
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"serve did not start: {self.proc.stderr.read()[-500:]}")
            time.sleep(0.2)
        self.triton = self._triton_pid()

    def alive(self) -> bool:
        return self.proc.poll() is None and self._triton_pid() == self.triton and self.ready()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready",
                                        timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def _triton_pid(self) -> int | None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)
                if int(fields[1].split()[1]) == self.proc.pid and "tritonserver" in fields[0]:
                    return int(stat.parent.name)
            except (OSError, IndexError, ValueError):
                continue
        return None

    def honest(self, frames: np.ndarray, timeout: float = 20) -> bool:
        """One HTTP and one gRPC inference answered, with the right shape."""
        from ssr_deploy.serving.client import SegmentationClient

        for protocol, port in (("http", self.http), ("grpc", self.grpc)):
            client = SegmentationClient(f"127.0.0.1:{port}", protocol=protocol,
                                        timeout=timeout)
            try:
                if client.segment(frames).shape != frames.shape[:3]:
                    return False
            finally:
                client.close()
        return True

    def stop(self) -> str:
        """SIGTERM; its stderr."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read()


def raw(port: int, data: bytes, wait: float = 20.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(1 << 16):
                out += chunk
        except TimeoutError:
            out += b"<still open>"
    return out


def post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


def _answered(status: bytes) -> Callable:
    """A raw request's check: exactly one answer, with ``status``; Triton alive after."""
    def check(served: Served, answer: bytes) -> tuple[str, str]:
        if answer.count(b"HTTP/1.1 ") != 1:
            return "wrong result", f"{answer.count(b'HTTP/1.1 ')} answers: {answer[:120]!r}"
        if not answer.startswith(b"HTTP/1.1 " + status):
            return "unclear error", f"answered {answer[:40]!r}, expected {status.decode()}"
        return "clean", ""
    return check


def door_cases(frames: np.ndarray) -> list[tuple[str, str, Callable[[Served], tuple]]]:
    """(class, name, case(served) -> (outcome, detail)) against one running server."""
    def raw_case(request: bytes, status: bytes):
        return lambda s: _answered(status)(s, raw(s.http, request))

    dup_shape = (b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], "shape": '
                 b'[1, 1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}')
    dup_inputs = (b'{"inputs": [{"name": "images", "shape": [1, 100000, 100000, 3], '
                  b'"datatype": "UINT8", "data": [1, 2, 3]}], "inputs": [{"name": "images", '
                  b'"shape": [1, 1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}')
    smuggled = (b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                b"chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
                + post("/v2/models/ssrnet/infer", HUGE))
    out = [
        ("r5 front door", "S1 a JSON body naming \"shape\" twice",
         raw_case(post("/v2/models/ssrnet/infer", dup_shape), b"400")),
        ("r5 front door", "S2 a JSON body naming \"inputs\" twice",
         raw_case(post("/v2/models/ssrnet/infer", dup_inputs), b"400")),
        ("r5 front door", "S3 an absolute-form target",
         raw_case(post("http://127.0.0.1/v2/models/ssrnet/infer", HUGE), b"404")),
        ("r5 front door", "S4 chunked then identity with a Content-Length, a request behind",
         raw_case(smuggled, b"400")),
        ("r5 front door", "S5 heads declaring 4 MiB, never their bodies",
         lambda s: _held_heads(s, frames)),
        ("r5 front door", "S6 32 idle ModelStreamInfer streams",
         lambda s: _idle_streams(s, frames)),
        ("r5 front door", "S7 a secret on Triton's command line, an admin header, its ports",
         _around_the_door),
        ("r5 front door", "H1 an HTTP/1.0 health check",
         lambda s: ("clean", "") if raw(s.http, b"GET /v2/health/ready HTTP/1.0\r\n\r\n")
         .startswith(b"HTTP/1.1 200") else ("hang or out of memory", "no answer")),
        ("r5 front door", "W1 a NUL in the gRPC model name, an 8200-pixel side",
         _nul_name),
        ("r5 seen once", "Content-Length: 1_9_0",
         raw_case(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1_9_0"
                  b"\r\n\r\n", b"400")),
        ("r5 seen once", "Content-Length: +5",
         raw_case(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\nContent-Length: +5"
                  b"\r\n\r\nhello", b"400")),
        ("r5 seen once", "a bare-LF header line",
         raw_case(b"GET /v2/health/ready HTTP/1.1\nHost: x\nConnection: close\n\n", b"200")),
        ("r5 seen once", "a lowercase method",
         raw_case(b"get /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                  b"405")),
        ("r5 seen once", "/v2/models/ssrnet/generate",
         raw_case(post("/v2/models/ssrnet/generate", b"{}"), b"404")),
        ("r5 seen once", "gRPC uint_contents [256, 99999] for UINT8", _uint_contents),
    ]
    return out


def _grpc_stub(served: Served):
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{served.grpc}")
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _held_heads(served: Served, frames) -> tuple[str, str]:
    held = [socket.create_connection(("127.0.0.1", served.http)) for _ in range(8)]
    try:
        for s in held:
            s.sendall(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: 4194304\r\n\r\n")
        start = time.monotonic()
        ok = served.honest(frames) and served.ready()
        return ("clean", "") if ok else ("wrong result", "an honest request failed")
    except Exception as e:  # noqa: BLE001 - a timeout is the hang this case looks for
        return "hang or out of memory", f"{type(e).__name__} after {time.monotonic() - start:.0f} s"
    finally:
        for s in held:
            s.close()


def _idle_streams(served: Served, frames) -> tuple[str, str]:
    from tritonclient.grpc import service_pb2

    channel, stub = _grpc_stub(served)
    stop = threading.Event()

    def nothing():
        stop.wait()
        return
        yield

    streams = [stub.ModelStreamInfer(nothing()) for _ in range(32)]
    try:
        if not stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=20).ready:
            return "wrong result", "not ready"
        return ("clean", "") if served.honest(frames) else ("wrong result", "honest failed")
    except Exception as e:  # noqa: BLE001
        return "hang or out of memory", f"{type(e).__name__}"
    finally:
        stop.set()
        for s in streams:
            s.cancel()
        channel.close()


def _around_the_door(served: Served) -> tuple[str, str]:
    import grpc
    from tritonclient.grpc import service_pb2

    cmdline = Path(f"/proc/{served.triton}/cmdline").read_bytes().split(b"\0")
    if [a for a in cmdline if b"restricted" in a or b"admin" in a]:
        return "wrong result", "a secret on Triton's command line"
    answer = raw(served.http, b"GET /v2/models/ssrnet/stats HTTP/1.1\r\nHost: x\r\n"
                              b"ssr-deploy-admin: x\r\nConnection: close\r\n\r\n")
    if not answer.startswith(b"HTTP/1.1 403"):
        return "wrong result", f"a closed API answered {answer[:30]!r}"
    channel, stub = _grpc_stub(served)
    try:
        stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=10,
                             metadata=[("ssr-deploy-admin", "x")])
        return "wrong result", "the repository index opened"
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.PERMISSION_DENIED:
            return "unclear error", e.code().name
    finally:
        channel.close()
    listening = _tcp_ports(served.triton)
    if listening - {served.metrics}:
        return "wrong result", f"Triton listens on TCP {sorted(listening)}"
    return "clean", ""


def _tcp_ports(pid: int) -> set[int]:
    """ssr_deploy.serving.triton.tcp_ports, kept here: the harness also runs against checkouts
    from before it existed (the "before" column)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


def _grpc_infer_error(served: Served, request) -> tuple[str, str] | None:
    import grpc

    channel, stub = _grpc_stub(served)
    try:
        stub.ModelInfer(request, timeout=30)
        return None
    except grpc.RpcError as e:
        return e.code().name, e.details()
    finally:
        channel.close()


def _nul_name(served: Served) -> tuple[str, str]:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="ssrnet\x00", raw_input_contents=[
        bytes(8200 * 8 * 3)])
    request.inputs.add(name="images", datatype="UINT8", shape=[1, 8200, 8, 3])
    error = _grpc_infer_error(served, request)
    if error is None:
        return "wrong result", "an 8200-pixel side was run"
    return ("clean", "") if error[0] == "NOT_FOUND" else ("unclear error", error[0])


def _uint_contents(served: Served) -> tuple[str, str]:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="ssrnet")
    tensor = request.inputs.add(name="images", datatype="UINT8", shape=[1, 1, 2, 3])
    tensor.contents.uint_contents.extend([256, 99999, 0, 0, 0, 0])
    error = _grpc_infer_error(served, request)
    if error is None:
        return "wrong result", "values past 255 were taken as UINT8"
    return ("clean", "") if error[0] == "INVALID_ARGUMENT" else ("unclear error", error[0])


def own_server_cases(model: Path, frames) -> list[tuple[str, str, Callable[[], tuple]]]:
    """Cases that need a server of their own (a limit, a signal)."""
    def open_files() -> tuple[str, str]:
        from ssr_deploy.serving.client import SegmentationClient

        served = Served(model, limit_files=256)
        idle = []
        grpc_client = SegmentationClient(f"127.0.0.1:{served.grpc}", protocol="grpc",
                                         timeout=30)
        try:  # a gRPC client's channel stays open; a new HTTP client connects during it
            warm = grpc_client.segment(frames).shape == frames.shape[:3]
            for i in range(300):
                idle.append(socket.create_connection(
                    ("127.0.0.1", served.http if i % 2 else served.grpc)))
            time.sleep(1)
            http_client = SegmentationClient(f"127.0.0.1:{served.http}", timeout=30)
            ok = warm and all(c.segment(frames).shape == frames.shape[:3]
                              for c in (http_client, grpc_client) for _ in range(3))
        except Exception as e:  # noqa: BLE001
            return "hang or out of memory", type(e).__name__
        finally:
            grpc_client.close()
            for s in idle:
                s.close()
            log = served.stop()
        if "Traceback" in log or len(log.splitlines()) > 40:
            return "traceback", f"{len(log.splitlines())} log lines"
        return ("clean", "") if ok else ("wrong result", "an honest request failed")

    def sigterm_mid_body() -> tuple[str, str]:
        served = Served(model)
        half = socket.create_connection(("127.0.0.1", served.http))
        half.sendall(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1000\r\n\r\n{{{")
        time.sleep(0.5)
        log = served.stop()
        half.close()
        if "Traceback" in log or "CancelledError" in log:
            return "traceback", log.strip().splitlines()[-1][:160]
        return ("clean", "") if served.proc.returncode == 0 else (
            "unclear error", f"exit {served.proc.returncode}")

    return [("r5 front door", "S8 300 silent sockets under ulimit -n 256", open_files),
            ("r5 front door", "T2 SIGTERM with a request mid-body", sigterm_mid_body)]


def run(work: Path, only: str | None = None) -> list[dict]:
    """Every door case against servers of ``work/in/m.onnx``; results as hostile.py's."""
    from ssr_deploy.data.synthetic import street_frames

    model = work / "in" / "m.onnx"
    frames = np.stack(street_frames(1, 48, 80, seed=3))
    results = []
    wanted = [c for c in door_cases(frames) if not only or only in c[0] + c[1]]
    own = [c for c in own_server_cases(model, frames) if not only or only in c[0] + c[1]]
    served = None
    try:
        for cls, name, case in wanted:
            if served is None or not served.alive():  # a case that killed it: a fresh one
                if served is not None:
                    served.stop()
                served = Served(model)
            results.append(_one(cls, name, lambda case=case, s=served: case(s), served))
    finally:
        if served is not None:
            served.stop()
    for cls, name, case in own:
        results.append(_one(cls, name, case, None))
    return results


def _one(cls: str, name: str, case: Callable[[], tuple], served: Served | None) -> dict:
    try:
        outcome, detail = case()
    except Exception as e:  # noqa: BLE001 - the harness reports, never stops
        outcome, detail = "traceback", f"{type(e).__name__}: {str(e)[:160]}"
    if served is not None and outcome == "clean" and not served.alive():
        outcome, detail = "wrong result", "Triton stopped or was restarted"
    print(f"{outcome:>22}  {cls}: {name}", flush=True)
    return {"class": cls, "case": name, "outcome": outcome, "detail": detail}


def beside_cases(work: Path) -> list[tuple[str, str, Callable[[], tuple]]]:
    """The round's cases beside the door that are not a command line: the engine cache (H2,
    W2, W3) and the Segmenter across threads (U1)."""
    model = work / "in" / "m.onnx"

    def engine(folder: Path):
        from ssr_deploy.export import engine_for

        return engine_for(model, "fp32", builder="tensorrt-rtx", compute_capability="8.9",
                          cache_dir=folder)

    def fifo_entry() -> tuple[str, str]:
        first = engine(work / "cache-h2")
        first.unlink()
        os.mkfifo(first)
        result: list = []
        thread = threading.Thread(target=lambda: result.append(engine(work / "cache-h2")),
                                  daemon=True)
        thread.start()
        thread.join(120)
        if thread.is_alive():
            return "hang or out of memory", "engine_for blocked on the FIFO"
        return ("clean", "") if result and result[0].is_file() else ("wrong result", "")

    def planted() -> tuple[str, str]:
        from ssr_deploy.spec import file_sha256, sidecar_path

        entry = engine(work / "cache-w2")
        side = sidecar_path(entry)
        meta = json.loads(side.read_text())
        entry.write_bytes(entry.read_bytes()[:-16] + bytes(16))  # another engine's bytes
        meta["sha256"] = file_sha256(entry)
        side.write_text(json.dumps(meta))
        planted_bytes = entry.read_bytes()
        again = engine(work / "cache-w2")
        return ("clean", "") if again.read_bytes() != planted_bytes else (
            "wrong result", "the planted engine was used")

    def relative_xdg() -> tuple[str, str]:
        from ssr_deploy.io import cache_root

        before = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = "relative/cache"
        try:
            return ("clean", "") if cache_root().is_absolute() else (
                "wrong result", str(cache_root()))
        finally:
            if before is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = before

    def close_while_running() -> tuple[str, str]:
        from ssr_deploy.errors import UsageError
        from ssr_deploy.runtime.segmenter import Segmenter

        seg = Segmenter.load(model)
        frame = np.zeros((32, 64, 3), np.uint8)
        seen: set[str] = set()

        def worker():
            for _ in range(100):
                try:
                    seg(frame)
                    seen.add("ok")
                except UsageError:
                    seen.add("closed")
                except Exception as e:  # noqa: BLE001
                    seen.add(type(e).__name__)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        seg.close()
        for t in threads:
            t.join()
        raw_errors = seen - {"ok", "closed"}
        return ("traceback", ", ".join(sorted(raw_errors))) if raw_errors else ("clean", "")

    return [("r5 beside the door", "H2 a FIFO at an engine cache entry", fifo_entry),
            ("r5 beside the door", "W2 an engine planted under a cache name, sidecar edited",
             planted),
            ("r5 beside the door", "W3 a relative XDG_CACHE_HOME", relative_xdg),
            ("r5 beside the door", "U1 Segmenter.close() racing calls on other threads",
             close_while_running)]


def run_beside(work: Path, only: str | None = None) -> list[dict]:
    return [_one(cls, name, case, None) for cls, name, case in beside_cases(work)
            if not only or only in cls + name]
