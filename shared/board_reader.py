"""Read pages of the board from Redis in one round trip (score API and gateways)."""

from __future__ import annotations

from shared.board import Entry, entries_from_reply
from shared.keys import BoardKeys
from shared.redisconn import RedisClient, lua

_TOP = lua("shared", "top")


class BoardReader:
    def __init__(self, redis: RedisClient, keys: BoardKeys) -> None:
        self._keys = keys
        self._top = redis.register_script(_TOP)

    lua_text = _TOP

    @property
    def sha(self) -> str:
        return str(self._top.sha)

    async def page(
        self, offset: int, limit: int, board: str | None = None
    ) -> tuple[list[Entry], int]:
        """Entries ranked ``offset + 1 .. offset + limit`` and the number of ranked users, of
        the all-time board or of ``board`` (a period's sorted set)."""
        keys = [board or self._keys.board, self._keys.names]
        reply = await self._top(keys=keys, args=[offset, limit])
        return entries_from_reply(reply[1:], offset + 1), int(reply[0])

    async def top_at(self, limit: int) -> tuple[list[Entry], str]:
        """The first ``limit`` entries and the ID of the last stream entry they include.

        One atomic read: following the stream after that ID misses nothing and repeats
        nothing the page already shows.
        """
        keys = [self._keys.board, self._keys.names, self._keys.stream]
        reply = await self._top(keys=keys, args=[0, limit])
        last = reply[0]
        return entries_from_reply(reply[2:], 1), last.decode() if isinstance(last, bytes) else last
