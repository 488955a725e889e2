"""Everything the gateway relies on in websockets, beyond its documented API, in one module.

The fan-out writes to a ``ConnectionSink``: frames go straight into the connection's asyncio
transport, past the protocol object, which keeps no state about outgoing data frames; frames
are written whole, so they never interleave with its own control frames (pong, close).

What this module reads or calls, each proved by ``tests/test_wsadapter_contract.py`` against
the pinned range of websockets (pyproject.toml):

- ``Connection.paused``, ``pause_writing`` / ``resume_writing``: the transport's flow control;
- ``Connection.transport`` (``write``, ``get_write_buffer_size``, ``abort``, the socket);
- ``Connection.protocol`` (``state``, ``send_close``, ``close_sent``) and ``send_data()``;
- ``Connection.connection_lost_waiter``: resolved once when the TCP connection is gone, also
  for handshakes refused after ``process_request``;
- ``Connection.connection_made``: called at the TCP accept, before any byte of the handshake;
- ``Connection.request`` / ``response`` headers, and ``Server.server`` (the asyncio server);
- ``frames.Frame.serialize`` and ``http11.Response`` for the bytes we build ourselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import socket
from collections.abc import Awaitable, Callable
from typing import cast

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from services.broadcast_gateway.settings import GatewaySettings
from shared.health import Answer

__all__ = [
    "CloseCode",
    "ConnectionClosed",
    "ConnectionSink",
    "GatewayConnection",
    "Request",
    "Response",
    "Server",
    "abort_after",
    "clear_handshake",
    "close_code_sent",
    "http_response",
    "listen",
    "peer_host",
    "set_send_buffer",
    "stop_accepting",
    "text_frame",
    "when_lost",
]

OPEN = State.OPEN


def text_frame(message: bytes) -> bytes:
    """``message`` as one unmasked, unfragmented text frame, the same bytes for every client:
    server frames are not masked and the gateway runs without extensions."""
    return Frame(Opcode.TEXT, message).serialize(mask=False)


class GatewayConnection(ServerConnection):
    """A server connection that says when its write buffer has drained (``on_drain``), and
    tells ``accepted`` of each TCP connection before any byte of its handshake."""

    on_drain: Callable[[], object] | None = None
    # The per-address subject it was counted under (None: not counted yet).
    counted_as: str | None = None
    # Over its address's limit at the TCP accept: refused at the handshake, or aborted soon.
    over_limit = False
    # The board its client follows (``?board=``), decided at the handshake.
    board_id = "all-time"

    def accepted(self) -> None:
        """Called at the TCP accept, before the handshake's first byte (``listen``)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.accepted()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_drain is not None:
            # Not from inside the transport's own write path: on the next loop iteration.
            self.loop.call_soon(self.on_drain)


class ConnectionSink:
    """A connection as the fan-out's ``Sink``."""

    __slots__ = ("_close_timeout", "_connection", "_protocol", "_transport")

    def __init__(self, connection: GatewayConnection, close_timeout: float) -> None:
        # Both are set once the connection is made and never replaced: cached, because
        # ``writable`` and ``write`` run once per client and broadcast.
        self._connection = connection
        self._protocol = connection.protocol
        self._transport = connection.transport
        self._close_timeout = close_timeout

    @property
    def writable(self) -> bool:
        # ``paused`` is the transport's flow control: above the high-water mark until the
        # buffer falls below the low-water mark.
        return self._protocol.state is OPEN and not self._connection.paused

    @property
    def unsent(self) -> int:
        return self._transport.get_write_buffer_size()

    def write(self, frame: bytes) -> bool:
        try:
            self._transport.write(frame)
        except Exception:  # the connection is closing; its handler cleans up
            return False
        return True

    def close(self, code: int, reason: str) -> None:
        """Queue the close frame now and abort the TCP connection if it is not gone within the
        close timeout.

        ``connection.close()`` first waits for the write buffer to drain, which a client that
        does not read never lets happen; here nothing waits, and the deadline covers the
        whole closing handshake.
        """
        # Already closing or closed: then only the deadline is left to enforce.
        with contextlib.suppress(Exception):
            self._protocol.send_close(code, reason)
            self._connection.send_data()
        lost = self._connection.connection_lost_waiter
        if not lost.done():
            timer = self._connection.loop.call_later(self._close_timeout, self._transport.abort)
            lost.add_done_callback(lambda _: timer.cancel())

    @property
    def lost(self) -> asyncio.Future[None]:
        """Resolved when the TCP connection is gone."""
        return self._connection.connection_lost_waiter

    def abort(self) -> None:
        self._transport.abort()


# Handshake


def peer_host(connection: ServerConnection) -> str | None:
    """The TCP peer's address (None on a Unix socket)."""
    remote = connection.remote_address
    return remote[0] if isinstance(remote, tuple) and remote else None


def set_send_buffer(connection: ServerConnection, size: int) -> None:
    sock = connection.transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def when_lost(
    connection: ServerConnection, callback: Callable[[asyncio.Future[None]], object]
) -> None:
    """Call ``callback`` once the TCP connection is gone, whichever way: after the handler, or
    when websockets refuses the handshake after ``process_request`` (no Upgrade: 426; shutting
    down: 503; handshake timeout), where the handler never runs. It runs exactly once."""
    # Handed over as is, not wrapped: one closure per connection is enough.
    connection.connection_lost_waiter.add_done_callback(callback)


def clear_handshake(connection: ServerConnection) -> None:
    """Drop the handshake's headers (about 2.5 KiB), which the parser keeps alive for the life
    of the connection; only ``process_request`` needed them."""
    for handshake in (connection.request, connection.response):
        if handshake is not None:
            handshake.headers.clear()


def close_code_sent(connection: ServerConnection) -> int | None:
    """The code of the close frame the server sent (websockets' own, e.g. 1009), if any."""
    sent = connection.protocol.close_sent
    return None if sent is None else sent.code


def abort_after(connection: ServerConnection, seconds: float) -> None:
    """Abort the TCP connection in ``seconds`` unless it is gone by then."""
    timer = connection.loop.call_later(seconds, connection.transport.abort)
    connection.connection_lost_waiter.add_done_callback(lambda _: timer.cancel())


def http_response(answer: Answer, retry_after: int | None = None) -> Response:
    """A plain HTTP answer to a request that does not become a WebSocket."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(answer.body))),
            ("Content-Type", answer.content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    status = answer.status
    return Response(status, http.HTTPStatus(status).phrase, headers, answer.body)


# Server


async def listen(
    settings: GatewaySettings,
    handler: Callable[[GatewayConnection], Awaitable[None]],
    process_request: Callable[[GatewayConnection, Request], Awaitable[Response | None]],
    accept: Callable[[GatewayConnection], None] = lambda _: None,
) -> Server:
    """websockets' server with ``GatewayConnection``s and no compression (one frame for all);
    ``accept`` decides at each TCP accept (``GatewayConnection.accepted``)."""
    s = settings

    class Connection(GatewayConnection):
        def accepted(self) -> None:
            accept(self)

    # Every connection is a GatewayConnection (create_connection), which serve() types as
    # its base class.
    return await serve(
        cast(Callable[[ServerConnection], Awaitable[None]], handler),
        s.gateway_host,
        s.gateway_port,
        process_request=cast(
            Callable[[ServerConnection, Request], Awaitable[Response | None]], process_request
        ),
        create_connection=Connection,
        compression=None,
        max_size=s.gateway_max_message_bytes,
        max_queue=4,
        write_limit=s.gateway_slow_bytes,
        open_timeout=s.gateway_handshake_timeout,
        ping_interval=s.gateway_protocol_ping_interval,
        ping_timeout=s.gateway_protocol_ping_timeout,
        close_timeout=s.gateway_close_timeout,
    )


def stop_accepting(server: Server) -> None:
    """Close the listening sockets; new handshakes in flight get 503 from websockets."""
    server.server.close()
