"""The persister's PostgreSQL side: one transaction per batch, checkpoints, and error sorting.

Errors fall in two kinds. ``is_data_error``: the rows themselves are unacceptable (SQLSTATE
classes 22 data exception and 23 integrity violation); retrying the same rows cannot help, so
they become dead-letter candidates. Everything else (connection lost, server shutting down,
deadlock, a missing table before ``migrate``) is retried with backoff, keeping the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from services.persister.batch import (
    EventRow,
    Refused,
    flag_decisions,
    moderation_states,
    user_deltas,
)

log = logging.getLogger(__name__)

_INSERT_EVENTS = """
INSERT INTO score_events (event_id, stream_id, seq, type, user_id, name, action, points,
    score_after, idempotency_key, client_ip, created_at, request_id, user_agent, jti, iss,
    moderator, ticket, duration_ms, reporter, periods, reason, revocation, flag)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
    $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::timestamptz[],
    $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
    $19::bigint[], $20::text[], $21::text[], $22::text[], $23::text[], $24::bigint[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

# A name only replaces the stored one when it comes from a later event than the stored one.
# first_award_at keeps the earliest award (LEAST ignores the NULL of a user moderated first).
_UPSERT_USERS = """
INSERT INTO users AS u (user_id, name, score, last_seq, updated_at, first_award_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[],
    $6::timestamptz[])
ON CONFLICT (user_id) DO UPDATE SET
    score = u.score + excluded.score,
    name = CASE WHEN excluded.last_seq >= u.last_seq THEN excluded.name ELSE u.name END,
    last_seq = GREATEST(u.last_seq, excluded.last_seq),
    updated_at = GREATEST(u.updated_at, excluded.updated_at),
    first_award_at = LEAST(u.first_award_at, excluded.first_award_at)
"""

# A state event (ban, unban, quarantine, release) sets both flags unless a newer state event
# already did; a user moderated before ever scoring gets a row with score 0. Revoke events
# change no row here: the score API's transaction already took the points off users.score.
_UPSERT_STATES = """
INSERT INTO users AS u (user_id, name, score, last_seq, updated_at, banned, quarantined,
    moderated_at)
SELECT user_id, name, 0, 0, at, banned, quarantined, at
FROM unnest($1::text[], $2::text[], $3::boolean[], $4::boolean[], $5::timestamptz[])
    AS t(user_id, name, banned, quarantined, at)
ON CONFLICT (user_id) DO UPDATE SET banned = excluded.banned,
    quarantined = excluded.quarantined, moderated_at = excluded.moderated_at
WHERE u.moderated_at IS NULL OR excluded.moderated_at >= u.moderated_at
"""

# A ban, quarantine or revoke actions the user's open flags, those raised by then (a flag
# first seen after the action, e.g. a quarantined user's later awards, stays open).
_ACTION_FLAGS = """
UPDATE user_flags AS f SET state = 'actioned', decided_by = t.moderator, decided_at = t.at,
    decision = t.decision
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[])
    AS t(user_id, moderator, at, decision)
WHERE f.user_id = t.user_id AND f.state = 'open' AND f.first_seen <= t.at
"""

# A dismiss closes its flag if still open (the score API may have done it already).
_DISMISS_FLAGS = """
UPDATE user_flags AS f SET state = 'dismissed', decided_by = t.moderator, decided_at = t.at,
    decision = t.reason
FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[])
    AS t(flag_id, moderator, at, reason)
WHERE f.flag_id = t.flag_id AND f.state = 'open'
"""


def is_data_error(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "")[:2] in {"22", "23"}


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of storing a batch's rows."""

    inserted: int  # rows that were new
    duplicates: int  # rows already in the database (an earlier delivery committed them)
    refused: list[Refused]  # rows PostgreSQL would not take


class EventStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, database_url: str, connect_seconds: float) -> EventStore:
        # min_size=0: creating the pool needs no server, so the worker starts (and reports
        # unready) while PostgreSQL is down.
        pool = await asyncpg.create_pool(
            database_url,
            min_size=0,
            max_size=3,
            timeout=connect_seconds,
            command_timeout=connect_seconds * 6,
        )
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def write(self, rows: Sequence[EventRow]) -> Written:
        """Store the rows in one transaction; on a data error, find the bad rows one by one.

        Raises anything else (connection errors, deadlocks, ...): the caller retries.
        """
        if not rows:
            return Written(0, 0, [])
        try:
            inserted = await self._write_transaction(rows)
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                raise
            log.warning("batch of %d refused (%s); storing its rows one by one", len(rows), exc)
        else:
            return Written(len(inserted), len(rows) - len(inserted), [])
        count, refused = 0, []
        for row in rows:
            try:
                count += len(await self._write_transaction([row]))
            except asyncpg.PostgresError as exc:
                if not is_data_error(exc):
                    raise
                refused.append(Refused(row.stream_id, f"{type(exc).__name__}: {exc}"))
        return Written(count, len(rows) - len(refused) - count, refused)

    async def _write_transaction(self, rows: Sequence[EventRow]) -> set[str]:
        # Rows in event-id order and users in user-id order: concurrent persisters that
        # overlap (a reclaimed entry) then lock in the same order and cannot deadlock.
        ordered = sorted(rows, key=lambda r: r.event_id)
        async with self.pool.acquire() as conn, conn.transaction():
            returned = await conn.fetch(_INSERT_EVENTS, *_event_columns(ordered))
            inserted = {r["event_id"] for r in returned}
            deltas = user_deltas(ordered, inserted)
            if deltas:
                user_columns = ("user_id", "name", "points", "last_seq", "updated_at",
                                "first_award_at")  # fmt: skip
                await conn.execute(_UPSERT_USERS, *_columns(deltas, user_columns))
            states = moderation_states(ordered, inserted)
            if states:
                state_columns = ("user_id", "name", "banned", "quarantined", "at")
                await conn.execute(_UPSERT_STATES, *_columns(states, state_columns))
            flags = flag_decisions(ordered, inserted)
            if flags:
                dismissal = ("flag_id", "moderator", "at", "reason")
                if flags.early:
                    await conn.execute(_DISMISS_FLAGS, *_columns(flags.early, dismissal))
                if flags.actions:
                    action = ("user_id", "moderator", "at", "decision")
                    await conn.execute(_ACTION_FLAGS, *_columns(flags.actions, action))
                if flags.late:
                    await conn.execute(_DISMISS_FLAGS, *_columns(flags.late, dismissal))
        return inserted

    async def checkpoint(self, stream: str, group: str) -> str | None:
        async with self.pool.acquire() as conn:
            value: str | None = await conn.fetchval(
                "SELECT persisted_below FROM stream_checkpoints"
                " WHERE stream = $1 AND consumer_group = $2",
                stream,
                group,
            )
        return value

    async def save_checkpoint(self, stream: str, group: str, persisted_below: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                """INSERT INTO stream_checkpoints (stream, consumer_group, persisted_below)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (stream, consumer_group) DO UPDATE
                   SET persisted_below = excluded.persisted_below, updated_at = now()""",
                stream,
                group,
                persisted_below,
            )

    async def has_event(self, event_id: str) -> bool:
        async with self.pool.acquire() as conn:
            return bool(
                await conn.fetchval("SELECT 1 FROM score_events WHERE event_id = $1", event_id)
            )

    async def ping(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")


def _columns(rows: Sequence[object], names: Sequence[str]) -> list[list[object]]:
    """One array per named attribute, in the order of the statement's ``unnest`` arguments."""
    return [[getattr(row, name) for row in rows] for name in names]


def _event_columns(rows: Sequence[EventRow]) -> list[tuple[object, ...]]:
    """One array per column, in ``EventRow`` order (the order of ``_INSERT_EVENTS``)."""
    return list(zip(*rows, strict=True))
