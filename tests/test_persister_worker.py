"""The persist loop in-process against real Redis and PostgreSQL: batches, redelivery, poison
entries, reclaiming, trimming, group recreation, and the health endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette

from services.persister import metrics
from services.persister.batch import StreamEntry
from services.persister.migrate import migrate
from services.persister.service import running
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from services.persister.worker import Persister
from shared.health import Health
from shared.redisconn import connect
from tests.persister_fixtures import (
    Api,
    assert_consistent,
    drain,
    event_count,
    open_worker,
    running_api,
    wait_until,
)
from tests.support import free_port, serve

WorkerFactory = Callable[..., Awaitable[Persister]]


@pytest.fixture
async def make_worker(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[WorkerFactory]:
    await migrate(database_url)
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Persister:
            return await stack.enter_async_context(
                open_worker(redis_url, database_url, key_prefix, **overrides)
            )

        yield make


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(redis_url, key_prefix) as running:
        yield running


async def entries(client: redis.asyncio.Redis, stream: str) -> list[StreamEntry]:
    rows: Any = await client.xrange(stream)
    return [StreamEntry(sid.decode(), fields) for sid, fields in rows]


def event_fields(event_id: str, **overrides: str) -> dict[Any, Any]:
    fields: dict[Any, Any] = {
        "v": "1",
        "type": "score",
        "event_id": event_id,
        "user_id": "planted",
        "name": "Planted",
        "action": "quest_complete",
        "points": "10",
        "score": "10",
        "seq": "1",
        "idempotency_key": event_id,
        "ts": "1700000000000",
        "client_ip": "127.0.0.1",
    }
    return fields | overrides


async def pg(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


def sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_accepted_updates_land_once_and_are_acknowledged(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker()
    await api.load(60, users=7)
    await drain(worker)
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)
    assert (await redis_client.xpending(api.keys.stream, "persister"))["pending"] == 0
    [alice] = await pg(database_url, "SELECT * FROM users WHERE user_id = 'u0'")
    assert alice["name"] == "Name u0"
    history = await pg(database_url, "SELECT * FROM score_events WHERE user_id = 'u0'")
    assert {r["action"] for r in history} <= {"quest_complete", "level_up", "daily_login"}
    assert all(r["seq"] > 0 and r["stream_id"] and r["client_ip"] for r in history)


async def test_the_same_entry_delivered_twice_counts_once(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker()
    await api.load(10, users=3)
    await drain(worker)
    again = await entries(redis_client, api.keys.stream)
    before = sample("persister_events_duplicate_total")
    written = await worker.process(again)  # a redelivery of the whole batch
    assert (written.inserted, written.duplicates) == (0, 10)
    # The same event appended again under a new stream id (a replayed XADD) is ignored too.
    await redis_client.xadd(api.keys.stream, dict(again[0].fields or {}))  # type: ignore[arg-type]
    await drain(worker)
    assert sample("persister_events_duplicate_total") - before == 11
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_poison_entries_are_dead_lettered_after_max_attempts_without_blocking(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker(persister_max_attempts=3)
    keys = api.keys
    await api.load(5)
    await redis_client.xadd(keys.stream, {"garbage": "yes"})
    await redis_client.xadd(keys.stream, event_fields("odd0001", type="promote"))
    await api.load(5)
    before = sample("persister_dead_letters_total", reason="refused")

    async def dead_lettered() -> bool:
        await worker.step()
        return bool(await redis_client.xlen(keys.dead_letters) == 2)

    await wait_until(dead_lettered, "two dead letters")
    dead: Any = await redis_client.xrange(keys.dead_letters)
    errors = sorted(fields[b"dead_error"].decode() for _, fields in dead)
    assert "unknown event type 'promote'" in errors[0]
    assert "unsupported event version" in errors[1]
    assert all(b"(after 3 deliveries)" in fields[b"dead_error"] for _, fields in dead)
    assert dead[1][1][b"event_id"] == b"odd0001"  # the original fields are kept
    assert sample("persister_dead_letters_total", reason="refused") - before == 2
    assert (await redis_client.xpending(keys.stream, "persister"))["pending"] == 0
    await assert_consistent(redis_client, keys, database_url, api.accepted)


async def test_an_entry_postgres_refuses_is_isolated_from_its_batch(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker(persister_max_attempts=2)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "ALTER TABLE score_events ADD CONSTRAINT no_explosions CHECK (action <> 'explode')"
        )
    finally:
        await conn.close()
    await api.load(5)
    await redis_client.xadd(api.keys.stream, event_fields("boom0001", action="explode"))
    await api.load(5)

    async def settled() -> bool:
        await worker.step()
        return bool(await redis_client.xlen(api.keys.dead_letters) == 1)

    await wait_until(settled, "the refused entry in the dead-letter stream")
    dead: Any = await redis_client.xrange(api.keys.dead_letters)
    [(_, fields)] = dead
    assert b"CheckViolation" in fields[b"dead_error"]
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_the_next_batch_read_while_one_commits_is_stored_then_acknowledged(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker(persister_batch_size=10, persister_claim_idle_ms=3_600_000)
    await worker.ensure_group()
    await api.load(30)
    assert await worker.step() == 10
    # The second batch was read (it is pending) while the first committed, but not stored.
    assert await event_count(database_url) == 10
    assert (await redis_client.xpending(api.keys.stream, "persister"))["pending"] == 10
    assert await worker.step() == 10  # the batch read ahead, stored without another read
    assert await event_count(database_url) == 20
    assert (await redis_client.xpending(api.keys.stream, "persister"))["pending"] == 10
    # stop() with a batch read ahead: run() stores and acknowledges it before returning.
    worker.stop()
    await worker.run()
    assert await event_count(database_url) == 30
    assert (await redis_client.xpending(api.keys.stream, "persister"))["pending"] == 0
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_entries_of_a_dead_consumer_are_reclaimed(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker()
    await worker.ensure_group()
    await api.load(12)
    # A consumer that reads and dies without acknowledging.
    await redis_client.xreadgroup("persister", "ghost", {api.keys.stream: ">"}, count=8)
    before = sample("persister_reclaimed_total")

    async def persisted() -> bool:
        await worker.step()
        return bool((await redis_client.xpending(api.keys.stream, "persister"))["pending"] == 0)

    await wait_until(persisted, "the ghost's entries to be reclaimed")
    assert sample("persister_reclaimed_total") - before == 8
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_trim_keeps_unpersisted_entries_and_the_tail(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker(persister_stream_tail=5, persister_claim_idle_ms=3_600_000)
    keys = api.keys
    await worker.ensure_group()
    await api.load(10)
    ghost: Any = await redis_client.xreadgroup("persister", "ghost", {keys.stream: ">"}, count=3)
    held = [sid for sid, _ in ghost[0][1]]
    await api.load(20)
    await drain(worker)
    await worker.trim()
    # The ghost still holds 3 unpersisted entries: nothing from the oldest of them on goes.
    rows: Any = await redis_client.xrange(keys.stream)
    remaining = [sid for sid, _ in rows]
    assert remaining[0] == held[0]
    assert len(remaining) == 30
    [checkpoint] = await pg(database_url, "SELECT persisted_below FROM stream_checkpoints")
    assert checkpoint["persisted_below"] == held[0].decode()
    # Once they are persisted and acknowledged, only the gateways' tail stays.
    await worker.process(await entries(redis_client, keys.stream))
    await redis_client.xack(keys.stream, "persister", *held)
    await worker.trim()
    assert await redis_client.xlen(keys.stream) == 5
    await assert_consistent(redis_client, keys, database_url, api.accepted)


async def test_lost_group_restarts_at_the_postgres_checkpoint(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker()
    await api.load(10)
    await drain(worker)
    await worker.trim()
    await redis_client.xgroup_destroy(api.keys.stream, "persister")
    await api.load(4)
    duplicates = sample("persister_events_duplicate_total")
    await drain(worker)  # NOGROUP: recreated just below the checkpoint
    assert sample("persister_events_duplicate_total") == duplicates  # nothing read twice
    await assert_consistent(redis_client, api.keys, database_url, api.accepted)


async def test_lost_stream_restarts_the_group_at_the_beginning(
    api: Api, make_worker: WorkerFactory, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    worker = await make_worker()
    await api.load(10)
    await drain(worker)
    await worker.trim()
    # Redis lost everything: the stream (and group) are gone; the checkpoint cannot be trusted.
    await redis_client.delete(api.keys.stream)
    await redis_client.xadd(api.keys.stream, event_fields("after0001", ts="1700000000001"))
    await drain(worker)
    [row] = await pg(database_url, "SELECT * FROM score_events WHERE event_id = 'after0001'")
    assert row["user_id"] == "planted"


async def test_health_readiness_and_metrics(
    redis_url: str, database_url: str, key_prefix: str
) -> None:
    await migrate(database_url)
    settings = PersisterSettings(
        redis_url=redis_url,
        database_url=database_url,
        redis_key_prefix=key_prefix,
        persister_metrics_host="127.0.0.1",
        persister_metrics_port=0,
    )
    async with (
        running(settings) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        healthz = await http.get("/healthz")
        assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})
        readyz = await http.get("/readyz")
        assert (readyz.status_code, readyz.json()) == (200, {"status": "ready"})
        text = (await http.get("/metrics")).text
    for name in (
        "persister_events_persisted_total",
        "persister_batch_size",
        "persister_commit_seconds",
        "persister_pending_entries",
        "persister_oldest_unpersisted_age_seconds",
        "persister_reclaimed_total",
        "persister_dead_letters_total",
    ):
        assert name in text
    assert metrics.PENDING is not None


async def test_unready_when_postgres_is_unreachable(redis_url: str, key_prefix: str) -> None:
    settings = PersisterSettings(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/none",
    )
    store = await EventStore.open(settings.database_url, 1.0)
    worker = Persister(settings, connect(redis_url), store)
    try:
        assert set(await worker.readiness()) == {"postgres"}
        app = Starlette(routes=Health(ready=worker.readiness, alive=lambda: False).routes())
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            healthz = await http.get("/healthz")
            assert (healthz.status_code, healthz.json()) == (503, {"status": "stopped"})
            readyz = await http.get("/readyz")
            assert readyz.status_code == 503
            body = readyz.json()
            assert body.pop("status") == "unavailable"
            assert set(body) == {"postgres"}  # the failing backend, with its error's name
            assert body["postgres"]
    finally:
        await store.close()
        await worker.redis.aclose()
