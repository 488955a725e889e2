"""The gateway's network side: WebSocket endpoint, HTTP probes, limits and graceful shutdown.

Close codes and HTTP refusals, in one place:

    403  handshake   Origin not in the allowlist, or sent twice   closes{reason="origin"}
    429  handshake   the client address holds its connection      closes{reason="per_ip"}
                     limit (Retry-After: 5)
    503  handshake   connection cap reached                       closes{reason="capacity"}
                     (and, from websockets itself, while shutting down)
    1008 policy      more inbound messages than the rate limit    closes{reason="rate"}
    1009 too big     an inbound message over the size limit       closes{reason="oversize"}
    1012 restart     SIGTERM: the instance is going away          closes{reason="shutdown"}
    1013 try later   unsent bytes stayed above the limit          closes{reason="slow"}

The client address is the TCP peer's, or the first untrusted hop of X-Forwarded-For when the
peer is a trusted proxy (shared.netaddr.client_ip).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from services.broadcast_gateway import metrics
from services.broadcast_gateway.fanout import Client, Fanout, FanoutConnection, batches
from services.broadcast_gateway.limits import IpCounter
from services.broadcast_gateway.protocol import RateLimit, is_resync
from services.broadcast_gateway.reader import BoardFeed
from services.broadcast_gateway.settings import GatewaySettings
from shared.netaddr import client_ip, parse_networks

log = logging.getLogger(__name__)
# After the shutdown deadline: how long background loops and Redis clients get to stop.
STOP_SECONDS = 2.0


def origin_allowed(origin: str | None, allowed: list[str], allow_missing: bool) -> bool:
    if origin is None:
        return allow_missing
    return "*" in allowed or origin in allowed


def peer_host(connection: ServerConnection) -> str | None:
    """The TCP peer's address (None on a Unix socket)."""
    remote = connection.remote_address
    return remote[0] if isinstance(remote, tuple) and remote else None


def refusal(status: int, text: bytes, retry_after: int | None = None) -> Response:
    response = http_response(status, text, "text/plain; charset=utf-8")
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def http_response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(status: int, body: object) -> Response:
    return http_response(status, orjson.dumps(body), "application/json")


async def close_within(connection: ServerConnection, code: int, reason: str, within: float) -> None:
    """Start the closing handshake and abort the TCP connection if it is not done in time.

    ``connection.close()`` first waits for the write buffer to drain, which a client that does
    not read never lets happen; here the close frame is queued without waiting, and the
    deadline covers the whole handshake.
    """
    # Already closing or closed: then only the deadline is left to enforce.
    with contextlib.suppress(Exception):
        connection.protocol.send_close(code, reason)
        connection.send_data()
    try:
        async with asyncio.timeout(within):
            await connection.wait_closed()
    except TimeoutError:
        connection.transport.abort()


class Gateway:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.fanout = Fanout()
        self.feed = BoardFeed(settings, self.fanout)
        self.server: Server | None = None
        self.trusted = parse_networks(settings.gateway_trusted_proxies)
        self.per_ip = IpCounter(settings.gateway_max_connections_per_ip)
        self.url = ""  # the WebSocket URL, once running
        self._background: set[asyncio.Task[Any]] = set()

    # Handshake and plain HTTP

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        s = self.settings
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return json_response(200, {"status": "ok"})
        if path == "/readyz":
            if await self.feed.ready():
                return json_response(200, {"status": "ready", "version": self.fanout.version})
            return json_response(503, {"status": "unavailable"})
        if path == "/metrics":
            return http_response(200, generate_latest(), CONTENT_TYPE_LATEST)
        if path != s.gateway_path:
            return json_response(404, {"status": 404, "detail": "not found"})
        origins = request.headers.get_all("Origin")
        if len(origins) > 1 or not origin_allowed(
            origins[0] if origins else None,
            s.gateway_allowed_origins,
            s.gateway_allow_missing_origin,
        ):
            metrics.CLOSES.labels("origin").inc()
            return refusal(403, b"origin not allowed\n")
        # Handshakes still in flight may overshoot the cap by a few; it bounds memory, not a count.
        if len(self.fanout.clients) >= s.gateway_max_connections:
            metrics.CLOSES.labels("capacity").inc()
            return refusal(503, b"connection limit reached\n", retry_after=5)
        if s.gateway_socket_send_buffer:
            sock = connection.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, s.gateway_socket_send_buffer)
        # Proxies may append a header each time instead of extending one (RFC 9110 5.3).
        forwarded = ", ".join(request.headers.get_all("X-Forwarded-For")) or None
        address = client_ip(peer_host(connection), forwarded, self.trusted)
        # Nothing awaits between this check and the count, so concurrent handshakes from one
        # address cannot all slip under the limit. Last check: nothing below refuses.
        if not self.per_ip.acquire(address):
            metrics.CLOSES.labels("per_ip").inc()
            return refusal(429, b"too many connections from this address\n", retry_after=5)
        # Given back when the TCP connection is gone, whichever way: after the handler, or
        # when websockets refuses the handshake after us (no Upgrade: 426; shutting down: 503;
        # handshake timeout), where the handler never runs. connection_lost runs exactly once.
        connection.connection_lost_waiter.add_done_callback(lambda _: self.per_ip.release(address))
        return None

    # One connection

    async def handler(self, connection: ServerConnection) -> None:
        s = self.settings
        # The parser keeps the handshake request alive for the life of the connection; its
        # headers (about 2.5 KiB) were only needed by process_request.
        for handshake in (connection.request, connection.response):
            if handshake is not None:
                handshake.headers.clear()
        client = Client(
            connection, RateLimit(s.gateway_inbound_per_second, s.gateway_inbound_burst)
        )
        self.fanout.add(client)  # the snapshot, as soon as the board is loaded
        metrics.CONNECTIONS.inc()
        reason = "client"
        try:
            async for message in connection:
                if client.close_reason:
                    continue  # closing: keep reading so the client's close frame gets through
                if not client.limiter.allow():
                    client.close_reason = "rate"
                    self._close(client, CloseCode.POLICY_VIOLATION, "too many messages")
                    continue
                if is_resync(message):
                    self.fanout.resync(client)
        except ConnectionClosed:
            reason = "error"
        finally:
            self.fanout.remove(client)
            metrics.CONNECTIONS.dec()
        sent = connection.protocol.close_sent
        if client.close_reason:
            reason = client.close_reason
        elif sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG:
            reason = "oversize"
        metrics.CLOSES.labels(reason).inc()

    # Background loops

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.settings.gateway_ping_seconds)
            self.fanout.ping()

    async def _watchdog(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        period = min(1.0, s.gateway_slow_seconds / 4)
        while True:
            await asyncio.sleep(period)
            for client in self.fanout.slow_clients(
                loop.time(), s.gateway_slow_bytes, s.gateway_slow_seconds
            ):
                if client.close_reason is None:
                    client.close_reason = "slow"
                    self._close(client, CloseCode.TRY_AGAIN_LATER, "too slow")

    def _close(self, client: Client, code: int, reason: str) -> asyncio.Task[None]:
        timeout = self.settings.gateway_close_timeout
        return self._spawn(close_within(client.connection, code, reason, timeout))

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
        self.server = await serve(
            self.handler,
            s.gateway_host,
            s.gateway_port,
            process_request=self.process_request,
            create_connection=FanoutConnection,
            compression=None,
            max_size=s.gateway_max_message_bytes,
            max_queue=4,
            write_limit=s.gateway_slow_bytes,
            open_timeout=s.gateway_handshake_timeout,
            ping_interval=s.gateway_protocol_ping_interval,
            ping_timeout=s.gateway_protocol_ping_timeout,
            close_timeout=s.gateway_close_timeout,
        )
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.gateway_shutdown_seconds
        self.server.server.close()  # new handshakes now get 503 from websockets
        groups = batches(self.fanout.clients, s.gateway_shutdown_batch)
        # Spread the batches over at most half the deadline so clients reconnect elsewhere
        # gradually instead of all at once.
        pause = min(0.5, s.gateway_shutdown_seconds / 2 / max(1, len(groups)))
        closing: list[asyncio.Task[None]] = []
        for i, group in enumerate(groups):
            if i:
                await asyncio.sleep(pause)
            for client in group:
                client.close_reason = client.close_reason or "shutdown"
                closing.append(self._close(client, CloseCode.SERVICE_RESTART, "service restart"))
        if closing:
            await asyncio.wait(closing, timeout=max(0.0, deadline - loop.time()))
        for client in list(self.fanout.clients):
            client.connection.transport.abort()
        self.server.close(close_connections=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                await self.server.wait_closed()
