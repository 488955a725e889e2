"""The gateway end to end: real Redis, a running gateway, real WebSocket clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from devstack.devtoken import issue
from devstack.servers import Server
from services.broadcast_gateway.protocol import Diff
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from shared.board import Entry
from tests.gateway_fixtures import (
    WAIT,
    BoardWriter,
    Follower,
    GatewayProcess,
    metric,
    read_until_closed,
    run_gateway,
    wait_until,
)
from tests.models import ClientView, Ping, Snapshot, decode_message
from tests.support import CLIENT_ACTIONS, NO_LIMITS, free_port, serve


@pytest.fixture
def writer(redis_client: redis.asyncio.Redis, key_prefix: str) -> BoardWriter:
    return BoardWriter(redis_client, key_prefix)


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").rsplit("/ws/", 1)[0]


async def test_many_clients_get_the_snapshot_then_the_same_consecutive_sequence(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    await writer.set_score("early", 7, name="Early")
    # All 25 share one loopback address, more than the per-address default allows.
    async with run_gateway(redis_url, key_prefix, gateway_max_connections_per_ip=0) as gateway:
        followers = [Follower(gateway.url) for _ in range(25)]
        for f in followers:
            await f.__aenter__()
        try:
            assert all(isinstance(f.messages[0], Snapshot) for f in followers)
            assert followers[0].board == (Entry(1, "early", "Early", 7),)
            for i in range(30):
                await writer.set_score(f"u{i % 12}", 10 + i)
                if i % 3 == 0:
                    await asyncio.sleep(0.06)  # some updates share a tick, others do not
            final = await writer.top()
            await wait_until(lambda: all(f.board == final for f in followers), what="converge")
            reference = followers[0].messages
            start = reference[0].version if isinstance(reference[0], Snapshot) else 0
            versions = followers[0].versions()
            assert versions == list(range(start, start + len(versions)))
            assert all(isinstance(m, Diff) for m in reference[1:])
            for f in followers[1:]:
                tail = [m for m in f.messages if not isinstance(m, Snapshot | Ping)]
                assert tail == [m for m in reference if isinstance(m, Diff)][-len(tail) :]
                assert f.view.version == followers[0].view.version
        finally:
            for f in followers:
                await f.__aexit__()


async def test_removal_and_reorder_reach_clients_without_depending_on_event_contents(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    for i, user in enumerate(["a", "b", "c", "d"]):
        await writer.set_score(user, 100 - i)
    async with run_gateway(redis_url, key_prefix) as gateway, Follower(gateway.url) as f:
        assert [e.user_id for e in f.board] == ["a", "b", "c", "d"]
        await writer.remove("b")  # a ban-like event: the board shrinks and ranks move up
        await wait_until(lambda: [e.user_id for e in f.board] == ["a", "c", "d"], what="ban")
        await writer.set_score("d", 500)
        final = await writer.top()
        await wait_until(lambda: f.board == final, what="reorder")
        assert [e.rank for e in f.board] == [1, 2, 3]


async def test_resync_gives_a_snapshot_and_other_inbound_frames_are_ignored(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    await writer.set_score("a", 1)
    async with run_gateway(redis_url, key_prefix) as gateway, connect(gateway.url) as ws:
        first = decode_message(await ws.recv())
        await ws.send("hello")
        await ws.send(b'{"type": "snapshot"}')
        await ws.send('{"type": "resync"}')
        again = decode_message(await ws.recv())
        assert isinstance(first, Snapshot)
        assert again == first


async def test_connection_cap_is_answered_503_at_the_handshake(
    redis_url: str, key_prefix: str
) -> None:
    async with run_gateway(redis_url, key_prefix, gateway_max_connections=2) as gateway:
        async with Follower(gateway.url), Follower(gateway.url):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(gateway.url):
                    pass
            assert refused.value.response.status_code == 503
        async with Follower(gateway.url) as again:  # capacity is given back on close
            assert again.view.version is not None


async def test_a_silent_connection_is_dropped_at_the_handshake_timeout(
    redis_url: str, key_prefix: str
) -> None:
    async with run_gateway(redis_url, key_prefix, gateway_handshake_timeout=0.3) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            async with asyncio.timeout(10):  # a bound on the wait, far above the setting
                assert await reader.read() == b""  # the server hung up without a word
        finally:
            writer.close()
            await writer.wait_closed()


async def test_probes_metrics_and_application_pings(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    async with run_gateway(redis_url, key_prefix, gateway_ping_seconds=0.2) as gateway:
        async with Follower(gateway.url) as f:
            await writer.set_score("a", 3)
            await wait_until(lambda: any(isinstance(m, Ping) for m in f.messages), what="ping")
            await wait_until(lambda: len(f.board) == 1)
            async with httpx.AsyncClient(base_url=http_base(gateway.url)) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok"}
                ready = await http.get("/readyz")
                assert ready.status_code == 200
                assert ready.json()["status"] == "ready"
                text = (await http.get("/metrics")).text
                assert (await http.get("/nope")).status_code == 404
        for name in [
            "gateway_connections",
            'gateway_messages_sent_total{type="diff"}',
            'gateway_bytes_sent_total{type="snapshot"}',
            "gateway_broadcast_seconds_bucket",
            "gateway_event_delay_seconds_count",
            "gateway_closes_total",
        ]:
            assert name in text, name
        assert metric("gateway_event_delay_seconds_count") >= 1


def small_receive_buffer_socket(port: int) -> socket.socket:
    """A connected socket whose kernel receive buffer is tiny, so not reading backs up fast."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def flood(writer: BoardWriter, count: int) -> None:
    """New leaders one after another: every change shifts every rank, so diffs are large."""
    for i in range(count):
        await writer.set_score(f"player-{i:04d}", 1000 + i, name=f"Player {i} " + "x" * 50)
        await asyncio.sleep(0.003)


# Large diffs, small buffers: a client that stops reading falls behind within a few changes.
STALLING: dict[str, float] = {
    "gateway_top_n": 50,
    "gateway_tick_ms": 5,
    "gateway_slow_bytes": 8192,
    "gateway_socket_send_buffer": 4096,
}


async def test_client_that_stops_reading_delays_nobody_and_is_closed_1013(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    writer = BoardWriter(redis_client, key_prefix, top_n=50)
    settings = STALLING | {"gateway_slow_seconds": 1.0, "gateway_close_timeout": 1.0}
    before = metric("gateway_closes_total", reason="slow")
    async with run_gateway(redis_url, key_prefix, **settings) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
        sock = small_receive_buffer_socket(port)
        async with connect(gateway.url, sock=sock, max_queue=1, compression=None) as stalled:
            await stalled.recv()  # the snapshot; then it never reads again
            followers = [Follower(gateway.url) for _ in range(5)]
            for f in followers:
                await f.__aenter__()
            try:
                await flood(writer, 300)
                final = await writer.top()
                await wait_until(lambda: all(f.board == final for f in followers), what="fast")
                # The others converged while the stalled client sat on its backlog; it is
                # then closed for being slow, and its unsent bytes never grew past the limit.
                await wait_until(
                    lambda: metric("gateway_closes_total", reason="slow") == before + 1,
                    what="slow close",
                )
                assert all(c.sink.unsent < 8192 + 16384 for c in gateway.fanout.clients)
            finally:
                for f in followers:
                    await f.__aexit__()
            got = await read_until_closed(stalled)
            assert len(got) - 1 < sum(1 for m in followers[0].messages if isinstance(m, Diff))


async def test_shutdown_aborts_a_client_that_never_reads_at_the_deadline(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    writer = BoardWriter(redis_client, key_prefix, top_n=50)
    # Only the shutdown deadline can end the stalled client in time.
    settings = STALLING | {"gateway_shutdown_seconds": 1.0, "gateway_close_timeout": 60.0}
    before = metric("gateway_closes_total", reason="shutdown")
    running = run_gateway(redis_url, key_prefix, **settings)
    gateway = await running.__aenter__()
    port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
    sock = small_receive_buffer_socket(port)
    async with connect(
        gateway.url, sock=sock, max_queue=1, compression=None, close_timeout=0.5
    ) as stalled:
        await stalled.recv()  # the snapshot; then it never reads again
        await flood(writer, 100)
        await wait_until(
            lambda: any(c.sink.unsent > 0 for c in gateway.fanout.clients), what="backlog"
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        await running.__aexit__(None, None, None)
        # The deadline, plus the bounded stop of the background loops and Redis clients.
        assert loop.time() - started < 1.0 + 2 * 2.0 + 1.0
        assert gateway.fanout.clients == set()
        assert metric("gateway_closes_total", reason="shutdown") == before + 1


async def test_client_that_reads_late_skips_stale_diffs_and_gets_the_latest_snapshot(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    writer = BoardWriter(redis_client, key_prefix, top_n=50)
    settings = {
        "gateway_top_n": 50,
        "gateway_tick_ms": 5,
        "gateway_slow_bytes": 8192,
        "gateway_socket_send_buffer": 4096,
    }
    async with run_gateway(redis_url, key_prefix, **settings) as gateway:
        port = int(gateway.url.rsplit(":", 1)[1].split("/")[0])
        sock = small_receive_buffer_socket(port)
        before = metric("gateway_conflated_total")
        async with connect(gateway.url, sock=sock, max_queue=1, compression=None) as late:
            view = ClientView()
            view.receive(decode_message(await late.recv()))
            await flood(writer, 200)
            final = await writer.top()
            assert metric("gateway_conflated_total") > before
            received: list[object] = []
            async with asyncio.timeout(WAIT):  # a bound, so a miss fails instead of hanging
                while view.board != final:
                    message = decode_message(await late.recv())
                    received.append(message)
                    assert view.receive(message)
        assert any(isinstance(m, Snapshot) for m in received)  # conflated: a fresh snapshot
        assert len(received) < gateway.fanout.version


async def test_redis_outage_keeps_clients_and_sends_a_fresh_snapshot(
    own_redis: Server, key_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    writer = BoardWriter(client, key_prefix)
    try:
        await writer.set_score("before", 5)
        settings = {"gateway_reconnect_max_seconds": 0.5, "gateway_redis_timeout_seconds": 0.5}
        async with (
            run_gateway(own_redis.url, key_prefix, **settings) as gateway,
            Follower(gateway.url) as f,
            httpx.AsyncClient() as http,
        ):
            readyz = http_base(gateway.url) + "/readyz"
            own_redis.stop()
            await wait_until(lambda: not gateway.feed.healthy, what="outage seen")
            assert (await http.get(readyz)).status_code == 503
            own_redis.start()  # empty: the board restarts from nothing
            await client.aclose()
            client = redis.asyncio.Redis.from_url(own_redis.url)
            writer = BoardWriter(client, key_prefix)
            await writer.set_score("after", 9)
            final = await writer.top()
            await wait_until(lambda: f.board == final, what="fresh board")
            assert f.connections == 1
            assert f.closes == []
            assert sum(isinstance(m, Snapshot) for m in f.messages) >= 2
            assert (await http.get(readyz)).status_code == 200
    finally:
        await client.aclose()


async def test_two_instances_both_deliver_every_change(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    async with (
        run_gateway(redis_url, key_prefix) as one,
        run_gateway(redis_url, key_prefix) as two,
        Follower(one.url) as a,
        Follower(two.url) as b,
    ):
        for i in range(8):
            await writer.set_score("solo", i + 1)
            await wait_until(
                lambda i=i: [e.score for e in a.board] == [e.score for e in b.board] == [i + 1],  # type: ignore[misc]
                what=f"change {i}",
            )


@pytest.fixture
async def api_url(redis_url: str, key_prefix: str) -> AsyncIterator[tuple[str, ApiSettings]]:
    settings = ApiSettings(
        redis_url=redis_url, redis_key_prefix=key_prefix, actions=CLIENT_ACTIONS, **NO_LIMITS
    )
    async with serve(create_app(settings)) as url:
        yield url, settings


async def post_score(http: httpx.AsyncClient, settings: ApiSettings, user: str, key: str) -> None:
    token = issue(settings, user, name=user.title())
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    response = await http.post("/api/score", json={"action": "level_up"}, headers=headers)
    assert response.status_code == 200, response.text


async def test_sigterm_closes_1012_and_clients_reconnect_to_the_api_board(
    redis_url: str, key_prefix: str, api_url: tuple[str, ApiSettings], tmp_path: Path
) -> None:
    url, settings = api_url
    port = free_port()
    env = {"GATEWAY_SHUTDOWN_SECONDS": "5", "GATEWAY_TICK_MS": "20"}
    gateway = GatewayProcess(redis_url, key_prefix, port, tmp_path / "gateway.log", **env)
    async with httpx.AsyncClient(base_url=url) as http:
        await post_score(http, settings, "alice", "a1")
        await gateway.start()
        followers = [Follower(gateway.url, reconnect=True) for _ in range(10)]
        try:
            for f in followers:
                await f.__aenter__()
            assert await gateway.terminate() == 0
            await wait_until(lambda: all(f.closes == [1012] for f in followers), what="1012")
            await post_score(http, settings, "bob", "b1")  # while no gateway runs
            await post_score(http, settings, "dave", "d1")
            await gateway.start()
            await post_score(http, settings, "carol", "c1")
            expected = (await http.get("/api/score-board")).json()["board"]
            await wait_until(
                lambda: all([e.as_dict() for e in f.board] == expected for f in followers),
                what="converge after restart",
            )
            assert all(f.connections == 2 for f in followers)
        finally:
            for f in followers:
                await f.__aexit__()
            await gateway.terminate()
    log = (tmp_path / "gateway.log").read_text()
    assert "shutting down" in log, log
    assert "stopped" in log, log
