"""The front door of ``ssr-deploy serve``: the only way to Triton.

Well-kept servers speak the protocols: HTTP/1.1 is parsed by uvicorn with h11 (a strict
parser with a bounded head; to it this module adds the head timeout and the connection cap
uvicorn leaves out), gRPC by grpcio's asyncio server, with their limits set; the fronts
(``fronts.py``) only route, check (``checks.py``) and forward. Triton listens on a unix
socket in a folder only this user can open, with its HTTP front off: HTTP requests are
translated into gRPC calls, so Triton reads nothing a client wrote. One thread runs both
fronts on one asyncio loop: an idle connection or stream holds no thread. Bytes in flight
are counted as they arrive (a request that declares 4 MB and sends nothing holds nothing);
over the budget a request waits a moment, then gets 429 / RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass

from ssr_deploy.serving import checks
from ssr_deploy.serving.checks import CATEGORY_OF, Limits, Refused
from ssr_deploy.serving.fronts import GrpcFront, HttpFront, Upstream

log = logging.getLogger("ssr_deploy.serve")


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``head``: to send a request's head (line and headers); ``body``: the longest
    pause inside a body; ``keep_alive``: an idle connection between requests;
    ``budget``: how long a request waits for room in the in-flight budget; ``stream_idle``:
    a gRPC stream with no request."""

    head: float = 10.0
    body: float = 30.0
    keep_alive: float = 30.0
    budget: float = 10.0
    stream_idle: float = 120.0
    grace: float = 10.0


class Budget:
    """Bytes in flight, bounded; ``take`` waits up to ``wait`` seconds for room, then
    Refused(429)."""

    def __init__(self, total: int, wait: float) -> None:
        self.total, self.used, self.wait = total, 0, wait
        self.room = asyncio.Condition()

    async def take(self, n: int) -> None:
        async with self.room:
            try:
                await asyncio.wait_for(self.room.wait_for(lambda: self.used + n <= self.total),
                                       self.wait)
            except TimeoutError:
                raise Refused(429, "the server is busy (requests in flight fill its memory "
                              "budget); retry shortly") from None
            self.used += n

    async def give(self, n: int) -> None:
        if n:
            async with self.room:
                self.used -= n
                self.room.notify_all()


class Quiet(logging.Filter):
    """One log line per event, at most ``rate`` a second; the rest counted in the next line.
    Also a filter for uvicorn's and asyncio's loggers, whose lines it rate-limits the same
    way (and strips of tracebacks: a client's mistake is one line)."""

    def __init__(self, rate: int = 10) -> None:
        super().__init__()
        self.rate, self.second, self.lines, self.dropped = rate, 0, 0, 0

    def _allow(self) -> bool:
        now = int(time.monotonic())
        if now != self.second:
            if self.dropped:
                log.warning("... and %d more such lines in the last second", self.dropped)
            self.second, self.lines, self.dropped = now, 0, 0
        self.lines += 1
        if self.lines > self.rate:
            self.dropped += 1
            return False
        return True

    def refused(self, where: str, error: Refused) -> None:
        if self._allow():  # escaped: a client's path or name never forges a log line
            log.warning("refused %s: %d %s", where.encode("unicode_escape").decode(),
                        error.status, str(error).encode("unicode_escape").decode())

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return self._allow()

    def loop_error(self, loop, context: dict) -> None:
        """The door loop's exception handler: accept() out of files and the like, one line."""
        error = context.get("exception")
        if self._allow():
            log.warning("front door: %s%s", context.get("message", "error"),
                        f" ({type(error).__name__}: {error})" if error else "")


QUIET = Quiet()  # one for the process: uvicorn's and asyncio's loggers are the process's


# ---- the door ----------------------------------------------------------------------------
class Door:
    """Both fronts on the user's ports, forwarding to Triton's gRPC at ``upstream``
    (``unix:PATH``). ``open``: the API categories clients may use. ``start()`` binds (an
    OSError names a port in use) and serves on a thread of its own; ``close()`` stops taking
    connections, lets requests in flight finish (``Timeouts.grace``), then stops."""

    def __init__(self, limits: Limits, host: str, http_port: int, grpc_port: int,
                 upstream: str, open_apis: tuple[str, ...] = (),
                 timeouts: Timeouts = Timeouts(), max_connections: int | None = None) -> None:
        self.limits, self.timeouts = limits, timeouts
        self.host, self.http_port, self.grpc_port, self.address = host, http_port, grpc_port, \
            upstream
        self.open = set(checks.ALWAYS_OPEN) | set(open_apis)
        self.max_connections = max_connections or connection_cap()
        self.quiet = QUIET
        self.loop = asyncio.new_event_loop()
        self.thread: threading.Thread | None = None
        self.stopped: asyncio.Event | None = None
        self.closing, self.readers = False, set()
        self.budget = self.upstream = None

    def check_open(self, method: str) -> None:
        category = CATEGORY_OF[method]
        if category not in self.open:
            raise Refused(403, f"the {category} API is closed; serve --allow-api {category} "
                          "opens it")

    async def read_body(self, headers: dict[str, str], receive) -> tuple[bytes, int]:
        """The body, counted against the budget as it arrives; (body, bytes held)."""
        limit = self.limits.max_request_bytes
        declared = headers.get("content-length")
        if declared is not None and int(declared) > limit:
            raise Refused(413, f"a request is at most {limit} bytes")
        chunks, taken = [], 0
        deadline = time.monotonic() + self.timeouts.body + int(declared or 0) / (1 << 20)
        reader = asyncio.current_task()
        self.readers.add(reader)
        try:
            while True:
                wait = min(self.timeouts.body, deadline - time.monotonic())
                try:
                    message = await asyncio.wait_for(receive(), max(wait, 0.001))
                except TimeoutError:
                    raise Refused(408, "the body came too slowly; send it at once") from None
                if message["type"] == "http.disconnect":
                    raise Refused(400, "the client went away")
                chunk = message.get("body", b"")
                if taken + len(chunk) > limit:
                    raise Refused(413, f"a request is at most {limit} bytes")
                await self.budget.take(len(chunk))
                taken += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks), taken
        except asyncio.CancelledError:
            await self.budget.give(taken)
            if not self.closing:
                raise
            getattr(reader, "uncancel", lambda: None)()
            raise Refused(503, "the server is stopping; send the request again") from None
        except BaseException:
            await self.budget.give(taken)
            raise
        finally:
            self.readers.discard(reader)

    # ---- running --------------------------------------------------------------------------
    def start(self) -> None:
        http_socket = listen(self.host, self.http_port)
        ready, failed = threading.Event(), []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._serve(http_socket, ready))
            except BaseException as e:  # noqa: BLE001 - reported to start() or logged
                if not ready.is_set():
                    failed.append(e)
                    ready.set()
                else:
                    log.error("the front door stopped: %s", e)

        self.thread = threading.Thread(target=run, name="ssr-deploy-door", daemon=True)
        self.thread.start()
        ready.wait()
        if failed:
            self.thread.join()
            raise failed[0]

    async def _serve(self, http_socket: socket.socket, ready: threading.Event) -> None:
        import grpc

        self.stopped = asyncio.Event()
        self.loop.set_exception_handler(self.quiet.loop_error)
        for name in ("uvicorn.error", "asyncio"):
            logger = logging.getLogger(name)
            if self.quiet not in logger.filters:
                logger.addFilter(self.quiet)
        self.budget = Budget(self.limits.inflight_bytes, self.timeouts.budget)
        self.upstream = Upstream(self.address, self.limits.max_request_bytes)
        grpc_server = grpc.aio.server(
            handlers=[GrpcFront(self).handler()], options=self._grpc_options(),
            maximum_concurrent_rpcs=self.max_connections)
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            bound = grpc_server.add_insecure_port(f"{host}:{self.grpc_port}")
        except RuntimeError:
            bound = 0
        if not bound:
            http_socket.close()
            raise OSError(98, f"gRPC port {self.grpc_port} on {self.host} is already in use")
        await grpc_server.start()
        stop_http = await self.serve_http(HttpFront(self), http_socket)
        ready.set()
        await self.stopped.wait()
        self.closing = True
        for reader in list(self.readers):  # a body still coming is answered 503, not cut
            reader.cancel()
        await asyncio.gather(stop_http(), grpc_server.stop(self.timeouts.grace),
                             return_exceptions=True)
        await self.upstream.channel.close()

    async def serve_http(self, app, http_socket: socket.socket):
        """Serve ``app`` on ``http_socket`` with uvicorn (h11: a strict parser with a bounded
        head); returns the coroutine function that stops it gracefully."""
        import uvicorn

        config = uvicorn.Config(
            app, http=guarded_h11(self.timeouts.head, self.max_connections, MAX_HEAD),
            lifespan="off", log_config=None, access_log=False,
            limit_concurrency=self.max_connections + 1,  # the eviction keeps it at most cap
            h11_max_incomplete_event_size=MAX_HEAD,
            timeout_keep_alive=int(self.timeouts.keep_alive), server_header=False,
            timeout_graceful_shutdown=int(self.timeouts.grace))
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[http_socket]))

        async def stop() -> None:
            server.should_exit = True
            await task
        return stop

    def _grpc_options(self) -> list[tuple[str, int]]:
        ms = 1000
        return [("grpc.max_receive_message_length", self.limits.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.max_concurrent_streams", 100),
                ("grpc.max_allowed_incoming_connections", self.max_connections),
                ("grpc.server_handshake_timeout_ms", int(self.timeouts.head * ms)),
                ("grpc.max_connection_idle_ms", int(self.timeouts.stream_idle * ms)),
                ("grpc.max_metadata_size", 16 << 10),
                ("grpc.keepalive_time_ms", 60 * ms), ("grpc.keepalive_timeout_ms", 20 * ms),
                ("grpc.so_reuseport", 0)]

    def close(self) -> None:
        if self.thread is None:
            return
        if self.stopped is not None:
            self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(self.timeouts.grace + 10)
        self.thread = None


MAX_HEAD = 64 << 10  # a request line and its headers


def guarded_h11(head_timeout: float, cap: int, max_head: int):
    """uvicorn's h11 protocol with what it leaves out: a request's head must arrive within
    ``head_timeout`` seconds of the connection opening or the last response (a slowloris
    client or a silent socket is closed); over ``cap`` connections the one idle longest is
    closed for the new one; a head over ``max_head`` bytes is 431."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11(H11Protocol):
        head_timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self.active = self.loop.time()
            if len(self.connections) > cap:
                self._evict()
            self._arm()

        def _waiting(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _evict(self) -> None:
            idle = [c for c in self.connections if c is not self and c._waiting()]
            victim = min(idle, key=lambda c: c.active) if idle else self
            victim.transport.close()
            self.connections.discard(victim)  # gone now, not when the loop says so

        def _arm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
            self.head_timer = self.loop.call_later(head_timeout, self._late)

        def _late(self) -> None:
            if self._waiting() and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.active = self.loop.time()
            cycle = self.cycle
            if self._waiting() and self._head_too_long(data):
                self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     b"content-length: 0\r\nconnection: close\r\n\r\n")
                self.transport.close()
                return
            super().data_received(data)
            if self.cycle is not cycle and self.head_timer is not None:
                self.head_timer.cancel()  # a whole head came

        def _head_too_long(self, data: bytes) -> bool:
            """Whether the head being received runs past ``max_head`` bytes (h11 would say
            400 where 431 is the status clients know)."""
            buffered = self.conn.trailing_data[0]
            if len(buffered) + len(data) <= max_head:
                return False
            head = (buffered + data[:max_head + 4])[:max_head + 4]
            return b"\r\n\r\n" not in head and b"\n\n" not in head

        def on_response_complete(self) -> None:
            done = self.cycle
            super().on_response_complete()
            if self.cycle is done and not self.transport.is_closing():
                self._arm()  # waiting for the next request's head

        def connection_lost(self, exc) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
            super().connection_lost(exc)

    return GuardedH11


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (OSError when taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # asyncio: TCP_NODELAY
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def connection_cap(reserve: int = 64) -> int:
    """Connections each front takes at most: the soft open-files limit raised to the hard
    one, less room for the process's own files, shared by both fronts."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            target = 65536 if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(16, min(4096, (soft - reserve) // 2))
