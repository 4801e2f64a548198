"""The ASGI servers the front door's HTTP was chosen from, each started the way its own docs
embed it in a running asyncio loop, with the door's limits mapped onto its settings. Only
uvicorn (h11) is a dependency of ssr-deploy; for the others:
``pip install hypercorn granian``. Used by serve_load.py --http-server.
"""

from __future__ import annotations

import asyncio

from ssr_deploy.serving.door import Door

CANDIDATES = {
    "uvicorn": "uvicorn (h11 parser, head timeout and eviction added), the door's own",
    "uvicorn-httptools": "uvicorn (httptools parser; no bound on a head's size)",
    "hypercorn": "hypercorn (h11)",
    "granian": "granian (Rust hyper), embedded server",
}


async def _uvicorn_httptools(self: Door, app, http_socket):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(
        app, http="httptools", lifespan="off", log_config=None, access_log=False,
        limit_concurrency=self.max_connections, timeout_keep_alive=int(self.timeouts.keep_alive)))
    task = asyncio.create_task(server.serve(sockets=[http_socket]))

    async def stop() -> None:
        server.should_exit = True
        await task
    return stop


async def _hypercorn(self: Door, app, http_socket):
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{http_socket.fileno()}"]
    config.keep_alive_timeout = self.timeouts.keep_alive
    config.read_timeout = int(self.timeouts.head)
    config.h11_max_incomplete_size = 64 << 10
    config.accesslog = config.errorlog = None
    done = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=done.wait, mode="asgi"))

    async def stop() -> None:
        done.set()
        await task
    return stop


async def _granian(self: Door, app, http_socket):
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    host, port = http_socket.getsockname()[:2]
    http_socket.close()  # granian binds its own
    server = Server(app, address=host, port=port, interface=Interfaces.ASGINL,
                    http=HTTPModes.http1, backlog=1024, backpressure=self.max_connections,
                    http1_settings=HTTP1Settings(header_read_timeout=int(self.timeouts.head
                                                                         * 1000)),
                    log_enabled=False)
    task = asyncio.create_task(server.serve())
    await asyncio.sleep(0.5)  # bound and spawned

    async def stop() -> None:
        server.stop()
        await task
    return stop


def use_http_server(name: str) -> None:
    """Make every Door serve its HTTP front on the candidate ``name``."""
    starters = {"uvicorn-httptools": _uvicorn_httptools, "hypercorn": _hypercorn,
                "granian": _granian}
    if name in starters:
        Door.serve_http = starters[name]
