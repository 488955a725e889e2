"""Prometheus metrics of the score API and the one ASGI middleware every request passes.

``RequestMiddleware`` does, in a single layer, what each request needs around the app: its
``X-Request-ID`` (``services.score_api.requestid``) and its count and latency by route name.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.score_api.requestid import REQUEST_ID_HEADER, request_id

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
# By action: only catalogue actions get here (validated first), so the labels are bounded.
AWARDS = Counter("score_api_awards_total", "Awards applied, by action", ["action"])
POINTS = Counter("score_api_points_total", "Points awarded, by action", ["action"])
_AWARD_CHILDREN: dict[str, tuple[Counter, Counter]] = {}
BOARD_CACHE = Counter(
    "score_api_board_cache_total", "GET /api/score-board answered from the cache or not", ["result"]
)
BOARD_CACHE_HITS = BOARD_CACHE.labels("hit")
BOARD_CACHE_MISSES = BOARD_CACHE.labels("miss")


def count_award(action: str, points: int) -> None:
    """One applied award of a catalogue ``action`` worth ``points``."""
    children = _AWARD_CHILDREN.get(action)
    if children is None:
        children = AWARDS.labels(action), POINTS.labels(action)
        _AWARD_CHILDREN[action] = children
    ACCEPTED.inc()
    children[0].inc()
    children[1].inc(points)


class RequestMiddleware:
    """X-Request-ID (accepted, generated, echoed; in ``request.state.request_id``) and
    request metrics by route name (not raw path, to bound label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Label children by (route, method, status): prometheus_client's labels() takes a
        # lock and rebuilds the key on every call. Bounded by the same label sets.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        header = None
        for key, value in scope["headers"]:
            if key == REQUEST_ID_HEADER:
                header = value.decode("latin-1")
                break
        rid = request_id(header)
        scope.setdefault("state", {})["request_id"] = rid
        echoed = (REQUEST_ID_HEADER, rid.encode("latin-1"))
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # A new list: a response may hand out the same header list to many requests.
                headers = [h for h in message.get("headers", ()) if h[0] != REQUEST_ID_HEADER]
                headers.append(echoed)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = getattr(scope.get("endpoint"), "__name__", "unmatched")
            labels = (route, scope["method"], status)
            children = self._children.get(labels)
            if children is None:
                children = REQUESTS.labels(route, labels[1], str(status)), LATENCY.labels(route)
                self._children[labels] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)
