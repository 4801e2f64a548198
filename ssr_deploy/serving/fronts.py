"""The two fronts of ``ssr-deploy serve``'s door and the way to Triton behind them: the
HTTP front (an ASGI application: KServe v2 HTTP and Triton's binary extension in, Triton's
gRPC out) and the gRPC front (Triton's gRPC service forwarded as raw bytes). Both check each
request (``checks.py``) and count it against the door's budget before anything is sent on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING

from ssr_deploy.serving import checks
from ssr_deploy.serving.checks import CATEGORY_OF, SERVICE, Refused

if TYPE_CHECKING:
    from ssr_deploy.serving.door import Door


class Upstream:
    """Triton's gRPC service over its unix socket: typed calls for the HTTP front, raw ones
    for the gRPC front; one HTTP/2 channel multiplexes them all."""

    def __init__(self, address: str, max_request_bytes: int) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        self.channel = grpc.aio.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", max_request_bytes)])
        service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        self.types = {m.name: (getattr(service_pb2, m.input_type.name),
                               getattr(service_pb2, m.output_type.name))
                      for m in service.methods}
        self.raw = {name: self.channel.unary_unary(SERVICE + name) for name in self.types}
        self.typed = {name: self.channel.unary_unary(
            SERVICE + name, request_serializer=req.SerializeToString,
            response_deserializer=resp.FromString) for name, (req, resp) in self.types.items()}
        self.stream = self.channel.stream_stream(SERVICE + "ModelStreamInfer")

    async def call(self, method: str, request, timeout: float | None = None):
        """A typed call; Triton's error as Refused with the HTTP status a client expects."""
        import grpc

        try:
            return await self.typed[method](request, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise Refused(HTTP_STATUS.get(e.code().name, 500), e.details() or e.code().name
                          ) from None


HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
               "ALREADY_EXISTS": 400, "NOT_FOUND": 404, "PERMISSION_DENIED": 403,
               "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 503}


# ---- HTTP ------------------------------------------------------------------------------------
_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
ROUTES = [  # (method, path, Triton's gRPC method)
    ("GET", r"/v2/health/live", "ServerLive"),
    ("GET", r"/v2/health/ready", "ServerReady"),
    ("GET", r"/v2", "ServerMetadata"),
    ("GET", _MODEL, "ModelMetadata"),
    ("GET", _MODEL + r"/ready", "ModelReady"),
    ("POST", _MODEL + r"/infer", "ModelInfer"),
    ("GET", _MODEL + r"/config", "ModelConfig"),
    ("GET", r"/v2/models(?:/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?)?/stats",
     "ModelStatistics"),
    ("POST", r"/v2/repository/index", "RepositoryIndex"),
    ("POST", r"/v2/repository/models/(?P<model>[^/]+)/load", "RepositoryModelLoad"),
    ("POST", r"/v2/repository/models/(?P<model>[^/]+)/unload", "RepositoryModelUnload"),
]
ROUTES = [(verb, re.compile(path + "/?"), method) for verb, path, method in ROUTES]
GRPC_ONLY = {"/v2/systemsharedmemory": "shared-memory", "/v2/cudasharedmemory": "shared-memory",
             "/v2/trace": "trace", "/v2/logging": "logging"}


class HttpFront:
    """The ASGI application: KServe v2 HTTP (and Triton's binary extension) in, Triton's
    gRPC out."""

    def __init__(self, door: Door) -> None:
        self.door, self.limits = door, door.limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        if scope["type"] != "http":
            return
        taken = 0
        try:
            status, headers, body, taken = await self.route(scope, receive)
        except Refused as e:
            self.door.quiet.refused(f"HTTP {scope['method']} {scope['path'][:80]}", e)
            status, headers = e.status, {"content-type": "application/json"}
            body = json.dumps({"error": str(e)}).encode()
        try:
            headers["content-length"] = str(len(body))
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
            await send({"type": "http.response.body", "body": body})
        finally:
            await self.door.budget.give(taken)

    async def route(self, scope, receive):
        path, verb = scope["path"], scope["method"]
        for method_, pattern, method in ROUTES:
            match = pattern.fullmatch(path)
            if match:
                if verb != method_ and not (verb == "HEAD" and method_ == "GET"):
                    raise Refused(405, f"{verb} {path[:60]}: use {method_}")
                self.door.check_open(method)
                return await self.answer(method, match.groupdict(""), scope, receive)
        for prefix, category in GRPC_ONLY.items():
            if path.startswith(prefix) or (path.startswith("/v2/models/")
                                           and path.rstrip("/").endswith("/trace/setting")):
                if category not in self.door.open:
                    raise Refused(403, f"the {category} API is closed; serve --allow-api "
                                  f"{category} opens it (over gRPC)")
                raise Refused(501, f"the {category} API is served over gRPC only")
        raise Refused(404, f"no such endpoint: {verb} {path[:80]}")

    async def answer(self, method: str, names: dict[str, str], scope, receive):
        from tritonclient.grpc import service_pb2 as pb

        up, limits = self.door.upstream, self.limits
        model, version = names.get("model", ""), names.get("version", "")
        if method in ("ServerLive", "ServerReady"):
            r = await up.call(method, up.types[method][0]())
            return (200 if (r.live if method == "ServerLive" else r.ready) else 503), {}, b"", 0
        if method == "ServerMetadata":
            return _json(checks.proto_json(await up.call(method, pb.ServerMetadataRequest())))
        if method == "ModelInfer":
            return await self.infer(model, version, scope, receive)
        if method != "RepositoryIndex" and (model or method != "ModelStatistics"):
            limits.check_model(model, version)
        if method == "ModelReady":
            r = await up.call(method, pb.ModelReadyRequest(name=model, version=version))
            return (200 if r.ready else 503), {}, b"", 0
        if method == "ModelMetadata":
            return _json(checks.proto_json(await up.call(method, pb.ModelMetadataRequest(
                name=model, version=version))))
        if method == "ModelConfig":
            r = await up.call(method, pb.ModelConfigRequest(name=model, version=version))
            return _json(checks.proto_json(r.config))
        if method == "ModelStatistics":
            r = await up.call(method, pb.ModelStatisticsRequest(name=model, version=version))
            return _json(checks.proto_json(r))
        if method == "RepositoryIndex":
            r = await up.call(method, pb.RepositoryIndexRequest())
            return _json([checks.proto_json(m) for m in r.models])
        request = up.types[method][0](model_name=model)
        await up.call(method, request)
        return 200, {}, b"", 0

    async def infer(self, model: str, version: str, scope, receive):
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body, taken = await self.door.read_body(headers, receive)
        try:
            body = checks.decompress(body, headers.get("content-encoding", ""),
                                     self.limits.max_request_bytes)
            request, binary = checks.http_infer_request(
                self.limits, model, version, body, headers.get("inference-header-content-length"))
            del body
            response = await self.door.upstream.call("ModelInfer", request)
            out_headers, out = checks.http_infer_response(response, binary)
        except BaseException:
            await self.door.budget.give(taken)
            raise
        return 200, out_headers, out, taken


def _json(value) -> tuple[int, dict, bytes, int]:
    return 200, {"content-type": "application/json"}, json.dumps(value).encode(), 0


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# ---- gRPC ------------------------------------------------------------------------------------
#: model-scoped requests: (the field naming the model, its version's, whether empty means all)
MODEL_FIELDS = {"ModelReady": ("name", "version", False),
                "ModelMetadata": ("name", "version", False),
                "ModelConfig": ("name", "version", False),
                "ModelStatistics": ("name", "version", True),
                "RepositoryModelLoad": ("model_name", None, False),
                "RepositoryModelUnload": ("model_name", None, False),
                "TraceSetting": ("model_name", None, True)}


class GrpcFront:
    """Triton's gRPC service, forwarded as raw bytes; requests checked first."""

    def __init__(self, door: Door) -> None:
        self.door = door

    def handler(self):
        import grpc

        front = self

        class Forward(grpc.GenericRpcHandler):
            def service(self, details):
                name = details.method.removeprefix(SERVICE)
                if not details.method.startswith(SERVICE) or name not in CATEGORY_OF:
                    return None  # UNIMPLEMENTED
                if name == "ModelStreamInfer":
                    return grpc.stream_stream_rpc_method_handler(front.stream)
                async def unary(raw: bytes, context):
                    return await front.unary(name, raw, context)
                return grpc.unary_unary_rpc_method_handler(unary)
        return Forward()

    def check(self, method: str, raw: bytes) -> None:
        door = self.door
        door.check_open(method)
        types = door.upstream.types[method]
        if method == "ModelInfer" or method in MODEL_FIELDS:
            try:
                request = types[0].FromString(raw)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
                raise Refused(400, f"not a {types[0].__name__}") from None
            if method == "ModelInfer":
                return checks.check_grpc_infer(door.limits, request)
            name, version, empty_is_all = MODEL_FIELDS[method]
            given = getattr(request, name)
            if given or not empty_is_all:
                door.limits.check_model(given, getattr(request, version) if version else "")

    async def unary(self, method: str, raw: bytes, context):
        import grpc

        door = self.door
        try:
            await door.budget.take(len(raw))
        except Refused as e:
            door.quiet.refused(f"gRPC {method}", e)
            await context.abort(grpc.StatusCode[e.code], str(e))
        try:
            self.check(method, raw)
            remaining = context.time_remaining()
            return await door.upstream.raw[method](raw, timeout=remaining)
        except Refused as e:
            door.quiet.refused(f"gRPC {method}", e)
            await context.abort(grpc.StatusCode[e.code], str(e))
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")
        finally:
            await door.budget.give(len(raw))

    async def stream(self, requests, context):
        """Each request checked as it comes; a refused one is answered in the stream (as
        Triton answers a failed one) and the stream goes on. A stream idle for
        ``Timeouts.stream_idle`` ends."""
        import grpc
        from tritonclient.grpc import service_pb2

        door = self.door
        try:
            door.check_open("ModelStreamInfer")
        except Refused as e:
            await context.abort(grpc.StatusCode[e.code], str(e))
        call = door.upstream.stream()
        answers: asyncio.Queue = asyncio.Queue()

        async def pump() -> None:
            try:
                while True:
                    try:
                        raw = await asyncio.wait_for(anext(requests),
                                                     door.timeouts.stream_idle)
                    except (StopAsyncIteration, TimeoutError):
                        break
                    await door.budget.take(len(raw))
                    try:
                        self.check("ModelInfer", raw)
                        await call.write(raw)
                    except Refused as e:
                        door.quiet.refused("gRPC ModelStreamInfer", e)
                        await answers.put(service_pb2.ModelStreamInferResponse(
                            error_message=str(e)).SerializeToString())
                    finally:
                        await door.budget.give(len(raw))
                with contextlib.suppress(grpc.aio.AioRpcError, grpc.aio.UsageError):
                    await call.done_writing()
            except Refused as e:  # the budget: the stream ends with the reason
                await answers.put(e)
                call.cancel()

        async def drain() -> None:
            try:
                async for raw in call:
                    await answers.put(raw)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    await answers.put(e)
            await answers.put(None)

        tasks = [asyncio.create_task(pump()), asyncio.create_task(drain())]
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, Refused):
                    await context.abort(grpc.StatusCode[item.code], str(item))
                if isinstance(item, grpc.aio.AioRpcError):
                    await context.abort(item.code(), item.details() or "")
                yield item
        finally:
            for task in tasks:
                task.cancel()
            call.cancel()
