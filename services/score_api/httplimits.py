"""Bounds on what one HTTP client may hold before its request reaches the app: the time to
send a request head, the head's size, and the number of connections per process.

uvicorn's httptools protocol has none of these; ``limited_protocol`` is that protocol with
them, for ``uvicorn.Config(http=...)``. The decisions are plain functions; the subclass only
counts, arms a timer and writes the refusal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from services.score_api.problems import Problem

Headers = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True)
class HeadLimits:
    """``timeout_seconds`` from the connection (or a later request's first byte) to the end
    of its head; ``max_bytes`` of one head; ``max_connections`` open at once per process."""

    timeout_seconds: float
    max_bytes: int
    max_connections: int


def head_size(method: bytes, url: bytes, headers: Headers) -> int:
    """The bytes of a request head written canonically: ``METHOD url HTTP/1.1``, one
    ``name: value`` line per header, the blank line."""
    request_line = len(method) + 1 + len(url) + len(b" HTTP/1.1\r\n")
    return request_line + sum(len(n) + 2 + len(v) + 2 for n, v in headers) + 2


def refusal(problem: Problem, headers: Headers = ()) -> bytes:
    """``problem`` as a whole response that closes the connection, as bytes to write (there is
    no request for the app's error handler to answer: the head never completed)."""
    body = problem.document()
    lines = [f"HTTP/1.1 {problem.status} {HTTPStatus(problem.status).phrase}".encode()]
    lines += [n + b": " + v for n, v in headers]
    lines += [f"{n.lower()}: {v}".encode("latin-1") for n, v in problem.headers.items()]
    lines += [
        b"content-type: application/problem+json",
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


TOO_LARGE = Problem(431, "header-too-large", "the request line and headers exceed the limit")
TOO_SLOW = Problem(408, "header-timeout", "the request head took too long")
BUSY = Problem(503, "connection-limit", "too many open connections", headers={"Retry-After": "1"})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing connections beyond the cap, heads beyond the
    size limit (431) and heads that do not finish in time (408, or a silent close when the
    client never sent a byte)."""

    limits: HeadLimits

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_started = False  # a request's first byte came and its head is not complete
        self._head_received = 0  # bytes received while that head was incomplete
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(BUSY)
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._head_started and not self._refused:
            # httptools buffers a header until it ends: stop before one line eats the memory.
            # Counts the whole read, so a read that also ends the previous request counts it.
            self._head_received += len(data)
            if self._head_received > self.limits.max_bytes:
                self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_received = 0
        if self._deadline is None:
            self._arm()  # a later request on a kept-alive connection: its clock starts now

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_started = False
        self._disarm()
        if head_size(self.parser.get_method(), self.url, self.headers) > self.limits.max_bytes:
            self._refuse(TOO_LARGE)
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.limits.timeout_seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self._head_started:
            self._refuse(TOO_SLOW)
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, problem: Problem) -> None:
        self._refused = True
        self._disarm()
        if not self.transport.is_closing():
            headers = self.server_state.default_headers
            self.transport.write(refusal(problem, headers))
            self.transport.close()


def limited_protocol(limits: HeadLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``, bound to ``limits``."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
