"""Automatic pipelining of the award script: shared round trips, per-caller results and
errors, NOSCRIPT recovery, against real Redis servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio
from redis.exceptions import RedisError, ResponseError

from devstack.servers import Server
from services.score_api.autopipe import ScriptPipeline
from shared.redisconn import connect

# Returns the new value of the counter and echoes its argument; fails on demand.
SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
return {redis.call('INCR', KEYS[1]), ARGV[1]}
"""


@asynccontextmanager
async def pipeline_on(url: str) -> AsyncIterator[ScriptPipeline]:
    client = connect(url)
    assert isinstance(client, redis.asyncio.Redis)
    try:
        yield ScriptPipeline(client, client.register_script(SCRIPT))
    finally:
        await client.aclose()


async def connected_clients(client: redis.asyncio.Redis) -> int:
    return int((await client.info("clients"))["connected_clients"])


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:counter"
    async with pipeline_on(redis_url) as pipeline:
        await pipeline([key], ["warm-up"])  # one connection open from here on
        before = await connected_clients(redis_client)
        replies = await asyncio.gather(*(pipeline([key], [f"call{i}"]) for i in range(200)))
        # Without pipelining, 200 concurrent calls would open up to 64 pooled connections.
        assert await connected_clients(redis_client) == before
        assert [echo for _, echo in replies] == [f"call{i}".encode() for i in range(200)]
        assert sorted(count for count, _ in replies) == list(range(2, 202))
        assert int(await redis_client.get(key) or 0) == 201


async def test_an_error_reply_goes_to_its_caller_only(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:counter"
    async with pipeline_on(redis_url) as pipeline:
        results = await asyncio.gather(
            pipeline([key], ["a"]), pipeline([key], ["fail"]), pipeline([key], ["b"]),
            return_exceptions=True,
        )  # fmt: skip
        assert results[0] == [1, b"a"]
        assert isinstance(results[1], ResponseError)
        assert "asked to fail" in str(results[1])
        assert results[2] == [2, b"b"]


async def test_calls_after_the_script_cache_is_flushed_run_exactly_once(
    own_redis: Server, key_prefix: str
) -> None:
    key = f"{key_prefix}:counter"
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        async with pipeline_on(own_redis.url) as pipeline:
            await pipeline([key], ["first"])
            await admin.script_flush()  # as after a restart: every EVALSHA answers NOSCRIPT
            replies = await asyncio.gather(*(pipeline([key], [str(i)]) for i in range(20)))
            assert sorted(count for count, _ in replies) == list(range(2, 22))
            assert int(await admin.get(key) or 0) == 21
    finally:
        await admin.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    key = f"{key_prefix}:counter"
    async with pipeline_on(redis_url) as pipeline:
        doomed = asyncio.ensure_future(pipeline([key], ["doomed"]))
        others = [asyncio.ensure_future(pipeline([key], [str(i)])) for i in range(5)]
        await asyncio.sleep(0)  # all queued
        doomed.cancel()
        replies = await asyncio.gather(*others)
        assert [echo for _, echo in replies] == [str(i).encode() for i in range(5)]
        with pytest.raises(asyncio.CancelledError):
            await doomed


async def test_a_lost_server_fails_every_waiting_call_with_a_redis_error(
    own_redis: Server, key_prefix: str
) -> None:
    key = f"{key_prefix}:counter"
    async with pipeline_on(own_redis.url) as pipeline:
        await pipeline([key], ["before"])
        own_redis.stop()
        results = await asyncio.gather(
            *(pipeline([key], [str(i)]) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, RedisError) for r in results), results
        own_redis.start()
        # The next batch reconnects.
        assert (await pipeline([key], ["after"]))[1] == b"after"
