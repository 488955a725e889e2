"""The request-head bounds: the protocol against a fake transport and clock, then the real
``python -m services.score_api`` process under slow, oversize and too many connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import orjson
import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from services.score_api.httplimits import (
    HeadLimits,
    LimitedHttpToolsProtocol,
    head_size,
    limited_protocol,
    refusal,
)
from services.score_api.problems import PROBLEM_TYPE, Problem
from services.score_api.settings import ApiSettings
from tests.support import api_process

LIMITS = HeadLimits(timeout_seconds=10, max_bytes=2048, max_connections=2)
GET = b"GET /healthz HTTP/1.1\r\nhost: api\r\n\r\n"


# The pure parts


def test_head_size_is_the_canonical_head_in_bytes() -> None:
    headers = [(b"host", b"api"), (b"user-agent", b"game/1.0")]
    written = b"GET /api/score-board?limit=10 HTTP/1.1\r\nhost: api\r\nuser-agent: game/1.0\r\n\r\n"
    assert head_size(b"GET", b"/api/score-board?limit=10", headers) == len(written)


def test_refusal_is_a_complete_closing_problem_response() -> None:
    slug = "header-too-large"
    problem = Problem(431, slug, "big", headers={"Retry-After": "3"})
    raw = refusal(problem, [(b"server", b"uvicorn")])
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    fields = dict(line.split(b": ", 1) for line in lines)
    assert fields == {
        b"server": b"uvicorn",
        b"retry-after": b"3",
        b"content-type": b"application/problem+json",
        b"content-length": str(len(body)).encode(),
        b"connection": b"close",
    }
    assert orjson.loads(body) == {
        "type": PROBLEM_TYPE + slug,
        "title": "Request Header Fields Too Large",
        "status": 431,
        "detail": "big",
    }


def test_settings_defaults_and_bounds() -> None:
    settings = ApiSettings()
    assert settings.api_header_timeout_seconds == 10
    assert settings.api_max_header_bytes == 16 * 1024
    assert settings.api_max_connections == 1000
    with pytest.raises(ValueError, match="greater than"):
        ApiSettings(api_header_timeout_seconds=0)
    with pytest.raises(ValueError, match="greater than"):
        ApiSettings(api_max_header_bytes=100)


# The protocol, sans I/O: a transport that records and a clock the test moves


class FakeTransport:
    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        self.callback = None


class FakeLoop:
    """The running loop's tasks, but timers that fire only when the test says."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.create_task = asyncio.get_running_loop().create_task

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        self.timers.append(Timer(callback))
        return self.timers[-1]

    def head_timers(self) -> list[Timer]:
        """Pending head deadlines (not uvicorn's keep-alive timer)."""
        return [
            t for t in self.timers if t.callback is not None and t.callback.__name__ == "_timed_out"
        ]

    def fire(self) -> None:
        for timer in self.head_timers():
            if timer.callback is not None:
                timer.callback()

    @property
    def armed(self) -> int:
        return len(self.head_timers())


class Conn:
    """One connection to the protocol: what it wrote, whether the app saw a request."""

    def __init__(self, state: ServerState, calls: list[str]) -> None:
        self.loop = FakeLoop()
        self.transport = FakeTransport()
        self.calls = calls
        self.protocol = limited_protocol(LIMITS)(
            config=CONFIG,
            server_state=state,
            app_state={},
            _loop=self.loop,  # type: ignore[arg-type]
        )
        self.protocol.connection_made(self.transport)  # type: ignore[arg-type]

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    def status(self) -> int | None:
        if not self.transport.written:
            return None
        return int(self.transport.written.split(b" ", 2)[1])


async def ok(scope: Any, receive: Any, send: Any) -> None:
    CALLS.append(scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


CALLS: list[str] = []
CONFIG = Config(
    ok,
    http=LimitedHttpToolsProtocol,
    ws="none",
    lifespan="off",
    log_config=None,
    proxy_headers=False,
)


@pytest.fixture
async def conn() -> AsyncIterator[Callable[[], Conn]]:
    state = ServerState()
    CALLS.clear()
    opened: list[Conn] = []

    def open_one() -> Conn:
        opened.append(Conn(state, CALLS))
        return opened[-1]

    yield open_one
    for c in opened:
        c.protocol.connection_lost(None)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_head_in_time_reaches_the_app_and_stops_the_clock(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    assert c.loop.armed == 1
    c.send(GET)
    await settle()
    assert c.loop.armed == 0
    assert c.status() == 200
    assert CALLS == ["/healthz"]
    c.loop.fire()
    assert not c.transport.closed


async def test_a_head_not_finished_in_time_gets_408_and_the_connection_closes(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    c.send(b"GET /healthz HTTP/1.1\r\nhost: api\r\n")
    c.loop.fire()
    assert c.status() == 408
    assert c.transport.closed
    c.send(b"\r\n")  # the rest, too late: nothing reaches the app
    await settle()
    assert CALLS == []


async def test_a_connection_that_never_speaks_is_closed_without_a_word(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    c.loop.fire()
    assert c.transport.closed
    assert c.transport.written == b""


async def test_a_kept_alive_connection_starts_the_clock_at_its_next_request(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    c.send(GET)
    await settle()
    assert c.loop.armed == 0  # idle between requests is uvicorn's keep-alive timeout's job
    c.send(b"GET /readyz HTTP/1.1\r\n")
    assert c.loop.armed == 1
    c.loop.fire()
    assert c.transport.written.count(b"HTTP/1.1 408 ") == 1


async def test_a_head_trickled_past_the_limit_gets_431_before_it_is_buffered(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    c.send(b"GET / HTTP/1.1\r\nx-big: ")
    sent = 0
    while not c.transport.closed and sent < 8 * 1024 * 1024:
        c.send(b"a" * 512)
        sent += 512
    assert c.status() == 431
    assert sent <= LIMITS.max_bytes
    await settle()
    assert CALLS == []


async def test_a_head_over_the_limit_in_one_read_gets_431_and_never_reaches_the_app(
    conn: Callable[[], Conn],
) -> None:
    c = conn()
    c.send(
        b"POST / HTTP/1.1\r\nx-big: " + b"a" * LIMITS.max_bytes + b"\r\ncontent-length: 2\r\n\r\n{}"
    )
    await settle()
    assert c.status() == 431
    assert c.transport.closed
    assert CALLS == []


async def test_a_head_of_exactly_the_limit_is_accepted(conn: Callable[[], Conn]) -> None:
    c = conn()
    base = len(b"GET / HTTP/1.1\r\nx-pad: \r\n\r\n")
    c.send(b"GET / HTTP/1.1\r\nx-pad: " + b"a" * (LIMITS.max_bytes - base) + b"\r\n\r\n")
    await settle()
    assert c.status() == 200
    c2 = conn()
    c2.send(b"GET / HTTP/1.1\r\nx-pad: " + b"a" * (LIMITS.max_bytes - base + 1) + b"\r\n\r\n")
    assert c2.status() == 431


async def test_connections_beyond_the_cap_get_503_at_once(conn: Callable[[], Conn]) -> None:
    held = [conn() for _ in range(LIMITS.max_connections)]
    assert all(not c.transport.closed for c in held)
    extra = conn()
    assert extra.status() == 503
    assert b"retry-after: 1\r\n" in extra.transport.written
    assert extra.transport.closed
    extra.protocol.connection_lost(None)
    held[0].protocol.connection_lost(None)
    assert conn().status() is None  # one left: there is room again


# The real process: production's uvicorn configuration


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes. A reset (the server closed with our bytes unread)
    ends the reading: what came before it is kept."""
    data = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def open_to(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def send_until_closed(writer: asyncio.StreamWriter, chunks: Iterable[bytes]) -> int:
    """Bytes written before the server stopped taking them (or all of them)."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            if writer.transport.is_closing():
                break
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), 10)
            sent += len(chunk)
    return sent


async def test_slow_heads_are_cut_off_by_the_api_process(redis_url: str, key_prefix: str) -> None:
    async with api_process(redis_url, key_prefix, API_HEADER_TIMEOUT_SECONDS="0.5") as url:
        silent_reader, silent = await open_to(url)
        reader, writer = await open_to(url)
        answer = asyncio.create_task(read_all(reader))
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        # A header line every 50 ms keeps the connection busy, which an idle timeout allows.
        lines = 0
        with contextlib.suppress(ConnectionError):
            for lines in range(1, 201):
                await asyncio.sleep(0.05)
                if answer.done():
                    break
                writer.write(b"x-slow-%d: 1\r\n" % lines)
        assert (await asyncio.wait_for(answer, 10)).startswith(b"HTTP/1.1 408 ")
        assert lines < 200, "the trickle was never cut off"
        assert await asyncio.wait_for(read_all(silent_reader), 10) == b""
        writer.close()
        silent.close()


async def test_oversize_heads_get_431_from_the_api_process(redis_url: str, key_prefix: str) -> None:
    async with api_process(redis_url, key_prefix, API_MAX_HEADER_BYTES="4096") as url:
        reader, writer = await open_to(url)
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: api\r\nx-big: " + b"a" * 8192 + b"\r\n\r\n")
        assert (await asyncio.wait_for(read_all(reader), 10)).startswith(b"HTTP/1.1 431 ")
        writer.close()
        # 8 MiB in one header: the process stops reading long before the end.
        reader, writer = await open_to(url)
        answer = asyncio.create_task(read_all(reader))
        head = [b"GET /healthz HTTP/1.1\r\nhost: api\r\nx-big: "] + [b"a" * 65536] * 128
        sent = await send_until_closed(writer, head)
        assert sent < 8 * 1024 * 1024
        # The answer, unless the reset for the unread rest overtook it.
        result = await asyncio.wait_for(answer, 10)
        assert result == b"" or result.startswith(b"HTTP/1.1 431 ")
        writer.close()
        assert (await ask(url)).startswith(b"HTTP/1.1 200 ")


async def ask(url: str) -> bytes:
    reader, writer = await open_to(url)
    writer.write(b"GET /healthz HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(read_all(reader), 10)
    finally:
        writer.close()


async def test_the_api_process_refuses_connections_beyond_its_cap(
    redis_url: str, key_prefix: str
) -> None:
    cap = 3
    async with api_process(redis_url, key_prefix, API_MAX_CONNECTIONS=str(cap)) as url:
        held: list[asyncio.StreamWriter] = []
        # Each held connection proves itself with a kept-alive answer. The readiness probe's
        # connection may still be closing on the server: a refusal then is retried.
        for _ in range(20):
            if len(held) == cap:
                break
            reader, writer = await open_to(url)
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: api\r\n\r\n")
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                if (await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)).startswith(
                    b"HTTP/1.1 200 "
                ):
                    held.append(writer)
                    continue
            writer.close()
            await asyncio.sleep(0.05)
        assert len(held) == cap
        # Refused at once, before a byte is sent.
        reader, writer = await open_to(url)
        refused = await asyncio.wait_for(read_all(reader), 10)
        writer.close()
        assert refused.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1\r\n" in refused
        held.pop().close()
        for _ in range(20):
            answer = await ask(url)
            if answer.startswith(b"HTTP/1.1 200 "):
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200 ")
        for writer in held:
            writer.close()
