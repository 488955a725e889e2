"""Revocations, PostgreSQL's side: mark a user's score events in a time range revoked, once.

One transaction, under an advisory lock per user (overlapping revocations of one user
serialise, and an event is revoked by one revocation only):

1. a revocation id seen before returns what it recorded (``replayed``); with other
   parameters it is a conflict;
2. the user's score events with ``since <= created_at < until`` and ``seq <= up_to_seq`` that
   still count get ``revoked_by``; events are never deleted;
3. per board (``all`` and each ``<board_id>=<period_id>`` they counted in): the points removed
   and the arrival counter of the user's last event that still counts there, which Redis
   needs for the tie-break (``revoke.lua``);
4. ``users.score`` loses the points and ``users.last_seq`` follows the last remaining event;
5. an archived period it touches gets an ``archive_corrections`` row (the archive itself is
   never rewritten), and the ``revocations`` row records it all with the moderator.

``applied_at`` is set once Redis applied it; an unapplied revocation (Redis failed after
the commit) is applied before the user's next revocation, and a retry with the same
``Idempotency-Key`` applies it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from services.score_api.tickets import rfc3339
from shared.formats import PERIOD_SEP, period_tag

ALL = "all"


class RevocationConflict(Exception):
    """The revocation id was used for another user or time range."""


@dataclass(frozen=True, slots=True)
class Revocation:
    revocation_id: str
    user_id: str
    since_ms: int
    until_ms: int
    up_to_seq: int
    events: int
    points: int
    # ALL or a period tag -> (points removed, seq of the last event still counted there)
    boards: dict[str, tuple[int, int]]
    corrections: list[tuple[str, str, int]] = field(default_factory=list)
    applied: bool = False
    replayed: bool = False
    reason: str = ""

    def periods(self) -> dict[tuple[str, str], tuple[int, int]]:
        """The period boards it touches: (board_id, period_id) -> (points, last kept seq)."""
        out = {}
        for tag, value in self.boards.items():
            if tag != ALL:
                board_id, _, period_id = tag.partition(PERIOD_SEP)
                out[(board_id, period_id)] = value
        return out

    def as_dict(self, score: int | None) -> dict[str, object]:
        return {
            "revocation_id": self.revocation_id,
            "user_id": self.user_id,
            "since": rfc3339(self.since_ms),
            "until": rfc3339(self.until_ms),
            "events": self.events,
            "points": self.points,
            "score": score,
            "boards": [
                {"board_id": b, "period": p, "points": points}
                for (b, p), (points, _) in sorted(self.periods().items())
            ],
            "corrections": [
                {"board_id": b, "period": p, "points": points} for b, p, points in self.corrections
            ],
            "replayed": self.replayed,
        }


def board_points(rows: Iterable[tuple[int, str | None]]) -> dict[str, int]:
    """Points removed per board from the revoked events' (points, periods)."""
    out: dict[str, int] = {ALL: 0}
    for points, periods in rows:
        out[ALL] += points
        for tag in (periods or "").split():
            out[tag] = out.get(tag, 0) + points
    return out


_MARK = """
UPDATE score_events SET revoked_by = $1
WHERE user_id = $2 AND type = 'score' AND revoked_by IS NULL
    AND created_at >= $3 AND created_at < $4 AND seq <= $5
RETURNING points, periods
"""
_LAST_KEPT = """
SELECT coalesce(max(seq), 0) FROM score_events
WHERE user_id = $1 AND type = 'score' AND revoked_by IS NULL AND seq <= $2
"""
_LAST_KEPT_IN = """
SELECT tag, max(seq) FROM score_events, unnest(string_to_array(periods, ' ')) AS tag
WHERE user_id = $1 AND type = 'score' AND revoked_by IS NULL AND seq <= $2
    AND string_to_array(periods, ' ') && $3::text[] AND tag = ANY($3::text[])
GROUP BY tag
"""
_USER = """
UPDATE users SET score = score - $2, last_seq = (SELECT coalesce(max(seq), 0) FROM score_events
    WHERE user_id = $1 AND type = 'score' AND revoked_by IS NULL)
WHERE user_id = $1
"""
_ARCHIVED = """
SELECT board_id, period FROM board_periods_closed
WHERE board_id || '=' || period = ANY($1::text[]) ORDER BY board_id, period
"""


async def record(
    conn: asyncpg.Connection,
    revocation_id: str,
    user_id: str,
    since_ms: int,
    until_ms: int,
    up_to_seq: int,
    reason: str,
    moderator: str,
    request_id: str | None,
) -> Revocation:
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"revoke {user_id}"
        )
        row = await conn.fetchrow(
            "SELECT * FROM revocations WHERE revocation_id = $1", revocation_id
        )
        if row is not None:
            seen = _revocation(row, await _corrections(conn, revocation_id), replayed=True)
            if (seen.user_id, seen.since_ms, seen.until_ms) != (user_id, since_ms, until_ms):
                raise RevocationConflict(revocation_id)
            return seen
        since, until = _time(since_ms), _time(until_ms)
        marked = await conn.fetch(_MARK, revocation_id, user_id, since, until, up_to_seq)
        removed = board_points((r["points"], r["periods"]) for r in marked)
        tags = [t for t in removed if t != ALL]
        last = {ALL: await conn.fetchval(_LAST_KEPT, user_id, up_to_seq)}
        if tags:
            last |= dict(await conn.fetch(_LAST_KEPT_IN, user_id, up_to_seq, tags))
        boards = {tag: (points, int(last.get(tag) or 0)) for tag, points in removed.items()}
        if marked:
            await conn.execute(_USER, user_id, removed[ALL])
        revocation = Revocation(
            revocation_id, user_id, since_ms, until_ms, up_to_seq, len(marked), removed[ALL],
            boards, reason=reason,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO revocations (revocation_id, user_id, since, until, up_to_seq, events,"
            " points, boards, reason, moderator, request_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11)",
            revocation_id,
            user_id,
            since,
            until,
            up_to_seq,
            len(marked),
            removed[ALL],
            orjson.dumps(boards).decode(),
            reason,
            moderator,
            request_id,
        )
        corrections = []
        for board_id, period in await conn.fetch(_ARCHIVED, tags):
            points = removed[period_tag(board_id, period)]
            await conn.execute(
                "INSERT INTO archive_corrections (board_id, period, revocation_id, user_id,"
                " points) VALUES ($1, $2, $3, $4, $5)",
                board_id,
                period,
                revocation_id,
                user_id,
                points,
            )
            corrections.append((board_id, period, points))
        return replace(revocation, corrections=corrections)


async def mark_applied(conn: asyncpg.Connection, revocation_id: str) -> None:
    await conn.execute(
        "UPDATE revocations SET applied_at = now() WHERE revocation_id = $1 AND applied_at IS NULL",
        revocation_id,
    )


async def unapplied(conn: asyncpg.Connection, user_id: str) -> list[Revocation]:
    """The user's revocations recorded here whose Redis step has not been confirmed."""
    rows = await conn.fetch(
        "SELECT * FROM revocations WHERE user_id = $1 AND applied_at IS NULL ORDER BY created_at",
        user_id,
    )
    return [_revocation(r, []) for r in rows]


async def _corrections(conn: asyncpg.Connection, revocation_id: str) -> list[tuple[str, str, int]]:
    rows = await conn.fetch(
        "SELECT board_id, period, points FROM archive_corrections WHERE revocation_id = $1"
        " ORDER BY board_id, period",
        revocation_id,
    )
    return [(r["board_id"], r["period"], r["points"]) for r in rows]


def _revocation(
    row: asyncpg.Record, corrections: list[tuple[str, str, int]], replayed: bool = False
) -> Revocation:
    boards = {tag: (int(p), int(s)) for tag, (p, s) in orjson.loads(row["boards"]).items()}
    return Revocation(
        row["revocation_id"],
        row["user_id"],
        _ms(row["since"]),
        _ms(row["until"]),
        row["up_to_seq"],
        row["events"],
        row["points"],
        boards,
        corrections,
        applied=row["applied_at"] is not None,
        replayed=replayed,
        reason=row["reason"],
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)
