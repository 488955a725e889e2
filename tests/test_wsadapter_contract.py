"""What wsadapter relies on in websockets, proved on a real localhost server (no mocks).

Each test names one attribute or behaviour the adapter uses; a websockets upgrade that breaks
one fails here, not in production. The flow-control and close tests run on both event loops
the gateway meets: asyncio's (the tests) and uvloop (``python -m services.broadcast_gateway``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.streams import StreamReader

from services.broadcast_gateway import wsadapter
from services.broadcast_gateway.fanout import Fanout
from services.broadcast_gateway.settings import GatewaySettings
from services.broadcast_gateway.wsadapter import (
    ConnectionSink,
    GatewayConnection,
    Request,
    Response,
    text_frame,
)
from shared.health import Answer

WAIT = 10.0  # a bound on every wait, far above what each step needs
LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Handler = Callable[[GatewayConnection], Awaitable[None]]
ProcessRequest = Callable[[GatewayConnection, Request], Awaitable[Response | None]]


def run(loop_factory: LoopFactory, scenario: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario)


async def accept_all(connection: GatewayConnection, request: Request) -> Response | None:
    return None


@asynccontextmanager
async def listening(
    handler: Handler,
    process_request: ProcessRequest = accept_all,
    accept: Callable[[GatewayConnection], None] = lambda _: None,
    **settings: Any,
) -> AsyncIterator[str]:
    """wsadapter.listen on a free loopback port; yields the WebSocket URL."""
    options: dict[str, Any] = {"gateway_port": 0, "gateway_close_timeout": 0.5} | settings
    server = await wsadapter.listen(GatewaySettings(**options), handler, process_request, accept)
    try:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws/score"
    finally:
        server.close()
        async with asyncio.timeout(WAIT):
            await server.wait_closed()


class Connected:
    """The server side of the one connection a test makes, handed to the test."""

    def __init__(self) -> None:
        self.ready: asyncio.Future[GatewayConnection] = asyncio.get_running_loop().create_future()
        self.done = asyncio.Event()

    async def handler(self, connection: GatewayConnection) -> None:
        self.ready.set_result(connection)
        try:
            async for _ in connection:
                pass
        except ConnectionClosed:
            pass  # as the gateway's handler: an abnormal close is no handler failure
        finally:
            self.done.set()

    async def connection(self) -> GatewayConnection:
        async with asyncio.timeout(WAIT):
            return await self.ready


def state(connection: GatewayConnection) -> State:
    return connection.protocol.state


def stalled_socket(url: str) -> socket.socket:
    """A connected client socket with a tiny receive buffer: not reading backs up fast."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def fill(connection: GatewayConnection, sink: ConnectionSink) -> int:
    """Write 1 KiB frames until the sink says stop; the number written."""
    frame = text_frame(b"x" * 1024)
    for written in range(10_000):
        if not sink.writable:
            return written
        assert sink.write(frame)
        await asyncio.sleep(0)  # let the transport try to send
    raise AssertionError("never paused")


async def read_all(ws: ClientConnection) -> list[str | bytes]:
    got: list[str | bytes] = []
    async with asyncio.timeout(WAIT):
        try:
            while True:
                got.append(await ws.recv())
        except ConnectionClosed:
            return got


def parse_frame(data: bytes) -> Frame:
    """One server frame, read back with websockets' own parser (what a client would see)."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert reader.at_eof(), "one frame, nothing after it"
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536])
def test_text_frame_round_trips_at_every_length_encoding(size: int) -> None:
    message = b"x" * size
    frame = parse_frame(text_frame(message))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, message)


def test_message_frames_are_shared_not_rebuilt_per_client() -> None:
    # The serialized frame is one bytes object per version, written as is to every client.
    fanout = Fanout(text_frame)
    fanout.reset(())
    version, first = fanout.snapshot()
    assert fanout.snapshot()[1] is first
    assert orjson.loads(first) == {
        "type": "snapshot",
        "version": version,
        "board_id": "all-time",
        "period": "all",
        "board": [],
    }
    frame = fanout.snapshot_frame()
    assert fanout.snapshot_frame() is frame
    assert parse_frame(frame).data == first


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_paused_flips_under_backpressure_and_resume_writing_reports_the_drain(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        server = Connected()
        async with listening(server.handler, gateway_slow_bytes=4096) as url:
            sock = stalled_socket(url)
            async with connect(
                url, sock=sock, max_queue=1, compression=None, close_timeout=0.5
            ) as ws:
                connection = await server.connection()
                wsadapter.set_send_buffer(connection, 4096)
                sink = ConnectionSink(connection, 1.0)
                drained = asyncio.Event()
                connection.on_drain = drained.set
                assert connection.protocol.state is State.OPEN
                assert not connection.paused
                written = await fill(connection, sink)
                # Above the high-water mark: websockets' flag follows the transport's.
                assert connection.paused
                assert not sink.writable
                assert sink.unsent > 4096
                assert sink.unsent == connection.transport.get_write_buffer_size()
                assert not drained.is_set()
                async with asyncio.timeout(WAIT):
                    for _ in range(written):
                        assert await ws.recv() == "x" * 1024
                    await drained.wait()  # resume_writing ran, and called us soon after
                assert not connection.paused
                assert sink.writable

    run(loop_factory, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_close_queues_the_close_frame_without_waiting_and_aborts_after_the_timeout(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        server = Connected()
        async with listening(server.handler, gateway_slow_bytes=4096) as url:
            sock = stalled_socket(url)
            async with connect(url, sock=sock, max_queue=1, compression=None, close_timeout=0.5):
                connection = await server.connection()
                wsadapter.set_send_buffer(connection, 4096)
                sink = ConnectionSink(connection, 0.3)
                await fill(connection, sink)
                before = sink.unsent
                sink.close(1013, "too slow")  # returns at once, the buffer still full
                assert state(connection) is State.CLOSING
                assert wsadapter.close_code_sent(connection) == 1013
                assert sink.unsent > before  # the close frame, queued behind the data
                assert not sink.writable
                assert not sink.lost.done()
                sink.close(1012, "again")  # closing already: no error, no second frame
                assert wsadapter.close_code_sent(connection) == 1013
                async with asyncio.timeout(WAIT):
                    await sink.lost  # the client never read: aborted at the timeout
                assert state(connection) is State.CLOSED
                sink.write(b"late")  # after the abort: dropped or False, never an exception

    run(loop_factory, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_reading_client_receives_the_close_code_and_the_handshake_completes(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        server = Connected()
        # A close timeout no test waits for: the handshake must finish on its own.
        async with listening(server.handler) as url, connect(url) as ws:
            connection = await server.connection()
            sink = ConnectionSink(connection, WAIT * 10)
            assert sink.write(text_frame(b"last"))
            sink.close(1008, "too many messages")
            assert await read_all(ws) == ["last"]
            assert ws.close_code == 1008
            assert ws.close_reason == "too many messages"
            async with asyncio.timeout(WAIT):
                await sink.lost
                await server.done.wait()

    run(loop_factory, scenario())


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_connection_lost_waiter_resolves_once_also_for_refused_handshakes(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        lost: list[str] = []
        all_lost = asyncio.Event()

        def gone(path: str) -> None:
            lost.append(path)
            if len(lost) == 4:
                all_lost.set()

        async def process_request(
            connection: GatewayConnection, request: Request
        ) -> Response | None:
            wsadapter.when_lost(connection, lambda _: gone(request.path))
            if request.path == "/refused":
                return wsadapter.http_response(Answer(403, b"no\n", "text/plain"), 5)
            return None

        server = Connected()
        async with listening(server.handler, process_request) as url:
            base = url.replace("ws://", "http://").rsplit("/ws/", 1)[0]
            async with connect(url):
                pass
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base.replace("http://", "ws://") + "/refused"):
                    pass
            response = refused.value.response
            assert (response.status_code, response.body) == (403, b"no\n")
            assert response.headers["Retry-After"] == "5"
            async with httpx.AsyncClient() as http:
                plain = await http.get(url.replace("ws://", "http://"))  # no Upgrade: 426
                assert plain.status_code == 426
                answer = await http.get(base + "/refused")
                assert answer.headers["Cache-Control"] == "no-store"
                assert answer.headers["Content-Type"] == "text/plain"
            async with asyncio.timeout(WAIT):
                await all_lost.wait()
            await asyncio.sleep(0.05)  # room for a second call, which must not come
            assert sorted(lost) == ["/refused", "/refused", "/ws/score", "/ws/score"]

    run(loop_factory, scenario())


async def test_oversize_message_leaves_websockets_close_code_1009_in_close_sent() -> None:
    server = Connected()
    async with listening(server.handler, gateway_max_message_bytes=64) as url, connect(url) as ws:
        connection = await server.connection()
        assert wsadapter.close_code_sent(connection) is None
        await ws.send("x" * 65)
        async with asyncio.timeout(WAIT):
            await server.done.wait()
        assert wsadapter.close_code_sent(connection) == 1009


async def test_cleared_handshake_headers_leave_a_working_connection() -> None:
    server = Connected()
    async with (
        listening(server.handler) as url,
        connect(url, additional_headers={"X-Padding": "p" * 2000}) as ws,
    ):
        connection = await server.connection()
        assert connection.request is not None
        assert connection.response is not None
        assert connection.request.headers["X-Padding"] == "p" * 2000
        assert "Sec-WebSocket-Accept" in connection.response.headers
        wsadapter.clear_handshake(connection)
        assert list(connection.request.headers.raw_items()) == []
        assert list(connection.response.headers.raw_items()) == []
        assert wsadapter.peer_host(connection) == "127.0.0.1"
        assert ConnectionSink(connection, 1.0).write(text_frame(b"still here"))
        assert await ws.recv() == "still here"


async def test_stop_accepting_refuses_new_connections_and_keeps_open_ones() -> None:
    server = Connected()
    options = GatewaySettings(gateway_port=0)
    listener = await wsadapter.listen(options, server.handler, accept_all)
    port = listener.sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/ws/score"
    try:
        async with connect(url) as ws:
            connection = await server.connection()
            wsadapter.stop_accepting(listener)
            with pytest.raises(ConnectionRefusedError):
                async with connect(url, open_timeout=WAIT):
                    pass
            assert ConnectionSink(connection, 1.0).write(text_frame(b"open"))
            assert await ws.recv() == "open"
    finally:
        listener.close(close_connections=False)
        async with asyncio.timeout(WAIT):
            await listener.wait_closed()


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_connection_made_runs_at_the_tcp_accept_before_any_byte_of_the_handshake(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        seen: list[tuple[str | None, bool]] = []
        made = asyncio.Event()

        def accept(connection: GatewayConnection) -> None:
            # The peer is known, the request is not; abort_after bounds a silent socket.
            seen.append((wsadapter.peer_host(connection), connection.request is None))
            wsadapter.abort_after(connection, 0.2)
            made.set()

        connected = Connected()
        async with listening(
            connected.handler, accept=accept, gateway_handshake_timeout=60.0
        ) as url:
            host, port = url.split("//")[1].split("/")[0].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                async with asyncio.timeout(WAIT):
                    await made.wait()
                    assert seen == [("127.0.0.1", True)]  # a silent socket is seen at once
                    # Aborted by the timer, long before the handshake timeout.
                    with contextlib.suppress(ConnectionResetError):
                        assert await reader.read() == b""
            finally:
                writer.close()

    run(loop_factory, scenario())
