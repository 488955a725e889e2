"""Readiness: whether the persister can do its job now (both backends answer), and why not."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from redis.exceptions import RedisError

from services.persister.errors import PG_ERRORS
from services.persister.store import EventStore
from shared.redisconn import RedisClient

PROBE_SECONDS = 2.0


async def readiness(redis: RedisClient, store: EventStore) -> dict[str, object]:
    """The failing backends, each with the error it raised (``{}``: ready)."""

    async def check(name: str, probe: Awaitable[object]) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe, PROBE_SECONDS)
        except (RedisError, *PG_ERRORS) as exc:
            return name, type(exc).__name__
        return name, None

    results = await asyncio.gather(check("redis", redis.ping()), check("postgres", store.ping()))
    return {name: problem for name, problem in results if problem}
