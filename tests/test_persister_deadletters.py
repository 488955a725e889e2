"""Dead letters against real Redis: an entry out of attempts moves to the dead-letter stream,
acknowledged in the same transaction, stamped with the time of the clock it is given."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis.asyncio

from services.persister.batch import Refused
from services.persister.deadletters import DeadLetters
from services.persister.migrate import migrate
from shared.redisconn import text
from tests.persister_fixtures import open_worker
from tests.support import ManualClock


async def test_a_dead_letter_is_acknowledged_and_stamped_with_the_given_clock(
    redis_url: str, database_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    await migrate(database_url)
    async with open_worker(redis_url, database_url, key_prefix) as worker:
        await worker.ensure_group()
        sid = text(await redis_client.xadd(worker.stream, {"garbage": "yes"}))
        [entry] = await worker.fetcher.read(">")
        clock = ManualClock(wall=1_700_000_123.5)
        settings = worker.settings.model_copy(
            update={"persister_consumer": "w1", "persister_max_attempts": 1}
        )
        dead = DeadLetters(replace(worker.member, settings=settings, clock=clock))
        await dead.refuse([entry], [Refused(sid, "not an event")])
        rows: Any = await redis_client.xrange(worker.keys.dead_letters)
        [(_, fields)] = rows
        assert fields[b"dead_at_ms"] == b"1700000123500"
        assert fields[b"dead_error"] == b"not an event (after 1 deliveries)"
        assert fields[b"dead_stream_id"] == sid.encode()
        assert fields[b"garbage"] == b"yes"
        assert (await redis_client.xpending(worker.stream, worker.group))["pending"] == 0
