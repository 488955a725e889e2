"""The gateway's network side: WebSocket endpoint, HTTP probes, limits and graceful shutdown.

Close codes and HTTP refusals, in one place:

    403  handshake   Origin not in the allowlist, or sent twice   closes{reason="origin"}
    429  handshake   the client address holds its connection      closes{reason="per_ip"}
                     limit (Retry-After: 5); a peer that is no trusted
                     proxy counts from its TCP accept
    503  handshake   connection cap reached                       closes{reason="capacity"}
                     (and, from websockets itself, while shutting down)
    1008 policy      more inbound messages than the rate limit    closes{reason="rate"}
    1009 too big     an inbound message over the size limit       closes{reason="oversize"}
    1012 restart     SIGTERM: the instance is going away          closes{reason="shutdown"}
    1013 try later   unsent bytes stayed above the limit          closes{reason="slow"}

The client address is the TCP peer's, or the first untrusted hop of X-Forwarded-For when the
peer is a trusted proxy (shared.netaddr.client_ip); IPv6 callers are counted per
IPV6_LIMIT_PREFIX network (shared.netaddr.limit_subject).

Who gets which frame, and who is stuck, is the fan-out's decision (``fanout``, no I/O); what
this module does with websockets goes through ``wsadapter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import urllib.parse
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import orjson

from services.broadcast_gateway import metrics, wsadapter
from services.broadcast_gateway.fanout import Client
from services.broadcast_gateway.limits import IpCounter
from services.broadcast_gateway.protocol import RateLimit, is_resync
from services.broadcast_gateway.reader import BoardFeed
from services.broadcast_gateway.settings import GatewaySettings
from services.broadcast_gateway.wsadapter import (
    CloseCode,
    ConnectionClosed,
    ConnectionSink,
    GatewayConnection,
    Request,
    Response,
    Server,
    http_response,
)
from shared.boards import ALL_TIME
from shared.clock import SYSTEM, Clock
from shared.health import JSON, Answer, Health
from shared.netaddr import client_ip, is_trusted, limit_subject, parse_networks

log = logging.getLogger(__name__)
# After the shutdown deadline: how long background loops and Redis clients get to stop.
STOP_SECONDS = 2.0
TEXT = "text/plain; charset=utf-8"
NOT_FOUND = Answer(404, orjson.dumps({"status": 404, "detail": "not found"}), JSON)

T = TypeVar("T")


def origin_allowed(origin: str | None, allowed: list[str], allow_missing: bool) -> bool:
    if origin is None:
        return allow_missing
    return "*" in allowed or origin in allowed


def refusal(status: int, text: bytes, retry_after: int | None = None) -> Response:
    return http_response(Answer(status, text, TEXT), retry_after)


# How long a connection over its address's limit may take to send its request (and get 429).
OVER_LIMIT_SECONDS = 1.0


def too_many() -> Response:
    return refusal(429, b"too many connections from this address\n", retry_after=5)


def requested_board(query: str, boards: Mapping[str, object]) -> str | None:
    """The board ``?board=`` names (default all-time), or None if it is not one of ours."""
    try:
        values = urllib.parse.parse_qs(query, keep_blank_values=True, max_num_fields=8).get(
            "board", [ALL_TIME]
        )
    except ValueError:
        return None
    board_id = values[-1] if len(values) == 1 else None
    return board_id if board_id in boards else None


def batches(items: Iterable[T], size: int) -> list[list[T]]:
    every = list(items)
    return [every[i : i + size] for i in range(0, len(every), size)]


class Gateway:
    def __init__(self, settings: GatewaySettings, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.clock = clock
        # One fan-out per board of the family; a client follows the board it asked for.
        self.fanouts: dict[str, metrics.MeteredFanout] = {
            board.board_id: metrics.MeteredFanout(wsadapter.text_frame, clock, board.board_id)
            for board in settings.board_family()
        }
        self.fanout = self.fanouts[ALL_TIME]
        # Bound once per board, shared by every connection of it.
        self._catch_up = {b: f.catch_up for b, f in self.fanouts.items()}
        self.feed = BoardFeed(settings, self.fanouts, clock)
        self.health = Health(
            ready=self._not_ready, details=lambda: {"version": self.fanout.version}
        )
        self.server: Server | None = None
        self.trusted = parse_networks(settings.gateway_trusted_proxies)
        self.per_ip = IpCounter(settings.gateway_max_connections_per_ip)
        self.ipv6_prefix = settings.ipv6_limit_prefix
        self.url = ""  # the WebSocket URL, once running
        self._background: set[asyncio.Task[Any]] = set()

    def client_count(self) -> int:
        return sum(len(f.clients) for f in self.fanouts.values())

    async def _not_ready(self) -> dict[str, object]:
        if await self.feed.ready():
            return {}
        if not self.fanout.loaded:
            return {"reason": "board not loaded"}
        return {"reason": "redis unavailable"}

    # Handshake and plain HTTP

    async def process_request(
        self, connection: GatewayConnection, request: Request
    ) -> Response | None:
        s = self.settings
        path, _, query = request.path.partition("?")
        answer = await self.health.answer(path)
        if answer is not None:
            return http_response(answer)
        if path != s.gateway_path:
            return http_response(NOT_FOUND)
        board_id = requested_board(query, self.fanouts)
        if board_id is None:
            metrics.CLOSES.labels("board").inc()
            return refusal(404, b"unknown board\n")
        connection.board_id = board_id
        origins = request.headers.get_all("Origin")
        if len(origins) > 1 or not origin_allowed(
            origins[0] if origins else None,
            s.gateway_allowed_origins,
            s.gateway_allow_missing_origin,
        ):
            metrics.CLOSES.labels("origin").inc()
            return refusal(403, b"origin not allowed\n")
        # Handshakes still in flight may overshoot the cap by a few; it bounds memory, not a count.
        if self.client_count() >= s.gateway_max_connections:
            metrics.CLOSES.labels("capacity").inc()
            return refusal(503, b"connection limit reached\n", retry_after=5)
        if s.gateway_socket_send_buffer:
            wsadapter.set_send_buffer(connection, s.gateway_socket_send_buffer)
        if connection.over_limit:
            return too_many()  # already over its limit at the TCP accept
        if connection.counted_as is not None:
            return None  # counted from its TCP accept (``accept``)
        # Through a trusted proxy: the caller is known only now, from X-Forwarded-For.
        # Proxies may append a header each time instead of extending one (RFC 9110 5.3).
        forwarded = ", ".join(request.headers.get_all("X-Forwarded-For")) or None
        caller = client_ip(wsadapter.peer_host(connection), forwarded, self.trusted)
        # Last check: nothing below refuses.
        if not self.count(connection, limit_subject(caller, self.ipv6_prefix)):
            return too_many()
        return None

    def accept(self, connection: GatewayConnection) -> None:
        """At the TCP accept, before any byte of the handshake: a peer that is not a trusted
        proxy counts against its per-address limit from now on, so half-finished handshakes
        hold a place too. One over the limit gets its 429 if its request comes at once, and is
        aborted after ``OVER_LIMIT_SECONDS`` otherwise: it never holds a place itself."""
        peer = wsadapter.peer_host(connection)
        if peer is None or is_trusted(peer, self.trusted):
            return  # a proxy carries many callers: counted at the handshake
        if not self.count(connection, limit_subject(client_ip(peer, None, ()), self.ipv6_prefix)):
            connection.over_limit = True
            wsadapter.abort_after(connection, OVER_LIMIT_SECONDS)

    def count(self, connection: GatewayConnection, address: str) -> bool:
        """Count one more connection from ``address`` (False, and a metric, when full), given
        back when the TCP connection is gone, whichever way it ends."""
        # Nothing awaits between the check and the count, so concurrent connections from one
        # address cannot all slip under the limit.
        if not self.per_ip.acquire(address):
            metrics.CLOSES.labels("per_ip").inc()
            return False
        connection.counted_as = address
        wsadapter.when_lost(connection, lambda _: self.per_ip.release(address))
        return True

    # One connection

    async def handler(self, connection: GatewayConnection) -> None:
        s = self.settings
        wsadapter.clear_handshake(connection)
        sink = ConnectionSink(connection, s.gateway_close_timeout)
        client = Client(sink)
        limiter = RateLimit(
            s.gateway_inbound_per_second, s.gateway_inbound_burst, self.clock.monotonic()
        )
        fanout = self.fanouts[connection.board_id]
        # A partial, not a closure: about half the bytes, times every connection.
        connection.on_drain = functools.partial(self._catch_up[fanout.board_id], client)
        fanout.add(client)  # the snapshot, as soon as the board is loaded
        metrics.CONNECTIONS.inc()
        reason = "client"
        try:
            async for message in connection:
                if client.closing:
                    continue  # closing: keep reading so the client's close frame gets through
                if not limiter.allow(self.clock.monotonic()):
                    fanout.close(client, CloseCode.POLICY_VIOLATION, "too many messages", "rate")
                    continue
                if is_resync(message):
                    fanout.resync(client)
        except ConnectionClosed:
            reason = "error"
        finally:
            connection.on_drain = None
            fanout.remove(client)
            metrics.CONNECTIONS.dec()
        if client.closing:
            reason = client.closing
        elif wsadapter.close_code_sent(connection) == CloseCode.MESSAGE_TOO_BIG:
            reason = "oversize"
        metrics.CLOSES.labels(reason).inc()

    # Background loops

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_ping_seconds)
            for fanout in self.fanouts.values():
                fanout.ping()

    async def _watchdog(self) -> None:
        s = self.settings
        period = min(1.0, s.gateway_slow_seconds / 4)
        while True:
            await asyncio.sleep(period)
            now = self.clock.monotonic()
            for fanout in self.fanouts.values():
                for client in fanout.stuck(now, s.gateway_slow_bytes, s.gateway_slow_seconds):
                    fanout.close(client, CloseCode.TRY_AGAIN_LATER, "too slow", "slow")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # Lifecycle

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve until the block exits, then shut down gracefully; yields the WebSocket URL."""
        s = self.settings
        self.server = await wsadapter.listen(s, self.handler, self.process_request, self.accept)
        loops = [
            self._spawn(self.feed.run()),
            self._spawn(self._pinger()),
            self._spawn(self._watchdog()),
        ]
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"ws://{s.gateway_host}:{port}{s.gateway_path}"
        try:
            yield self.url
        finally:
            try:
                await self.shutdown()
            finally:
                for task in loops:
                    task.cancel()
                # Bounded: a loop or a client stuck inside a library call must not keep the
                # process past its shutdown deadline.
                _, stuck = await asyncio.wait(loops, timeout=STOP_SECONDS)
                if stuck:
                    log.warning("%d background tasks did not stop in time", len(stuck))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STOP_SECONDS):
                        await self.feed.aclose()

    async def shutdown(self) -> None:
        """Stop accepting, close clients with 1012 in batches, finish within the deadline."""
        assert self.server is not None
        s = self.settings
        deadline = self.clock.monotonic() + s.gateway_shutdown_seconds
        wsadapter.stop_accepting(self.server)  # new handshakes now get 503 from websockets
        followed = [(f, c) for f in self.fanouts.values() for c in f.clients]
        groups = batches(followed, s.gateway_shutdown_batch)
        # Spread the batches over at most half the deadline so clients reconnect elsewhere
        # gradually instead of all at once.
        pause = min(0.5, s.gateway_shutdown_seconds / 2 / max(1, len(groups)))
        for i, group in enumerate(groups):
            if i:
                await asyncio.sleep(pause)
            for fanout, client in group:
                fanout.close(client, CloseCode.SERVICE_RESTART, "service restart", "shutdown")
        # Every sink the gateway adds is a ConnectionSink; the fan-out only knows them as sinks.
        sinks = [
            c.sink
            for f in self.fanouts.values()
            for c in f.clients
            if isinstance(c.sink, ConnectionSink)
        ]
        await self._wait_gone(sinks, deadline)
        for sink in sinks:
            if not sink.lost.done():
                sink.abort()
        self.server.close(close_connections=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - self.clock.monotonic())):
                await self.server.wait_closed()

    async def _wait_gone(self, sinks: Sequence[ConnectionSink], deadline: float) -> None:
        """Until every one of ``sinks`` has lost its connection, or the deadline."""
        pending = [sink.lost for sink in sinks if not sink.lost.done()]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - self.clock.monotonic()))
