"""Prometheus metrics of the score API and the ASGI middleware that records requests."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("score_api_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "score_api_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ACCEPTED = Counter("score_api_updates_accepted_total", "Score updates applied")
DUPLICATES = Counter("score_api_updates_duplicate_total", "Replays answered from idempotency")
REJECTIONS = Counter("score_api_rejections_total", "Refused requests", ["reason"])


class MetricsMiddleware:
    """Counts every HTTP request by route name (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", "unmatched")
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - start)
