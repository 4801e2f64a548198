"""The front door of ``ssr-deploy serve``: clients reach Triton only through here, and an
inference request reaches Triton only once what it declares is checked against what it
carries and against the served model's bounds.

Triton 2.51 allocates what an HTTP/JSON request declares before it reads the data: one request
declaring ``[1, 100000, 100000, 3]`` with 3 values made it allocate 30 GB and abort, and its
gRPC front accepts 2 GB messages. Here, before anything is forwarded:

- a request's bytes are bounded (``max_request_bytes``: 413 / RESOURCE_EXHAUSTED), and so are
  the bytes of every request in flight together (``inflight_bytes``: a request waits for
  room), so size x concurrency is bounded;
- an inference request must name the model's input (``images``, UINT8) with a shape of
  (batch <= max_batch, H, W <= max_side, 3) whose element count is exactly the data it carries
  (JSON values, binary data, or gRPC raw contents): anything else is one 400 /
  INVALID_ARGUMENT error naming the problem, and the server stays ready.

HTTP/1.1 is proxied here (asyncio); gRPC with grpcio, every method forwarded as raw bytes to
Triton (its own restrictions apply), ModelInfer and ModelStreamInfer checked first. Triton
listens on loopback ports only this process knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from concurrent import futures
from dataclasses import dataclass

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/[^/]+)?/infer/?")
MAX_HEAD = 64 << 10  # a request line and headers


class Refused(Exception):
    """A request refused before it reaches Triton: ``status`` (HTTP) and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What the served model takes. ``max_request_bytes``: the largest request; the bytes of
    all requests in flight together are at most ``inflight_bytes``."""

    model: str
    max_batch: int
    max_side: int = 8192
    max_request_bytes: int = 256 << 20
    inflight_bytes: int = 512 << 20

    def check_input(self, name: str, datatype: str, shape: list) -> int:
        """The element count of a well-formed ``images`` input, or Refused."""
        if name != "images":
            raise Refused(400, f"input {str(name)[:40]!r} is not the model's; send 'images'")
        if datatype != "UINT8":
            raise Refused(400, f"images are UINT8, not {str(datatype)[:20]}")
        if not (isinstance(shape, list | tuple) and len(shape) == 4 and all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape)):
            raise Refused(400, f"images of shape {str(shape)[:60]}: send (batch, H, W, 3)")
        batch, h, w, c = shape
        if not (1 <= batch <= self.max_batch and 1 <= h <= self.max_side
                and 1 <= w <= self.max_side and c == 3):
            raise Refused(400, f"images of shape {list(shape)}: batch 1 to {self.max_batch}, "
                          f"H and W 1 to {self.max_side}, 3 channels")
        return batch * h * w * 3


def count_values(data) -> int:
    """The number of scalar values in a (nested) JSON list, without recursion."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
    return count


def check_http_infer(limits: Limits, model: str, headers: dict[str, str], body: bytes) -> None:
    """A KServe v2 HTTP inference request: its JSON (and binary data) against ``limits``."""
    if model != limits.model:
        return  # not this model: Triton answers it (unknown model)
    split = headers.get("inference-header-content-length")
    try:
        size = int(split) if split is not None else len(body)
    except ValueError:
        raise Refused(400, "Inference-Header-Content-Length is not a number") from None
    if not 0 <= size <= len(body):
        raise Refused(400, "Inference-Header-Content-Length exceeds the body")
    try:
        request = json.loads(body[:size])
    except (ValueError, RecursionError):
        raise Refused(400, "the request is not JSON") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise Refused(400, "send one input, 'images'")
    spec = inputs[0]
    count = limits.check_input(spec.get("name"), spec.get("datatype"), spec.get("shape"))
    parameters = spec.get("parameters") or {}
    binary = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if binary is not None:
        if binary != count or len(body) - size != count:
            raise Refused(400, f"images declare {count} bytes; the request carries "
                          f"{len(body) - size}")
    elif "data" not in spec or count_values(spec["data"]) != count:
        raise Refused(400, f"images declare {count} values; the request carries "
                      f"{count_values(spec.get('data', []))}")


def check_grpc_infer(limits: Limits, request) -> None:
    """A gRPC ``ModelInferRequest`` against ``limits``."""
    if request.model_name != limits.model:
        return
    if len(request.inputs) != 1:
        raise Refused(400, "send one input, 'images'")
    tensor = request.inputs[0]
    count = limits.check_input(tensor.name, tensor.datatype, list(tensor.shape))
    if request.raw_input_contents:
        carried = sum(len(raw) for raw in request.raw_input_contents)
    else:
        carried = len(tensor.contents.uint_contents)
    if carried != count:
        raise Refused(400, f"images declare {count} values; the request carries {carried}")


class Budget:
    """Bytes in flight, bounded: ``take(n)`` waits until n more fit (n itself is at most the
    budget, as ``max_request_bytes`` <= ``inflight_bytes``)."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self.cond = threading.Condition()

    def take(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n

    def give(self, n: int) -> None:
        with self.cond:
            self.used -= n
            self.cond.notify_all()


# ---- HTTP ------------------------------------------------------------------------------
class HttpGuard:
    """An HTTP/1.1 reverse proxy to Triton's HTTP port on loopback (keep-alive, one
    upstream connection per client connection)."""

    def __init__(self, limits: Limits, budget: Budget, upstream_port: int) -> None:
        self.limits, self.budget, self.upstream_port = limits, budget, upstream_port

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._reply(writer, 431, "the request's headers are too large")
                    return
                method, target, headers = _parse_head(head)
                if headers is None:
                    await self._reply(writer, 400, "not an HTTP/1.1 request")
                    return
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await self._reply(writer, 411, "send a Content-Length, not chunks")
                    return
                try:
                    length = int(headers.get("content-length", "0"))
                except ValueError:
                    length = -1
                if not 0 <= length <= self.limits.max_request_bytes:
                    await self._reply(writer, 413, f"a request is at most "
                                      f"{self.limits.max_request_bytes} bytes")
                    return
                await asyncio.to_thread(self.budget.take, length)
                try:
                    if headers.get("expect", "").lower() == "100-continue":
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # answered here
                        head = re.sub(rb"(?im)^expect:[^\r\n]*\r\n", b"", head)
                    body = await reader.readexactly(length)
                    match = INFER_PATH.fullmatch(target.split("?", 1)[0])
                    if method == "POST" and match:
                        check_http_infer(self.limits, match[1], headers, body)
                    if upstream is None:
                        upstream = await asyncio.open_connection("127.0.0.1",
                                                                 self.upstream_port)
                    await self._forward(head, body, upstream, writer)
                except Refused as e:
                    await self._reply(writer, e.status, str(e))
                finally:
                    self.budget.give(length)
                if headers.get("connection", "").lower() == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            for stream in (writer, upstream[1] if upstream else None):
                if stream is not None:
                    stream.close()

    async def _forward(self, head: bytes, body: bytes, upstream, writer) -> None:
        up_reader, up_writer = upstream
        up_writer.write(head + body)
        await up_writer.drain()
        reply = await up_reader.readuntil(b"\r\n\r\n")
        _, _, headers = _parse_head(reply, response=True)
        writer.write(reply)
        if "chunked" in (headers or {}).get("transfer-encoding", "").lower():
            while True:
                size_line = await up_reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                chunk = await up_reader.readexactly(size + 2)
                writer.write(size_line + chunk)
                if size == 0:
                    break
        else:
            writer.write(await up_reader.readexactly(int((headers or {}).get(
                "content-length", "0"))))
        await writer.drain()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        reason = {400: "Bad Request", 411: "Length Required", 413: "Payload Too Large",
                  431: "Request Header Fields Too Large"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()


def _parse_head(head: bytes, response: bool = False):
    """(method, target, lower-cased headers) of a request head (or a response's)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        first = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
    except (UnicodeDecodeError, IndexError):
        return None, None, None
    if len(first) < 3 or (not response and not first[2].startswith("HTTP/1.")):
        return None, None, None
    return first[0], first[1], headers


# ---- gRPC ------------------------------------------------------------------------------
def grpc_guard(limits: Limits, budget: Budget, upstream_port: int, address: str,
               workers: int = 16):
    """A grpcio server at ``address`` forwarding every method of Triton's inference service
    as raw bytes to its gRPC port on loopback; inference requests checked first."""
    import grpc
    from tritonclient.grpc import service_pb2

    options = [("grpc.max_receive_message_length", limits.max_request_bytes),
               ("grpc.max_send_message_length", -1)]
    channel = grpc.insecure_channel(f"127.0.0.1:{upstream_port}", options=[
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", limits.max_request_bytes)])

    def problem(raw: bytes) -> str | None:
        """Why an inference request is refused, or None."""
        try:
            check_grpc_infer(limits, service_pb2.ModelInferRequest.FromString(raw))
        except Refused as e:
            return str(e)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
            return "not a ModelInferRequest"
        return None

    def unary(method: str):
        call = channel.unary_unary(method)
        infer = method.endswith("/ModelInfer")

        def handle(raw: bytes, context):
            budget.take(len(raw))
            try:
                why = problem(raw) if infer else None
                if why:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, why)
                remaining = context.time_remaining()  # huge where the client set none
                try:
                    return call(raw, metadata=context.invocation_metadata(),
                                timeout=remaining if remaining and remaining < 1e6 else None)
                except grpc.RpcError as e:
                    context.abort(e.code(), e.details())
            finally:
                budget.give(len(raw))
        return handle

    def stream(method: str):
        call = channel.stream_stream(method)

        def handle(requests, context):
            refused: list[str] = []

            def inspected():  # a refused request ends the stream; the reason follows
                for raw in requests:
                    why = problem(raw)
                    if why:
                        refused.append(why)
                        return
                    yield raw
            try:
                yield from call(inspected(), metadata=context.invocation_metadata())
            except grpc.RpcError as e:
                context.abort(e.code(), e.details())
            if refused:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])
        return handle

    class Forward(grpc.GenericRpcHandler):
        def service(self, details):
            method = details.method
            if method.endswith("/ModelStreamInfer"):
                return grpc.stream_stream_rpc_method_handler(stream(method))
            return grpc.unary_unary_rpc_method_handler(unary(method))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options,
                         handlers=[Forward()])
    if not server.add_insecure_port(address):
        raise OSError(f"cannot listen on {address}")
    return server, channel


class Guard:
    """The HTTP and gRPC fronts, on their own thread (an asyncio loop) and the gRPC server's
    pool. ``start()`` binds the user's ports; ``close()`` stops both."""

    def __init__(self, limits: Limits, host: str, http_port: int, grpc_port: int,
                 upstream_http: int, upstream_grpc: int) -> None:
        self.limits = limits
        self.budget = Budget(limits.inflight_bytes)
        self.host, self.http_port, self.grpc_port = host, http_port, grpc_port
        self.upstream_http, self.upstream_grpc = upstream_http, upstream_grpc
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        self.http_server = None
        self.grpc_server = self.channel = None

    def start(self) -> None:
        http = HttpGuard(self.limits, self.budget, self.upstream_http)
        ready, failed = threading.Event(), []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.http_server = self.loop.run_until_complete(asyncio.start_server(
                    http.handle, self.host, self.http_port, limit=MAX_HEAD))
            except OSError as e:
                failed.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="ssr-deploy-http-guard", daemon=True)
        self.thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.grpc_server, self.channel = grpc_guard(self.limits, self.budget,
                                                    self.upstream_grpc,
                                                    f"{host}:{self.grpc_port}")
        self.grpc_server.start()

    def close(self) -> None:
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=5).wait()
            self.channel.close()
            self.grpc_server = None
        if self.thread is not None:
            if self.http_server is not None:
                with contextlib.suppress(Exception):  # connections ended, their sockets shut
                    asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.thread = None
            self.loop.close()

    async def _shutdown(self) -> None:
        self.http_server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
