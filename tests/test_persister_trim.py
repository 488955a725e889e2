"""Trimming against real Redis: a bounded read per call, never an unpersisted entry, always
the gateways' tail, a backlog trimmed over passes that come sooner, and the lag age measured
on the clock it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from services.persister import trim
from services.persister.migrate import migrate
from services.persister.trim import Trimmer
from services.persister.worker import Persister
from shared.redisconn import text
from tests.persister_fixtures import open_worker
from tests.support import ManualClock

BOUND = 8


@pytest.fixture
async def worker(redis_url: str, database_url: str, key_prefix: str) -> AsyncIterator[Persister]:
    await migrate(database_url)
    async with open_worker(
        redis_url,
        database_url,
        key_prefix,
        persister_stream_tail=5,
        persister_batch_size=100,
        persister_claim_idle_ms=3_600_000,
        persister_trim_interval_ms=1000,
    ) as opened:
        await opened.ensure_group()
        yield opened


def trimmer_of(worker: Persister, clock: ManualClock, **overrides: Any) -> Trimmer:
    settings = worker.settings.model_copy(update=overrides)
    return Trimmer(replace(worker.member, settings=settings, clock=clock), read_bound=BOUND)


async def add(
    client: redis.asyncio.Redis, stream: str, count: int, ms: int = 1_600_000_000_000
) -> list[str]:
    """``count`` events with ids ``ms-1``, ``ms-2``, ...: consecutive, so the id just above
    one entry is the next entry's."""
    ids = []
    for i in range(count):
        event = f"e{ms}x{i}"
        fields = {
            "v": "1",
            "type": "score",
            "event_id": event,
            "user_id": f"u{i % 7}",
            "name": "Name",
            "action": "quest_complete",
            "points": "10",
            "score": "10",
            "seq": str(i + 1),
            "idempotency_key": event,
            "ts": "1700000000000",
            "client_ip": "127.0.0.1",
        }
        sid = await client.xadd(stream, fields, id=f"{ms}-{i + 1}")  # type: ignore[arg-type]
        ids.append(text(sid))
    return ids


async def persist_next(worker: Persister) -> int:
    """Deliver one batch to the worker and store it (no read-ahead, no trim)."""
    entries = await worker.fetcher.read(">")
    await worker.process(entries)
    return len(entries)


async def stream_ids(client: redis.asyncio.Redis, stream: str) -> list[str]:
    rows: Any = await client.xrange(stream)
    return [sid.decode() for sid, _ in rows]


async def test_a_backlog_is_trimmed_a_bounded_chunk_per_call_up_to_the_first_unpersisted(
    worker: Persister, redis_client: redis.asyncio.Redis
) -> None:
    clock = ManualClock()
    # Fewer undelivered entries (200) than the tail (220): the bounded script decides.
    trimmer = trimmer_of(worker, clock, persister_stream_tail=220)
    ids = await add(redis_client, worker.stream, 300)
    assert await persist_next(worker) == 100  # the other 200 are not even delivered
    assert trim.ROUNDS * BOUND < 300 - 220
    assert await trimmer.trim()
    # One pass: ROUNDS calls of at most BOUND entries each, then the loop's turn again.
    assert await stream_ids(redis_client, worker.stream) == ids[trim.ROUNDS * BOUND :]
    assert trimmer.due  # a backlog is left: the next pass trims again without waiting
    assert await trimmer.trim()
    assert await stream_ids(redis_client, worker.stream) == ids[80:]  # the tail, all kept
    assert not trimmer.due
    assert await worker.store.checkpoint(worker.stream, worker.group) == ids[100]


async def test_a_stream_the_group_lags_behind_by_a_tail_is_trimmed_to_safe_in_one_call(
    worker: Persister, redis_client: redis.asyncio.Redis
) -> None:
    # 100 entries never delivered, more than the tail of 5: the tail is all unpersisted, so
    # everything persisted goes at once (Redis 7's group lag), whatever the read bound.
    trimmer = trimmer_of(worker, ManualClock())
    ids = await add(redis_client, worker.stream, 200)
    assert await persist_next(worker) == 100
    assert await trimmer.trim()
    assert await stream_ids(redis_client, worker.stream) == ids[100:]
    assert not trimmer.due
    assert await persist_next(worker) == 100
    assert await trimmer.trim()
    assert await stream_ids(redis_client, worker.stream) == ids[-5:]  # only the tail


async def test_the_tail_is_kept_even_when_everything_below_it_is_persisted(
    worker: Persister, redis_client: redis.asyncio.Redis
) -> None:
    trimmer = trimmer_of(worker, ManualClock(), persister_stream_tail=150)
    ids = await add(redis_client, worker.stream, 200)
    assert await persist_next(worker) == 100
    assert await trimmer.trim()
    # 50 beyond the tail, in calls of at most BOUND: all within one pass, and no further.
    assert await stream_ids(redis_client, worker.stream) == ids[50:]
    assert not trimmer.due


async def test_a_caught_up_stream_is_trimmed_to_its_tail_in_one_call(
    worker: Persister, redis_client: redis.asyncio.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    trimmer = trimmer_of(worker, ManualClock())
    ids = await add(redis_client, worker.stream, 300)
    for _ in range(3):
        assert await persist_next(worker) == 100
    script = trimmer._script
    calls: list[object] = []

    async def counted(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return await script(**kwargs)

    monkeypatch.setattr(trimmer, "_script", counted)
    assert await trimmer.trim()
    # Nothing unpersisted: everything before the tail goes at once, however much it is.
    assert await stream_ids(redis_client, worker.stream) == ids[-5:]
    assert len(calls) == 1
    assert not trimmer.due


async def test_the_oldest_unpersisted_age_is_measured_on_the_given_clock(
    worker: Persister, redis_client: redis.asyncio.Redis
) -> None:
    await add(redis_client, worker.stream, 3, ms=1_700_000_000_000)
    trimmer = trimmer_of(worker, ManualClock(wall=1_700_000_042.0))
    assert await trimmer.trim()
    assert REGISTRY.get_sample_value("persister_oldest_unpersisted_age_seconds") == 42.0
