"""The score API's lifecycle: ``running(settings)`` serves it until the block exits.

The app's lifespan owns Redis, the stream follower and the heap freeze; this owns the HTTP
server and its bounded graceful shutdown, the same shape as the other services' ``running``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from services.score_api.app import create_app
from services.score_api.httplimits import HeadLimits, limited_protocol
from services.score_api.settings import ApiSettings
from shared.lifecycle import uvicorn_serving

SHUTDOWN_SECONDS = 10


@asynccontextmanager
async def running(settings: ApiSettings) -> AsyncIterator[str]:
    """Serve the API; yields its base URL. Runs in the caller's event loop (uvloop in main)."""
    head_limits = HeadLimits(
        settings.api_header_timeout_seconds,
        settings.api_max_header_bytes,
        settings.api_max_connections,
    )
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        http=limited_protocol(head_limits),
        log_level=settings.log_level.lower(),
        log_config=None,  # keep shared.logs' JSON handler
        access_log=False,
        # Our TRUSTED_PROXIES rule is the only one: uvicorn would otherwise believe
        # X-Forwarded-For from 127.0.0.1 by default.
        proxy_headers=False,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )
    async with uvicorn_serving(config) as port:
        yield f"http://{settings.api_host}:{port}"
