"""Health and metrics endpoints, the same for every service, and the one JSON response helper.

``Health`` decides what ``/healthz``, ``/readyz`` and ``/metrics`` answer (no I/O of its own):
``alive`` says the service's main loop still runs, ``ready`` lists what keeps it from doing
its job now (empty: ready). The score API and the persister serve the answers through
Starlette (``routes``); the gateway through its WebSocket server's HTTP hook. Ready means
"can do its job now", not "the process is up".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shared.lifecycle import uvicorn_serving

JSON = "application/json"
PATHS = ("/healthz", "/readyz", "/metrics")


def json_response(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str


def _always() -> bool:
    return True


async def _nothing() -> dict[str, object]:
    return {}


@dataclass(frozen=True)
class Health:
    """``ready()`` -> the reasons the service is not ready ({} when it is); ``details()`` ->
    extra fields of a ready answer (e.g. the gateway's board version)."""

    ready: Callable[[], Awaitable[dict[str, object]]] = _nothing
    alive: Callable[[], bool] = _always
    details: Callable[[], dict[str, object]] = dict

    async def answer(self, path: str) -> Answer | None:
        """The answer for ``path``, or None when it is not a health or metrics path."""
        if path == "/healthz":
            if not self.alive():
                return Answer(503, orjson.dumps({"status": "stopped"}), JSON)
            return Answer(200, orjson.dumps({"status": "ok"}), JSON)
        if path == "/readyz":
            problems = await self.ready()
            if problems:
                return Answer(503, orjson.dumps({"status": "unavailable", **problems}), JSON)
            return Answer(200, orjson.dumps({"status": "ready", **self.details()}), JSON)
        if path == "/metrics":
            return Answer(200, generate_latest(), CONTENT_TYPE_LATEST)
        return None

    def routes(self) -> list[Route]:
        """The three endpoints as Starlette routes (named healthz, readyz, metrics)."""

        def endpoint(path: str) -> Callable[[Request], Awaitable[Response]]:
            async def handle(request: Request) -> Response:
                answer = await self.answer(path)
                assert answer is not None
                return Response(answer.body, answer.status, media_type=answer.content_type)

            handle.__name__ = path.strip("/")
            return handle

        return [Route(path, endpoint(path), methods=["GET"]) for path in PATHS]


@contextlib.asynccontextmanager
async def serving(app: Starlette, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn in this loop until the block exits; yields the bound port."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, log_config=None
    )
    async with uvicorn_serving(config) as bound:
        yield bound
