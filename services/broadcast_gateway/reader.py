"""Turn the score stream into at most one board read per tick, and keep the fan-outs current.

Events are not interpreted: any entry (score, ban, ...) only means "the boards may have
changed", so every board of the family is re-read once per tick in which entries arrived
and diffed against the last read. A published version costs two commands whatever the
number of clients and boards: the XREAD that saw the first entry, and one EVALSHA
(``lua/tops.lua``) that reads every board together with the stream's last ID, from which
the next XREAD continues, and Redis's clock. That also covers removals, shrinking and
reordering. A periodic board's period is the one holding Redis's clock; when it ends, the
next read (woken at the boundary) gives its clients a snapshot of the new period. The read
loop, reconnect and backoff are ``shared.streamfollow``'s; this is its handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from redis.exceptions import RedisError

from services.broadcast_gateway import metrics
from services.broadcast_gateway.fanout import Fanout
from services.broadcast_gateway.protocol import Board, event_time_ms
from services.broadcast_gateway.settings import GatewaySettings
from shared.board import entries_from_reply
from shared.boards import ALL_TIME
from shared.boards import Board as BoardSpec
from shared.clock import SYSTEM, Clock, ms
from shared.keys import BoardKeys
from shared.periods import Period
from shared.redisconn import connect, lua, text
from shared.streamfollow import Entry, StreamFollower

log = logging.getLogger(__name__)

IDLE_BLOCK_MS = 1000
MAX_DELAY_SAMPLES = 1000
_TOPS = lua("services.broadcast_gateway", "tops")


class BoardFeed:
    """Keeps each fan-out (one per board, ``fanouts``) at the live top N of its board's
    current period: initial snapshots, changes, rollovers, and Redis outages."""

    def __init__(
        self,
        settings: GatewaySettings,
        fanouts: Mapping[str, Fanout],
        clock: Clock = SYSTEM,
    ) -> None:
        self.settings = settings
        self.fanouts = fanouts
        self.fanout = self.fanouts[ALL_TIME]
        self.boards: list[BoardSpec] = [
            b for b in settings.board_family() if b.board_id in self.fanouts
        ]
        self.clock = clock
        # Redis's clock minus ours, from the last read: it names the current periods.
        self._offset_ms = 0
        self._periods: dict[str, Period] = {}
        self.keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        timeout = settings.gateway_redis_timeout_seconds
        self.redis = connect(settings.redis_url, timeout=timeout, max_connections=4)
        # XREAD BLOCK holds its connection for up to IDLE_BLOCK_MS: its own client, whose
        # socket timeout exceeds the block time.
        self.stream_redis = connect(
            settings.redis_url, timeout=timeout + IDLE_BLOCK_MS / 1000, max_connections=1
        )
        self._tops = self.redis.register_script(_TOPS)
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
        boards, last_id = await self._read_boards()
        self.healthy = True
        for board_id, board in boards.items():
            self.fanouts[board_id].reset(board, self._periods[board_id].id)
        now = self.clock.monotonic()
        self._next_read, self._next_refresh = now, now + self.settings.gateway_refresh_seconds
        return last_id

    async def entries(self, entries: list[Entry]) -> str | None:
        self.healthy = True
        now = self.clock.monotonic()
        if not entries and now < self._next_refresh and not self._rolled_over():
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
        shown = {board_id: period.id for board_id, period in self._periods.items()}
        boards, last_id = await self._read_boards()
        for board_id, board in boards.items():
            fanout = self.fanouts[board_id]
            period = self._periods[board_id].id
            if period != shown.get(board_id):
                fanout.reset(board, period)  # a new period: a snapshot, never a diff
            else:
                fanout.publish(board, times if board_id == ALL_TIME else ())
        return last_id

    def block_ms(self) -> int:
        until_refresh = self._next_refresh - self.clock.monotonic()
        waits = [until_refresh * 1000, IDLE_BLOCK_MS]
        now = self._redis_now_ms()
        # Wake at the next period boundary, so the new period's snapshot goes within a tick.
        waits += [p.end_ms - now for p in self._periods.values() if p.end_ms is not None]
        return max(1, round(min(waits)))

    def lost(self, exc: BaseException) -> None:
        self.healthy = False
        metrics.REDIS_ERRORS.inc()

    def _redis_now_ms(self) -> int:
        return ms(self.clock) + self._offset_ms

    def _rolled_over(self) -> bool:
        now = self._redis_now_ms()
        return any(p.end_ms is not None and now >= p.end_ms for p in self._periods.values())

    def _keys(self, now_ms: int) -> list[str]:
        """Each board's sorted set in the period holding ``now_ms`` (noted in _periods)."""
        keys = []
        for board in self.boards:
            period = board.period_at(now_ms)
            self._periods[board.board_id] = period
            if board.periodic:
                keys.append(self.keys.period_board(board.board_id, period.id))
            else:
                keys.append(self.keys.board)
        return keys

    async def _read_boards(self) -> tuple[dict[str, Board], str]:
        """Every board's top N and the last stream entry they include, read together:
        following the stream from that ID can neither miss a change nor re-read one the
        boards show. Read again in the rare case that Redis's clock says the periods read
        were not the current ones (our estimate of its clock was off at a boundary)."""
        for _ in range(3):
            guess = self._redis_now_ms()
            boards = self._keys(guess)
            keys = [self.keys.names, self.keys.stream, *boards]
            reply = await self._tops(keys=keys, args=[self.settings.gateway_top_n])
            last_id, redis_now = text(reply[0]), int(reply[1])
            self._offset_ms = redis_now - ms(self.clock)
            if all(p.contains(redis_now) for p in self._periods.values()):
                break
        read: dict[str, Board] = {}
        at = 2
        for board in self.boards:
            count = int(reply[at])
            rows = reply[at + 1 : at + 1 + 3 * count]
            read[board.board_id] = tuple(entries_from_reply(rows, 1))
            at += 1 + 3 * count
        return read, last_id
