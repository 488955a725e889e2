"""Follow the score stream, as a gateway does, to invalidate this process's board cache.

Entries are not interpreted: any entry means "the board may have changed". Every API process
reads with plain XREAD from the last ID it saw (no consumer group: each must see every entry).
While Redis is unreachable the cache is disabled, so board reads go to Redis and fail with 503.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any, NoReturn

from redis.exceptions import RedisError

from services.score_api.boardcache import BoardCache
from shared.keys import BoardKeys
from shared.redisconn import connect

log = logging.getLogger(__name__)

BLOCK_MS = 1000
BATCH = 1000
# After entries arrive, wait this long before reading again, so a burst of writes costs one
# XREAD per tick rather than one per entry (this process's own writes invalidate at once).
TICK_SECONDS = 0.01
RECONNECT_MAX_SECONDS = 1.0


class StreamFollower:
    def __init__(self, redis_url: str, keys: BoardKeys, cache: BoardCache, timeout: float) -> None:
        self.keys = keys
        self.cache = cache
        # XREAD BLOCK holds its connection for up to BLOCK_MS: a client of its own, whose
        # socket timeout exceeds the block time.
        self.redis = connect(redis_url, timeout=timeout + BLOCK_MS / 1000, max_connections=1)

    async def aclose(self) -> None:
        await self.redis.aclose()

    async def run(self) -> None:
        """Take a position, enable the cache, follow; after any Redis failure start over."""
        attempt = 0
        while True:
            try:
                last_id = await self._position()
                self.cache.enable()
                attempt = 0
                await self._follow(last_id)
            except (RedisError, OSError) as exc:
                self.cache.disable()
                delay = random.uniform(0, min(RECONNECT_MAX_SECONDS, 0.05 * 2 ** min(attempt, 8)))
                log.warning("board cache off, redis unavailable (%s); retry in %.2fs", exc, delay)
            except Exception:
                # Never leave the cache on without a follower: it would miss other writes.
                self.cache.disable()
                delay = RECONNECT_MAX_SECONDS
                log.exception("board cache off, stream follower failed; retry in %.2fs", delay)
            attempt += 1
            await asyncio.sleep(delay)

    async def _position(self) -> str:
        # The stream's last ID is noted before the cache is enabled, so any page cached from
        # then on was read after that ID, and any later entry invalidates it.
        last: Any = await self.redis.xrevrange(self.keys.stream, count=1)
        return str(last[0][0].decode()) if last else "0-0"

    async def _follow(self, last_id: str) -> NoReturn:
        while True:
            reply: Any = await self.redis.xread(
                {self.keys.stream: last_id}, count=BATCH, block=BLOCK_MS
            )
            for _stream, entries in reply or ():
                if entries:
                    last_id = entries[-1][0].decode()
                    self.cache.invalidate()
                    await asyncio.sleep(TICK_SECONDS)
