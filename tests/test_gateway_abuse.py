"""Abusive WebSocket clients against a real gateway: each abuse is contained, others unaffected.

Every test keeps a well-behaved client connected alongside the abuse and proves it still takes
every board change as a diff on its one connection (nothing skipped, no reconnect, no resync).
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from services.broadcast_gateway.protocol import Diff
from tests.gateway_fixtures import (
    BoardWriter,
    Follower,
    metric,
    read_until_closed,
    run_gateway,
    wait_until,
)
from tests.models import Ping, Snapshot

PAGE = "http://localhost:8000"  # an allowed origin by default
CLOSES = "gateway_closes_total"


@pytest.fixture
def writer(redis_client: redis.asyncio.Redis, key_prefix: str) -> BoardWriter:
    return BoardWriter(redis_client, key_prefix)


async def takes_every_change(good: Follower, writer: BoardWriter, score: int) -> None:
    """A new board change reaches ``good`` as the next diff of an unbroken sequence."""
    await writer.set_score("after-abuse", score)
    final = await writer.top()
    await wait_until(lambda: good.board == final, what="the good client converges")
    assert good.connections == 1
    assert good.closes == []
    messages = [m for m in good.messages if not isinstance(m, Ping)]
    assert isinstance(messages[0], Snapshot)
    assert all(isinstance(m, Diff) for m in messages[1:]), "a resync or a second snapshot"
    versions = [m.version for m in messages]
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    assert isinstance(messages[-1], Diff)


def xff(address: str) -> dict[str, Any]:
    return {"additional_headers": {"X-Forwarded-For": address}}


async def refused_status(url: str, **connect_args: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5, **connect_args):
            pass
    return refused.value


async def test_flooding_clients_are_closed_1008_and_the_others_get_every_diff(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    await writer.set_score("leader", 50)
    async with run_gateway(redis_url, key_prefix) as gateway, Follower(gateway.url) as good:
        before = metric(CLOSES, reason="rate")
        codes: list[object] = []
        for n in range(3):
            async with connect(gateway.url) as flooder:
                await flooder.recv()
                await writer.set_score(f"during-flood-{n}", 10 + n)
                # resync is the one request that costs the server work (a snapshot each).
                with contextlib.suppress(ConnectionClosed):
                    for _ in range(200):
                        await flooder.send('{"type": "resync"}')
                codes.append((await read_until_closed(flooder))[-1])
        assert codes == [1008, 1008, 1008]
        await wait_until(lambda: metric(CLOSES, reason="rate") == before + 3, what="rate closes")
        await takes_every_change(good, writer, 99)
        assert len(gateway.fanout.clients) == 1


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("x" * 1025, id="one-text-frame"),
        pytest.param(b"\x00" * 4096, id="one-binary-frame"),
        pytest.param(["x" * 600, "x" * 600], id="fragments-each-under-the-limit"),
    ],
)
async def test_oversize_messages_are_closed_1009_and_the_others_get_every_diff(
    redis_url: str, key_prefix: str, writer: BoardWriter, message: str | bytes | list[str]
) -> None:
    await writer.set_score("leader", 50)
    async with run_gateway(redis_url, key_prefix) as gateway, Follower(gateway.url) as good:
        before = metric(CLOSES, reason="oversize")
        async with connect(gateway.url) as sender:
            await sender.recv()
            with contextlib.suppress(ConnectionClosed):
                await sender.send(iter(message) if isinstance(message, list) else message)
            codes = await read_until_closed(sender)
        assert codes[-1] == 1009
        await wait_until(lambda: metric(CLOSES, reason="oversize") == before + 1, what="metric")
        await takes_every_change(good, writer, 99)
        assert len(gateway.fanout.clients) == 1


async def test_bad_origins_are_refused_403_counted_and_the_others_get_every_diff(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    await writer.set_score("leader", 50)
    async with (
        run_gateway(redis_url, key_prefix, gateway_allow_missing_origin=False) as gateway,
        Follower(gateway.url, origin=PAGE) as good,
    ):
        before = metric(CLOSES, reason="origin")
        attempts: list[dict[str, Any]] = [
            {"origin": "http://evil.example"},
            {"origin": "null"},
            {"origin": "https://localhost:8000"},  # another scheme is another origin
            {"origin": "http://localhost:8000.evil.example"},
            {},  # no Origin: not a page of ours, and missing origins are refused here
            # Two Origin headers, one allowed: a request that cannot say where it is from.
            {"origin": PAGE, "additional_headers": [("Origin", "http://evil.example")]},
        ]
        for args in attempts:
            refused = await refused_status(gateway.url, **args)
            assert refused.response.status_code == 403, args
        assert metric(CLOSES, reason="origin") == before + len(attempts)
        await takes_every_change(good, writer, 99)
        assert len(gateway.fanout.clients) == 1
        assert gateway.per_ip.count("127.0.0.1") == 1  # refusals hold no per-address count


async def open_followers(
    stack: AsyncExitStack, url: str, count: int, address: str
) -> list[Follower]:
    return [await stack.enter_async_context(Follower(url, **xff(address))) for _ in range(count)]


async def test_one_address_gets_its_limit_others_still_connect_and_closing_gives_it_back(
    redis_url: str, key_prefix: str, writer: BoardWriter
) -> None:
    await writer.set_score("leader", 50)
    hog, other, probe = "198.51.100.1", "198.51.100.2", "198.51.100.3"
    settings = {"gateway_max_connections_per_ip": 3, "gateway_trusted_proxies": ["127.0.0.1/32"]}
    async with (
        run_gateway(redis_url, key_prefix, **settings) as gateway,
        Follower(gateway.url, **xff("203.0.113.50")) as good,
        AsyncExitStack() as stack,
    ):
        before = metric(CLOSES, reason="per_ip")
        hogs = await open_followers(stack, gateway.url, 3, hog)
        refused = await refused_status(gateway.url, **xff(hog))
        assert refused.response.status_code == 429
        assert refused.response.headers["Retry-After"] == "5"
        # Prepending a made-up hop does not help: the proxy's own entry is the rightmost.
        forged = await refused_status(gateway.url, **xff(f"192.0.2.99, {hog}"))
        assert forged.response.status_code == 429
        assert metric(CLOSES, reason="per_ip") == before + 2

        others = await open_followers(stack, gateway.url, 3, other)
        direct = await stack.enter_async_context(Follower(gateway.url))  # the proxy itself
        assert gateway.per_ip.count(hog) == 3
        assert gateway.per_ip.count(other) == 3

        for follower in hogs[:2]:
            await follower.__aexit__()
        await wait_until(lambda: gateway.per_ip.count(hog) == 1, what="closed ones given back")
        hogs = [hogs[2], *await open_followers(stack, gateway.url, 2, hog)]
        assert (await refused_status(gateway.url, **xff(hog))).response.status_code == 429

        await takes_every_change(good, writer, 99)
        final = await writer.top()
        everyone = [*hogs, *others, direct]
        await wait_until(lambda: all(f.board == final for f in everyone), what="all converge")

        # websockets refuses a request without Upgrade (426) after process_request counted it;
        # the count is given back all the same.
        async with httpx.AsyncClient() as http:
            for _ in range(5):
                plain = await http.get(
                    gateway.url.replace("ws://", "http://"), headers={"X-Forwarded-For": probe}
                )
                assert plain.status_code == 426
                await wait_until(lambda: gateway.per_ip.count(probe) == 0, what="426 released")
    await wait_until(lambda: len(gateway.per_ip) == 0, what="no count outlives its connection")


async def test_forwarded_for_from_an_untrusted_peer_does_not_dodge_the_limit(
    redis_url: str, key_prefix: str
) -> None:
    async with (
        run_gateway(redis_url, key_prefix, gateway_max_connections_per_ip=2) as gateway,
        Follower(gateway.url, **xff("198.51.100.1")),
        Follower(gateway.url, **xff("198.51.100.2")),
    ):
        refused = await refused_status(gateway.url, **xff("198.51.100.3"))
        assert refused.response.status_code == 429
        assert gateway.per_ip.count("127.0.0.1") == 2


async def test_zero_means_no_per_address_limit(redis_url: str, key_prefix: str) -> None:
    async with (
        run_gateway(redis_url, key_prefix, gateway_max_connections_per_ip=0) as gateway,
        AsyncExitStack() as stack,
    ):
        followers = await open_followers(stack, gateway.url, 25, "127.0.0.1")
        assert len(gateway.fanout.clients) == len(followers)


async def test_spellings_and_addresses_of_one_ipv6_64_share_one_per_address_limit(
    redis_url: str, key_prefix: str
) -> None:
    # Before: each spelling (and each address of the caller's /64) was a counter of its own.
    spellings = ["2001:db8:0:7::1", "2001:DB8:0:7:0:0:0:1", "2001:db8:0:7::1%eth0"]
    settings = {"gateway_max_connections_per_ip": 3, "gateway_trusted_proxies": ["127.0.0.1/32"]}
    async with (
        run_gateway(redis_url, key_prefix, **settings) as gateway,
        AsyncExitStack() as stack,
    ):
        for spelling in spellings:
            await stack.enter_async_context(Follower(gateway.url, **xff(spelling)))
        assert gateway.per_ip.count("2001:db8:0:7::/64") == 3
        refused = await refused_status(gateway.url, **xff("2001:db8:0:7:ffff::9"))
        assert refused.response.status_code == 429
        # Another /64 is another subscriber.
        await stack.enter_async_context(Follower(gateway.url, **xff("2001:db8:0:8::1")))
        assert gateway.per_ip.count("2001:db8:0:8::/64") == 1


async def test_half_finished_handshakes_hold_their_place_under_the_per_address_limit(
    redis_url: str, key_prefix: str
) -> None:
    # Before: an address was counted only once its upgrade request had arrived, so sockets
    # that never sent one (slowloris) were not limited per address at all.
    settings = {"gateway_max_connections_per_ip": 2, "gateway_handshake_timeout": 60.0}
    async with run_gateway(redis_url, key_prefix, **settings) as gateway:
        host, port = gateway.url.split("//")[1].split("/")[0].split(":")
        silent = [await asyncio.open_connection(host, int(port)) for _ in range(2)]
        await wait_until(lambda: gateway.per_ip.count("127.0.0.1") == 2, what="counted")
        refused = await refused_status(gateway.url)
        assert refused.response.status_code == 429
        assert refused.response.headers["Retry-After"] == "5"
        # A silent socket over the limit holds no place: it is aborted within a second, not
        # left to the handshake timeout.
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            with contextlib.suppress(ConnectionResetError):
                assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
        for _, silent_writer in silent:
            silent_writer.close()
        await wait_until(lambda: gateway.per_ip.count("127.0.0.1") == 0, what="given back")
        async with Follower(gateway.url) as follower:
            await wait_until(lambda: follower.connections == 1, what="connected again")
