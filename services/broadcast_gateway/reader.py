"""Follow the score stream and turn "something happened" into at most one board read per tick.

Events are not interpreted: any entry (score, ban, ...) only means "the board may have
changed", so the board is re-read once per tick in which entries arrived and diffed against
the last one. A published version costs two commands whatever the number of clients: the
XREAD that saw the first entry, and one EVALSHA that reads the board together with the
stream's last ID, from which the next XREAD continues. That also covers removals,
shrinking and reordering. Every instance reads with plain XREAD, not a consumer group, because
each must see every event.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from redis.exceptions import RedisError

from services.broadcast_gateway import metrics
from services.broadcast_gateway.fanout import Fanout
from services.broadcast_gateway.protocol import Board, event_time_ms
from services.broadcast_gateway.settings import GatewaySettings
from shared.board_reader import BoardReader
from shared.keys import BoardKeys
from shared.redisconn import connect

log = logging.getLogger(__name__)

IDLE_BLOCK_MS = 1000
MAX_DELAY_SAMPLES = 1000


def backoff_delay(
    attempt: int, cap: float, base: float = 0.05, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0, min(cap, base * 2 ** min(attempt, 30)))


class BoardFeed:
    """Keeps ``fanout`` at the live top N: initial snapshot, changes, and Redis outages."""

    def __init__(self, settings: GatewaySettings, fanout: Fanout) -> None:
        self.settings = settings
        self.fanout = fanout
        self.keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        timeout = settings.gateway_redis_timeout_seconds
        self.redis = connect(settings.redis_url, timeout=timeout, max_connections=4)
        # XREAD BLOCK holds its connection for up to IDLE_BLOCK_MS: its own client, whose
        # socket timeout exceeds the block time.
        self.stream_redis = connect(
            settings.redis_url, timeout=timeout + IDLE_BLOCK_MS / 1000, max_connections=1
        )
        self.reader = BoardReader(self.redis, self.keys)
        self.healthy = False
        self._last_id = "0-0"

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.stream_redis.aclose()

    async def ready(self) -> bool:
        """Redis answers now and the board is loaded."""
        if not (self.healthy and self.fanout.loaded):
            return False
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False

    async def run(self) -> None:
        """Load, follow, and after any Redis failure reconnect with backoff and reload."""
        attempt = 0
        while True:
            try:
                await self._load()
                attempt = 0
                await self._follow()
            except (RedisError, OSError) as exc:
                self.healthy = False
                metrics.REDIS_ERRORS.inc()
                delay = backoff_delay(attempt, self.settings.gateway_reconnect_max_seconds)
                log.warning("redis unavailable (%s); retrying in %.2fs", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _load(self) -> None:
        board, self._last_id = await self._read_board()
        self.healthy = True
        self.fanout.reset(board)

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.settings.gateway_tick_ms / 1000
        pending = False
        times: list[int] = []
        refresh = self.settings.gateway_refresh_seconds
        next_read, next_refresh = loop.time(), loop.time() + refresh
        while True:
            now = loop.time()
            if now >= next_refresh:
                pending, next_refresh = True, now + refresh
            if pending:
                # Board reads start at least a tick apart: an isolated change goes at once, the
                # next one within the tick waits for it without touching Redis (whatever
                # arrives meanwhile is in the read). Counted from the start of the read, so
                # the read and the broadcast do not stretch the tick: changes arriving once
                # per tick are published one by one instead of drifting into pairs.
                if now < next_read:
                    await asyncio.sleep(next_read - now)
                next_read = loop.time() + tick
                board, self._last_id = await self._read_board()
                self.fanout.publish(board, times)
                pending, times = False, []
                continue
            block = max(1, min(IDLE_BLOCK_MS, round((next_refresh - now) * 1000)))
            reply: Any = await self.stream_redis.xread(
                {self.keys.stream: self._last_id},
                count=self.settings.gateway_stream_batch,
                block=block,
            )
            self.healthy = True
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id.decode()
                    pending = True
                    ts = event_time_ms(fields)
                    if ts is not None and len(times) < MAX_DELAY_SAMPLES:
                        times.append(ts)

    async def _read_board(self) -> tuple[Board, str]:
        """The top N and the last stream entry it includes, read together: following the
        stream from that ID can neither miss a change nor re-read one the board shows."""
        entries, last_id = await self.reader.top_at(self.settings.gateway_top_n)
        return tuple(entries), last_id
