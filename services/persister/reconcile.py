"""``persister reconcile``: compare each user's total in Redis and in PostgreSQL.

Three numbers per user must agree: the board's score (for a banned user, the score kept
aside by the ban; for a quarantined one, the hidden board's), ``users.score`` and the sum of
the points of the user's unrevoked ``score_events``. For the current period of each periodic
board (by Redis's clock), two: the period's score in Redis (public, hidden, or kept aside by
a ban) and the sum of the points of the unrevoked events that name the period. Events still
in the stream (persister lag) show up as differences, so run it when the lag is zero, or run
it twice and look at what persists.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

import asyncpg

from services.persister.periods import PERIOD_TOTALS
from shared.boards import ALL_TIME
from shared.formats import banned_parts, banned_period_field, decode_member, period_tag
from shared.keys import BoardKeys
from shared.redisconn import RedisClient, connect, now_ms
from shared.settings import SharedSettings


@dataclass(frozen=True, slots=True)
class Difference:
    user_id: str
    redis: int | None  # None: not on the board / no row / no events
    postgres: int | None
    events: int | None
    board: str = ALL_TIME  # or "<board_id> <period_id>"

    def __str__(self) -> str:
        def show(value: int | None) -> str:
            return "-" if value is None else str(value)

        where = "" if self.board == ALL_TIME else f" [{self.board}]"
        return (
            f"{self.user_id}{where}: redis={show(self.redis)} postgres={show(self.postgres)} "
            f"events={show(self.events)}"
        )


def compare(
    redis: dict[str, int], postgres: dict[str, int], events: dict[str, int]
) -> list[Difference]:
    """Every user whose three totals are not all equal, by user id (absent counts as 0: a user
    banned before scoring has a row with 0 and no entry or events)."""
    out = []
    for user in sorted(redis.keys() | postgres.keys() | events.keys()):
        values = (redis.get(user), postgres.get(user), events.get(user))
        if len({value or 0 for value in values}) != 1:
            out.append(Difference(user, *values))
    return out


def compare_period(board: str, redis: dict[str, int], events: dict[str, int]) -> list[Difference]:
    """Users whose score in one period differs between Redis and the events naming it."""
    return [
        Difference(d.user_id, d.redis, None, d.events, board)
        for d in compare(redis, events, events)
    ]


async def reconcile(settings: SharedSettings, out: TextIO = sys.stdout) -> list[Difference]:
    keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
    redis = connect(settings.redis_url, timeout=30.0, max_connections=2)
    conn = await asyncpg.connect(settings.database_url)
    try:
        board: dict[str, int] = {}
        # Quarantined users' entries are on the hidden board, everyone else's on the board; a
        # banned user's total is kept aside by the ban (shared.formats.banned_value). Each
        # place adds, so a user found in two (which the scripts never leave) differs.
        for key in (keys.board, keys.hidden_board):
            await _scores(redis, key, board)
        async for user, saved in redis.hscan_iter(keys.banned, count=1000):
            score, _ = banned_parts(saved.decode())
            _add(board, user.decode(), score or 0)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            users = await conn.fetch("SELECT user_id, score FROM users")
            sums = await conn.fetch(
                "SELECT user_id, sum(points)::bigint AS total FROM score_events"
                " WHERE type = 'score' AND revoked_by IS NULL GROUP BY user_id"
            )
            differences = compare(
                board,
                {r["user_id"]: r["score"] for r in users},
                {r["user_id"]: r["total"] for r in sums},
            )
            differences += await _periods(settings, redis, conn, keys)
    finally:
        await conn.close()
        await redis.aclose()
    for difference in differences:
        print(difference, file=out)
    print(
        f"{len(board)} users on the board, {len(users)} in postgres, {len(differences)} differ",
        file=out,
    )
    return differences


async def _periods(
    settings: SharedSettings, redis: RedisClient, conn: asyncpg.Connection, keys: BoardKeys
) -> list[Difference]:
    now = await now_ms(redis)
    out: list[Difference] = []
    for board in settings.board_family().periodic:
        period = board.period_at(now)
        scores: dict[str, int] = {}
        await _scores(redis, keys.period_board(board.board_id, period.id), scores)
        await _scores(redis, keys.hidden_period_board(board.board_id, period.id), scores)
        suffix = banned_period_field("", board.board_id, period.id)
        async for field, saved in redis.hscan_iter(keys.banned_periods, count=1000):
            name = field.decode()
            if name.endswith(suffix):
                _add(scores, name[: -len(suffix)], banned_parts(saved.decode())[0] or 0)
        rows = await conn.fetch(PERIOD_TOTALS, period_tag(board.board_id, period.id))
        events = {r["user_id"]: r["score"] for r in rows}
        out += compare_period(f"{board.board_id} {period.id}", scores, events)
    return out


async def _scores(redis: RedisClient, key: str, into: dict[str, int]) -> None:
    """Every user's total on one sorted set of the board's form, into ``into``."""
    async for member, score in redis.zscan_iter(key, count=1000):
        _add(into, decode_member(member.decode())[1], -int(score))


def _add(into: dict[str, int], user_id: str, score: int) -> None:
    into[user_id] = into.get(user_id, 0) + score
