"""``persister rebuild``: recreate the Redis board and names from PostgreSQL (Redis was lost).

Users are streamed from PostgreSQL in one read-only snapshot into staging keys (banned users
into the ``banned`` hash, exactly as a ban leaves them, not onto the board; quarantined users
onto the hidden board and into the ``quarantined`` hash, as a quarantine leaves them), which a
script then renames over the live ones in one step, so readers never see a half-built board.
Members are ``encode_member(users.last_seq, user_id)``, the same tie-break the score API
wrote (a revocation sets ``last_seq`` to the user's last unrevoked event, as it sets the
member in Redis), and the arrival counter is raised to at least the highest ``last_seq`` so
new updates sort after.

Each periodic board's current period (by Redis's clock) is rebuilt too, from the unrevoked
events that name it (event version 2, ``score_events.periods``), into staging keys renamed
into place the same way; a banned user's period entries go where a ban keeps them, a
quarantined user's onto the period's hidden board.

It refuses to replace a non-empty board unless forced: a board that has data may be newer than
PostgreSQL (events still in the stream). Stop writes (or let the API answer 503) while it runs;
an update accepted during a forced rebuild is in PostgreSQL later but missing from the board.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

import asyncpg

from services.persister.periods import PERIOD_TOTALS
from shared.boards import Slots
from shared.formats import banned_period_field, banned_value, encode_member, period_tag
from shared.keys import BoardKeys
from shared.redisconn import RedisClient, connect, lua, now_ms
from shared.settings import SharedSettings

CHUNK = 5000
_SWAP = lua("services.persister", "swap")
_SWAP_PERIOD = lua("services.persister", "swap_period")


class RebuildRefused(Exception):
    """The live board is not empty and ``--force`` was not given."""


_USERS = """
SELECT user_id, name, score, last_seq, banned, quarantined, moderated_at
FROM users ORDER BY user_id
"""


def _staged(live: str) -> str:
    """The staging copy of a live key that has no ``rebuild_*`` name of its own."""
    return f"{live}:rebuild"


async def rebuild(
    settings: SharedSettings, *, force: bool = False, out: TextIO = sys.stdout, chunk: int = CHUNK
) -> int:
    """Rebuild the board; returns the number of users written."""
    keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
    redis = connect(settings.redis_url, timeout=30.0, max_connections=4)
    conn = await asyncpg.connect(settings.database_url)
    try:
        if not force and await redis.zcard(keys.board) + await redis.zcard(keys.hidden_board):
            raise RebuildRefused(f"{keys.board} is not empty; use --force to replace it")
        live = [keys.board, keys.members, keys.names, keys.banned]
        live += [keys.hidden_board, keys.quarantined]
        staged = [keys.rebuild_board, keys.rebuild_members, keys.rebuild_names, keys.rebuild_banned]
        staged += [_staged(keys.hidden_board), _staged(keys.quarantined)]
        await redis.delete(*staged)
        done = max_seq = 0
        now = await now_ms(redis)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            total = await conn.fetchval("SELECT count(*) FROM users")
            print(f"rebuilding {total} users into {keys.board}", file=out, flush=True)
            rows: list[asyncpg.Record] = []
            async for row in conn.cursor(_USERS, prefetch=chunk):
                rows.append(row)
                if len(rows) == chunk:
                    max_seq = max(max_seq, await _stage(redis, keys, rows, now))
                    done += len(rows)
                    rows = []
                    print(f"  {done}/{total}", file=out, flush=True)
            if rows:
                max_seq = max(max_seq, await _stage(redis, keys, rows, now))
                done += len(rows)
        swap = redis.register_script(_SWAP)
        if not await swap(keys=[*staged, *live, keys.seq], args=[max_seq, 1 if force else 0]):
            raise RebuildRefused(f"{keys.board} received updates meanwhile; nothing replaced")
        print(f"rebuilt {done} users; seq >= {max_seq}", file=out, flush=True)
        await _rebuild_periods(settings, redis, conn, keys, out)
        return done
    finally:
        await conn.close()
        await redis.aclose()


async def _stage(redis: RedisClient, keys: BoardKeys, rows: list[asyncpg.Record], now: int) -> int:
    ranked = [r for r in rows if not r["banned"] and not r["quarantined"]]
    banned = [r for r in rows if r["banned"]]
    # A ban supersedes a quarantine (shared.moderation): never both, but banned wins.
    quarantined = [r for r in rows if r["quarantined"] and not r["banned"]]
    # Like a quarantine in Redis, a user who never scored gets no hidden entry.
    hidden = [r for r in quarantined if r["last_seq"]]
    async with redis.pipeline(transaction=False) as pipe:
        for board, entries in ((keys.rebuild_board, ranked), (_staged(keys.hidden_board), hidden)):
            if entries:
                members = {
                    r["user_id"]: encode_member(r["last_seq"], r["user_id"]) for r in entries
                }
                pipe.zadd(board, {members[r["user_id"]]: -r["score"] for r in entries})
                pipe.hset(keys.rebuild_members, mapping=members)
        if banned:
            pipe.hset(keys.rebuild_banned, mapping={r["user_id"]: banned_entry(r) for r in banned})
        if quarantined:
            since = {r["user_id"]: _moderated_ms(r, now) for r in quarantined}
            pipe.hset(_staged(keys.quarantined), mapping=since)
        pipe.hset(keys.rebuild_names, mapping={r["user_id"]: r["name"] for r in rows})
        await pipe.execute()
    return max(int(r["last_seq"]) for r in rows)


def _moderated_ms(row: asyncpg.Record, now: int) -> int:
    """The ``quarantined`` hash's value: when the quarantine came (else the rebuild's now)."""
    at = row["moderated_at"]
    return now if at is None else (at - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Composed of constants only, at import: no value reaches the text.
_PERIOD_USERS = f"""
SELECT t.user_id, t.score, t.last_seq, coalesce(u.banned, false) AS banned,
    coalesce(u.quarantined, false) AND NOT coalesce(u.banned, false) AS quarantined
FROM ({PERIOD_TOTALS}) AS t LEFT JOIN users AS u USING (user_id)
"""  # noqa: S608


async def _rebuild_periods(
    settings: SharedSettings,
    redis: RedisClient,
    conn: asyncpg.Connection,
    keys: BoardKeys,
    out: TextIO,
) -> None:
    """The current period of every periodic board, from the unrevoked events counted in it."""
    slots = Slots(settings.board_family(), settings.board_retention_periods).current(
        await now_ms(redis)
    )
    for slot in slots:
        board_id, period = slot.board_id, slot.period
        live, live_members = keys.period_keys(board_id, period.id)
        live_hidden = keys.hidden_period_board(board_id, period.id)
        staged = [_staged(live), _staged(live_members), _staged(live_hidden)]
        rows = await conn.fetch(_PERIOD_USERS, period_tag(board_id, period.id))
        ranked = [r for r in rows if not r["banned"] and not r["quarantined"]]
        hidden = [r for r in rows if r["quarantined"]]
        await redis.unlink(*staged)
        async with redis.pipeline(transaction=False) as pipe:
            for board, entries in ((staged[0], ranked), (staged[2], hidden)):
                if entries:
                    members = {
                        r["user_id"]: encode_member(r["last_seq"], r["user_id"]) for r in entries
                    }
                    pipe.zadd(board, {members[r["user_id"]]: -r["score"] for r in entries})
                    pipe.hset(staged[1], mapping=members)
            for r in rows:
                if r["banned"]:
                    field = banned_period_field(r["user_id"], board_id, period.id)
                    value = banned_value(r["score"], encode_member(r["last_seq"], r["user_id"]))
                    pipe.hset(keys.banned_periods, field, value)
            await pipe.execute()
        swap = redis.register_script(_SWAP_PERIOD)
        await swap(keys=[*staged, live, live_members, live_hidden], args=[slot.expire_at_ms])
        print(f"rebuilt {board_id} {period.id}: {len(ranked)} users", file=out, flush=True)


def banned_entry(row: asyncpg.Record) -> str:
    """The score API's ``banned`` value (``shared.formats``); empty parts if never scored."""
    if row["last_seq"] == 0:
        return banned_value(None, None)
    return banned_value(row["score"], encode_member(row["last_seq"], row["user_id"]))
