"""The persister as a real process under faults: SIGKILL, SIGTERM, two replicas, a PostgreSQL
outage and a Redis restart, each under load from the real score API. Every test ends with
the same check (``assert_consistent``): nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio

from devstack.servers import Server
from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.settings import PersisterSettings
from tests.persister_fixtures import (
    Api,
    PersisterProcess,
    assert_consistent,
    event_count,
    pending_count,
    persisters,
    running_api,
    wait_ready,
    wait_until,
)

Spawn = Callable[..., PersisterProcess]


@pytest.fixture
async def spawn(
    tmp_path: Path, redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[Spawn]:
    await migrate(database_url)
    async with persisters(tmp_path, redis_url, database_url, key_prefix) as factory:
        yield factory


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(redis_url, key_prefix) as running:
        yield running


async def test_sigkill_mid_batch_then_restart_loses_and_doubles_nothing(
    api: Api, spawn: Spawn, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    process = spawn("p1", PERSISTER_BATCH_SIZE="25")
    stop = asyncio.Event()
    load = asyncio.create_task(api.load_until(stop, concurrency=20))
    kills = 0
    try:
        for _ in range(3):
            persisted = await event_count(database_url)

            async def mid_batch(since: int = persisted) -> bool:
                # It committed something since it started, and holds unacknowledged entries.
                busy = await pending_count(redis_client, api.keys) > 0
                return busy and await event_count(database_url) > since

            await wait_until(mid_batch, "the persister in the middle of a batch")
            process.signal(signal.SIGKILL)
            assert await process.wait_exit() == -signal.SIGKILL
            kills += 1
            process.start()  # same consumer name: it first finishes what it held
    finally:
        stop.set()
        await load
    assert kills == 3
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_sigterm_commits_the_batch_in_hand_and_exits(
    api: Api, spawn: Spawn, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    process = spawn("p1", PERSISTER_BATCH_SIZE="200")
    stop = asyncio.Event()
    load = asyncio.create_task(api.load_until(stop, concurrency=20))
    try:

        async def busy() -> bool:
            return await pending_count(redis_client, api.keys) > 0

        await wait_until(busy, "a batch in hand")
        process.signal(signal.SIGTERM)
        assert await process.wait_exit(within=15) == 0
        # Whatever it had read, it committed and acknowledged before leaving.
        assert await pending_count(redis_client, api.keys) == 0
        assert "finishing the batch in hand" in process.output()
        process.start()
    finally:
        stop.set()
        await load
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_two_persisters_share_one_group(
    api: Api, spawn: Spawn, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    first = spawn("p1", PERSISTER_BATCH_SIZE="20")
    second = spawn("p2", PERSISTER_BATCH_SIZE="20")
    await api.load(800, concurrency=30)
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)
    consumers = await redis_client.xinfo_consumers(api.keys.stream, "persister")
    assert {c["name"] for c in consumers} == {b"p1", b"p2"}
    for process in (first, second):
        assert process.proc is not None
        assert process.proc.poll() is None


async def test_postgres_outage_under_load_drains_afterwards(
    own_postgres: Server,
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    database_url = own_postgres.url
    await migrate(database_url)
    async with (
        running_api(redis_url, key_prefix) as api,
        persisters(tmp_path, redis_url, database_url, key_prefix) as spawn_own,
    ):
        process = spawn_own("p1", PERSISTER_PG_TIMEOUT_SECONDS="1")
        await wait_ready(process)
        stop = asyncio.Event()
        load = asyncio.create_task(api.load_until(stop, concurrency=10))
        try:
            await wait_until(
                lambda: _more_than(database_url, 50), "some events persisted before the outage"
            )
            await asyncio.to_thread(own_postgres.stop)
            accepted_before = api.accepted

            async def unready() -> bool:
                response = await process.get("/readyz")
                return response is not None and response.status_code == 503

            await wait_until(unready, "/readyz to report postgres down")
            await asyncio.sleep(3)  # several seconds of load with PostgreSQL down
            assert api.accepted > accepted_before  # the API kept accepting meanwhile
            metrics = await process.get("/metrics")
            assert metrics is not None
            assert 'persister_retries_total{backend="postgres"}' in metrics.text
            await asyncio.to_thread(own_postgres.start)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await load
        await assert_consistent(redis_client, api.keys, database_url, api.accepted)
        await wait_ready(process)


async def test_redis_restart_under_the_persister_reconnects_and_resumes(
    own_redis: Server, tmp_path: Path, database_url: str, key_prefix: str
) -> None:
    await migrate(database_url)
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        async with (
            running_api(own_redis.url, key_prefix) as api,
            persisters(tmp_path, own_redis.url, database_url, key_prefix) as spawn_own,
        ):
            process = spawn_own("p1")
            await api.load(300)
            await assert_consistent(client, api.keys, database_url, api.accepted)
            # This Redis keeps nothing: it comes back empty, as after a loss without AOF.
            await asyncio.to_thread(own_redis.stop)
            await asyncio.to_thread(own_redis.start)

            async def group_back() -> bool:
                try:
                    groups = await client.xinfo_groups(api.keys.stream)
                except redis.RedisError:  # the first command after the restart, or no stream
                    return False
                return any(g["name"] == b"persister" for g in groups)

            await wait_until(group_back, "the persister to recreate its group")
            settings = PersisterSettings(
                redis_url=own_redis.url, database_url=database_url, redis_key_prefix=key_prefix
            )
            await rebuild(settings)  # the runbook: rebuild the board from PostgreSQL
            await api.load(300)
            await assert_consistent(client, api.keys, database_url, api.accepted)
            await wait_ready(process)
    finally:
        await client.aclose()


async def _more_than(database_url: str, count: int) -> bool:
    return await event_count(database_url) > count
