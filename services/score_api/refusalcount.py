"""Refusals per UTC hour and reason, counted in Redis for the stats endpoint.

Every problem the API answers is counted by its ``reason`` (the label of
``score_api_rejections_total``, a bounded set: fixed reasons, ``rate_<limit>`` and
``budget_<limit>`` of the configured limits, ``http_<status>``). Counting costs the refusal a
dict increment and nothing else: a background flush sends what accumulated as one pipeline
of HINCRBY per (hour, reason) and one EXPIRE per hour key, and while a flush is in flight the
next refusals accumulate for the one after it, so a flood of refusals makes at most one
Redis round trip in flight per replica. Accepted awards never touch it. If Redis refuses the
flush, those counts are dropped (the stats are a report, the Prometheus counter stays exact).
The persister copies the counters into PostgreSQL (``services.persister.refusalcounts``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from redis.exceptions import RedisError

from shared.keys import REFUSAL_COUNT_TTL_SECONDS, BoardKeys
from shared.redisconn import RedisClient

log = logging.getLogger(__name__)
HOUR_S = 3600


class RefusalCounter:
    def __init__(self, redis: RedisClient, keys: BoardKeys) -> None:
        self._redis = redis
        self._keys = keys
        self._pending: Counter[tuple[int, str]] = Counter()
        self._task: asyncio.Task[None] | None = None

    def add(self, reason: str, now_s: float) -> None:
        """Count one refusal at ``now_s`` (wall seconds); flushed in the background."""
        self._pending[int(now_s) // HOUR_S, reason] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def flushed(self) -> None:
        """Wait until what was counted so far has been sent (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, Counter()
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for (hour, reason), count in batch.items():
                        pipe.hincrby(self._keys.refusals(hour), reason, count)
                    for hour in {hour for hour, _ in batch}:
                        pipe.expire(self._keys.refusals(hour), REFUSAL_COUNT_TTL_SECONDS)
                    await pipe.execute()
            except RedisError as exc:
                log.debug("refusal counts dropped: %s", exc)
