"""Turn the score stream into at most one board read per tick, and keep the fan-out current.

Events are not interpreted: any entry (score, ban, ...) only means "the board may have
changed", so the board is re-read once per tick in which entries arrived and diffed against
the last one. A published version costs two commands whatever the number of clients: the
XREAD that saw the first entry, and one EVALSHA that reads the board together with the
stream's last ID, from which the next XREAD continues. That also covers removals,
shrinking and reordering. The read loop, reconnect and backoff are ``shared.streamfollow``'s;
this is its handler.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from services.broadcast_gateway import metrics
from services.broadcast_gateway.fanout import Fanout
from services.broadcast_gateway.protocol import Board, event_time_ms
from services.broadcast_gateway.settings import GatewaySettings
from shared.board_reader import BoardReader
from shared.clock import SYSTEM, Clock
from shared.keys import BoardKeys
from shared.redisconn import connect
from shared.streamfollow import Entry, StreamFollower

log = logging.getLogger(__name__)

IDLE_BLOCK_MS = 1000
MAX_DELAY_SAMPLES = 1000


class BoardFeed:
    """Keeps ``fanout`` at the live top N: initial snapshot, changes, and Redis outages."""

    def __init__(self, settings: GatewaySettings, fanout: Fanout, clock: Clock = SYSTEM) -> None:
        self.settings = settings
        self.fanout = fanout
        self.clock = clock
        self.keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        timeout = settings.gateway_redis_timeout_seconds
        self.redis = connect(settings.redis_url, timeout=timeout, max_connections=4)
        # XREAD BLOCK holds its connection for up to IDLE_BLOCK_MS: its own client, whose
        # socket timeout exceeds the block time.
        self.stream_redis = connect(
            settings.redis_url, timeout=timeout + IDLE_BLOCK_MS / 1000, max_connections=1
        )
        self.reader = BoardReader(self.redis, self.keys)
        self.follower = StreamFollower(
            self.stream_redis,
            self.keys.stream,
            self,
            batch=settings.gateway_stream_batch,
            backoff_cap=settings.gateway_reconnect_max_seconds,
            name="gateway",
        )
        self.healthy = False
        self._next_read = 0.0
        self._next_refresh = 0.0

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
        await self.follower.run()

    # The follower's handler

    async def start(self) -> str:
        board, last_id = await self._read_board()
        self.healthy = True
        self.fanout.reset(board)
        now = self.clock.monotonic()
        self._next_read, self._next_refresh = now, now + self.settings.gateway_refresh_seconds
        return last_id

    async def entries(self, entries: list[Entry]) -> str | None:
        self.healthy = True
        now = self.clock.monotonic()
        if not entries and now < self._next_refresh:
            return None
        if now >= self._next_refresh:
            self._next_refresh = now + self.settings.gateway_refresh_seconds
        # Board reads start at least a tick apart: an isolated change goes at once, the next
        # one within the tick waits for it without touching Redis (whatever arrives meanwhile
        # is in the read). Counted from the start of the read, so the read and the broadcast
        # do not stretch the tick: changes arriving once per tick are published one by one
        # instead of drifting into pairs.
        if now < self._next_read:
            await asyncio.sleep(self._next_read - now)
        self._next_read = self.clock.monotonic() + self.settings.gateway_tick_ms / 1000
        times = [ts for _, fields in entries[:MAX_DELAY_SAMPLES] if (ts := event_time_ms(fields))]
        board, last_id = await self._read_board()
        self.fanout.publish(board, times)
        return last_id

    def block_ms(self) -> int:
        until_refresh = self._next_refresh - self.clock.monotonic()
        return max(1, min(IDLE_BLOCK_MS, round(until_refresh * 1000)))

    def lost(self, exc: BaseException) -> None:
        self.healthy = False
        metrics.REDIS_ERRORS.inc()

    async def _read_board(self) -> tuple[Board, str]:
        """The top N and the last stream entry it includes, read together: following the
        stream from that ID can neither miss a change nor re-read one the board shows."""
        entries, last_id = await self.reader.top_at(self.settings.gateway_top_n)
        return tuple(entries), last_id
