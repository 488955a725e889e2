"""The persister's ``running()`` in-process against real servers: a crashed loop ends the
service with exit code 1, a stop finishes the batch in hand, and a batch stuck past the
shutdown deadline is cancelled and left pending (so it is redelivered)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
import redis.asyncio

from services.persister import __main__ as cli
from services.persister.batch import EventRow
from services.persister.migrate import migrate
from services.persister.service import Service
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore, Written
from services.persister.worker import Persister
from shared.keys import BoardKeys
from tests.persister_fixtures import event_count, pending_count, wait_until
from tests.support import new_prefix

SHUTDOWN = 0.5


@pytest.fixture
async def settings(redis_url: str, database_url: str, key_prefix: str) -> PersisterSettings:
    await migrate(database_url)
    return PersisterSettings(
        redis_url=redis_url,
        database_url=database_url,
        redis_key_prefix=key_prefix,
        persister_metrics_host="127.0.0.1",
        persister_metrics_port=0,
        persister_block_ms=20,
        persister_shutdown_seconds=SHUTDOWN,
    )


async def add_events(client: redis.asyncio.Redis, stream: str, count: int) -> None:
    tag = new_prefix().replace("-", "_")
    for i in range(count):
        event = f"{tag}_{i}"
        fields: dict[Any, Any] = {
            "v": "1",
            "type": "score",
            "event_id": event,
            "user_id": "u1",
            "name": "U",
            "action": "quest_complete",
            "points": "10",
            "score": str(10 * (i + 1)),
            "seq": str(i + 1),
            "idempotency_key": event,
            "ts": "1700000000000",
            "client_ip": "127.0.0.1",
        }
        await client.xadd(stream, fields)


def crash(monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(self: Persister) -> int:
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(Persister, "step", broken)


async def test_a_crashed_loop_ends_the_service_unhealthy_with_exit_code_1(
    settings: PersisterSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash(monkeypatch)
    service = Service(settings)
    async with service.running() as url, httpx.AsyncClient(base_url=url) as http:
        await asyncio.wait_for(service.ended.wait(), 10)
        healthz = await http.get("/healthz")
        assert (healthz.status_code, healthz.json()) == (503, {"status": "stopped"})
    assert service.exit_code == 1


async def test_the_run_command_returns_1_when_the_loop_crashes(
    settings: PersisterSettings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    crash(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="services.persister"):
        assert await asyncio.wait_for(cli.run(settings), 10) == 1
    assert "the persist loop crashed" in caplog.text


async def test_stop_finishes_the_batch_in_hand_and_exits_0(
    settings: PersisterSettings,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.asyncio.Redis,
) -> None:
    write = EventStore.write
    writing = asyncio.Event()

    async def slow(self: EventStore, rows: Sequence[EventRow]) -> Written:
        writing.set()
        await asyncio.sleep(SHUTDOWN / 3)  # still within the deadline
        return await write(self, rows)

    monkeypatch.setattr(EventStore, "write", slow)
    keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
    await add_events(redis_client, keys.stream, 20)  # all there: the first batch takes them all
    service = Service(settings)
    async with service.running():
        await asyncio.wait_for(writing.wait(), 10)
    assert service.exit_code == 0
    assert await event_count(settings.database_url) == 20
    assert await pending_count(redis_client, keys) == 0


async def test_a_batch_stuck_past_the_deadline_is_cancelled_and_left_pending(
    settings: PersisterSettings,
    monkeypatch: pytest.MonkeyPatch,
    redis_client: redis.asyncio.Redis,
) -> None:
    async def stuck(self: EventStore, rows: Sequence[EventRow]) -> Written:
        await asyncio.Event().wait()  # PostgreSQL never answers
        raise AssertionError("unreachable")

    monkeypatch.setattr(EventStore, "write", stuck)
    keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
    await add_events(redis_client, keys.stream, 5)  # all there: the first batch takes them all
    service = Service(settings)
    async with service.running():

        async def in_hand() -> bool:
            return await pending_count(redis_client, keys) == 5

        await wait_until(in_hand, "the batch in hand")
        started = time.monotonic()
    assert time.monotonic() - started < SHUTDOWN + 2
    assert service.exit_code == 1
    assert await pending_count(redis_client, keys) == 5  # nothing acknowledged: redelivered
    assert await event_count(settings.database_url) == 0
