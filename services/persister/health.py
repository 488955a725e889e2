"""``/healthz``, ``/readyz`` and ``/metrics`` for the persister, served in the worker's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Generator

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_app(
    alive: Callable[[], bool], ready: Callable[[], Awaitable[dict[str, str]]]
) -> Starlette:
    """``alive``: the worker loop still runs. ``ready``: a failing backend -> reason, {} if none."""

    async def healthz(request: Request) -> Response:
        if not alive():
            return _json({"status": "stopped"}, 503)
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = await ready()
        if problems:
            return _json({"status": "unavailable", **problems}, 503)
        return _json({"status": "ready"})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The persister owns SIGTERM/SIGINT (finish the batch first); uvicorn must not take them.
        yield


async def start(app: Starlette, host: str, port: int) -> tuple[_Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the health server stopped before it started")
        await asyncio.sleep(0.01)
    return server, task
