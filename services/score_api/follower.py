"""Follow the score stream, as a gateway does, to invalidate this process's board cache.

Entries are not interpreted: any entry means "the board may have changed". While Redis is
unreachable the cache is disabled, so board reads go to Redis and fail with 503. The read
loop, reconnect and backoff are ``shared.streamfollow``'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.score_api.boardcache import BoardCache
from shared.keys import BoardKeys
from shared.redisconn import connect
from shared.streamfollow import Entry, StreamFollower

BLOCK_MS = 1000
BATCH = 1000
# After entries arrive, wait this long before reading again, so a burst of writes costs one
# XREAD per tick rather than one per entry (this process's own writes invalidate at once).
TICK_SECONDS = 0.01
RECONNECT_MAX_SECONDS = 1.0


class CacheInvalidator:
    """The follower's handler: the cache is on exactly while the stream is followed."""

    def __init__(self, redis_url: str, keys: BoardKeys, cache: BoardCache, timeout: float) -> None:
        self.keys = keys
        self.cache = cache
        # XREAD BLOCK holds its connection for up to BLOCK_MS: a client of its own, whose
        # socket timeout exceeds the block time.
        self.redis = connect(redis_url, timeout=timeout + BLOCK_MS / 1000, max_connections=1)
        self.follower = StreamFollower(
            self.redis,
            keys.stream,
            self,
            batch=BATCH,
            backoff_cap=RECONNECT_MAX_SECONDS,
            name="board cache",
        )

    async def run(self) -> None:
        await self.follower.run()

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def start(self) -> str:
        # The stream's last ID is noted before the cache is enabled, so any page cached from
        # then on was read after that ID, and any later entry invalidates it.
        last: Any = await self.redis.xrevrange(self.keys.stream, count=1)
        self.cache.enable()
        return str(last[0][0].decode()) if last else "0-0"

    async def entries(self, entries: list[Entry]) -> str | None:
        if entries:
            self.cache.invalidate()
            await asyncio.sleep(TICK_SECONDS)
        return None

    def block_ms(self) -> int:
        return BLOCK_MS

    def lost(self, exc: BaseException) -> None:
        # Never leave the cache on without a follower: it would miss other replicas' writes.
        self.cache.disable()
