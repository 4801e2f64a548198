"""Attackers that hold a server's doors open, for serve_load.py --abuse: slowloris HTTP
connections (a request head sent a header a second, never finished), idle gRPC
ModelStreamInfer streams (opened, never written), and idle TCP sockets (connected, silent).
Each reconnects when the server drops it, as an attacker would; ``held()`` counts what is
open and how often each was dropped.

    with Abuse(http_port, grpc_port, slowloris=100, streams=16, idle=300) as abuse:
        ...  # the honest load
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter


class Abuse:
    def __init__(self, http_port: int, grpc_port: int, slowloris: int = 100, streams: int = 16,
                 idle: int = 300, host: str = "127.0.0.1") -> None:
        self.http_port, self.grpc_port, self.host = http_port, grpc_port, host
        self.counts = {"slowloris": slowloris, "streams": streams, "idle": idle}
        self.open: Counter = Counter()
        self.dropped: Counter = Counter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop_event: asyncio.Event | None = None

    def held(self) -> dict:
        return {"open": dict(self.open), "dropped_by_server": dict(self.dropped)}

    def __enter__(self) -> Abuse:
        started = threading.Event()
        self._started = started
        self.thread.start()
        started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        tasks = [asyncio.create_task(self._slowloris()) for _ in range(
            self.counts["slowloris"])]
        tasks += [asyncio.create_task(self._idle(self.http_port if i % 2 else self.grpc_port))
                  for i in range(self.counts["idle"])]
        channel = None
        if self.counts["streams"]:
            import grpc

            channel = grpc.aio.insecure_channel(f"{self.host}:{self.grpc_port}")
            tasks += [asyncio.create_task(self._stream(channel))
                      for _ in range(self.counts["streams"])]
        self._started.set()
        await self.stop_event.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if channel is not None:
            await channel.close()

    async def _hold(self, kind: str, port: int, send_every: float | None) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, port)
            except OSError:
                self.dropped[kind] += 1
                await asyncio.sleep(0.5)
                continue
            self.open[kind] += 1
            try:
                if send_every:
                    writer.write(b"POST /v2/models/ssrnet/infer HTTP/1.1\r\nHost: x\r\n")
                while True:
                    if send_every:
                        await asyncio.sleep(send_every)
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
                    else:
                        if not await reader.read(1 << 16):
                            break  # closed by the server
            except (ConnectionError, OSError):
                pass
            finally:
                self.open[kind] -= 1
                self.dropped[kind] += 1
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    def _slowloris(self):
        return self._hold("slowloris", self.http_port, 1.0)

    def _idle(self, port: int):
        return self._hold("idle", port, None)

    async def _stream(self, channel) -> None:
        import grpc

        never = asyncio.Event()

        async def nothing():
            await never.wait()
            yield b""

        while True:
            call = channel.stream_stream(
                "/inference.GRPCInferenceService/ModelStreamInfer")(nothing())
            self.open["streams"] += 1
            try:
                async for _ in call:
                    pass
            except grpc.aio.AioRpcError:
                pass
            finally:
                self.open["streams"] -= 1
                self.dropped["streams"] += 1
            await asyncio.sleep(0.5)
