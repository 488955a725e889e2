"""Copy the score API's refusal counters (Redis, ``BoardKeys.refusals``) into PostgreSQL's
``refusal_counts``, for the stats endpoint: the current and the previous UTC hour, each
count set to Redis's value, so a pass is idempotent and a late refusal of the previous hour
is still copied. Run with the trim pass; a failure is logged and the next pass copies again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg
from redis.exceptions import RedisError

from services.persister.errors import PG_ERRORS
from shared.keys import BoardKeys
from shared.redisconn import RedisClient, text

log = logging.getLogger(__name__)
HOUR_S = 3600

_UPSERT = """
INSERT INTO refusal_counts (hour, reason, count) SELECT * FROM unnest($1::timestamptz[],
    $2::text[], $3::bigint[])
ON CONFLICT (hour, reason) DO UPDATE SET count = excluded.count
WHERE refusal_counts.count IS DISTINCT FROM excluded.count
"""


async def copy_refusal_counts(
    redis: RedisClient, pool: asyncpg.Pool, keys: BoardKeys, now_s: float
) -> int:
    """Copy the two hours' counters; returns how many (hour, reason) rows were sent."""
    current = int(now_s) // HOUR_S
    hours, reasons, counts = [], [], []
    for hour in (current - 1, current):
        stored = await redis.hgetall(keys.refusals(hour))
        for reason, count in stored.items():
            hours.append(datetime.fromtimestamp(hour * HOUR_S, tz=UTC))
            reasons.append(text(reason))
            counts.append(int(count))
    if hours:
        async with pool.acquire() as conn:
            await conn.execute(_UPSERT, hours, reasons, counts)
    return len(hours)


async def copy_quietly(
    redis: RedisClient, pool: asyncpg.Pool, keys: BoardKeys, now_s: float
) -> None:
    try:
        await copy_refusal_counts(redis, pool, keys, now_s)
    except (RedisError, *PG_ERRORS) as exc:
        log.warning("refusal counts not copied, retrying on the next pass: %r", exc)
