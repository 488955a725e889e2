"""Archives: when a period of a periodic board ends, its final standings go to PostgreSQL
(``board_archives``), exactly once, whatever the number of persisters and whatever crashes.

- **Only once complete.** A period is closed only when the stream is persisted past its end
  (the group's checkpoint, ``stream_checkpoints``, or a group with nothing pending and
  nothing undelivered at Redis's now), so an event accepted before the boundary
  but persisted after it still counts. The standings come from the events that name the
  period (event version 2), ranked as the board ranks them: score, then who reached it
  first (the lower arrival counter), then the lower user id; revoked events never count,
  and banned and quarantined users are left out (the score API also leaves out of an
  archive's pages the users banned or quarantined after it was written).
- **Exactly once.** One transaction takes an advisory lock on the period, checks its
  ``board_periods_closed`` row, writes the standings and that row. A second persister waits
  for the lock and then finds the row; a crash rolls the transaction back and the next pass
  (of any persister) writes the archive whole.
- **Whatever the downtime.** ``board_archive_state.since`` says up to where a board is
  archived (first set to the oldest period Redis keeps when a persister first sees the
  board); each pass archives the ended periods from there, oldest first, at most
  ``MAX_PERIODS_PER_PASS``, and moves it on. A persister down for days catches up from
  PostgreSQL's events, which outlive Redis's retention.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg

from services.persister.periods import PERIOD_TOTALS
from shared.boards import Board, Boards
from shared.formats import period_tag
from shared.periods import Period

log = logging.getLogger(__name__)

MAX_PERIODS_PER_PASS = 1000

# Composed of constants only, at import: no value reaches the text.
_ARCHIVE = f"""
INSERT INTO board_archives (board_id, period, rank, user_id, name, score, reached_at)
SELECT $2, $3, row_number() OVER (ORDER BY t.score DESC, t.last_seq, t.user_id),
    t.user_id, coalesce(u.name, t.user_id), t.score, t.reached_at
FROM ({PERIOD_TOTALS}) AS t
LEFT JOIN users AS u USING (user_id)
WHERE NOT coalesce(u.banned, false) AND NOT coalesce(u.quarantined, false)
"""  # noqa: S608


def stream_id_ms(stream_id: str) -> int:
    return int(stream_id.partition("-")[0])


def ended_periods(board: Board, now_ms: int, retention: int) -> list[Period]:
    """The periods of ``board`` Redis still keeps that have ended, oldest first."""
    schedule = board.schedule
    period = schedule.previous(schedule.at(now_ms))
    out = []
    for _ in range(retention):
        out.append(period)
        period = schedule.previous(period)
    return out[::-1]


def periods_since(board: Board, since_ms: int, now_ms: int, most: int) -> list[Period]:
    """The periods that start at or after ``since_ms`` and have ended by ``now_ms``, oldest
    first, at most ``most`` of them."""
    schedule = board.schedule
    period = schedule.at(since_ms)
    if (period.start_ms or 0) < since_ms:
        period = schedule.following(period)
    out: list[Period] = []
    while len(out) < most and period.end_ms is not None and period.end_ms <= now_ms:
        out.append(period)
        period = schedule.following(period)
    return out


async def archive_period(conn: asyncpg.Connection, board_id: str, period: Period) -> int | None:
    """Write ``period``'s standings once; the number of entries, or None if already done."""
    assert period.start_ms is not None
    assert period.end_ms is not None
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"archive {board_id} {period.id}",
        )
        done = await conn.fetchval(
            "SELECT 1 FROM board_periods_closed WHERE board_id = $1 AND period = $2",
            board_id,
            period.id,
        )
        if done:
            return None
        status = await conn.execute(_ARCHIVE, period_tag(board_id, period.id), board_id, period.id)
        entries = int(status.split()[-1])
        await conn.execute(
            "INSERT INTO board_periods_closed (board_id, period, starts_at, ends_at, entries)"
            " VALUES ($1, $2, $3, $4, $5)",
            board_id,
            period.id,
            _time(period.start_ms),
            _time(period.end_ms),
            entries,
        )
        return entries


async def archive_due(
    pool: asyncpg.Pool, boards: Boards, now_ms: int, retention: int, persisted_ms: int | None
) -> list[tuple[str, str, int]]:
    """Archive every ended, kept period whose events are all in PostgreSQL (every event
    before ``persisted_ms`` is); what it wrote."""
    if persisted_ms is None:
        return []
    written = []
    async with pool.acquire() as conn:
        for board in boards.periodic:
            since = await _since(conn, board, now_ms, retention)
            for period in periods_since(board, since, now_ms, MAX_PERIODS_PER_PASS):
                assert period.end_ms is not None
                if persisted_ms < period.end_ms:
                    break  # later periods end later still
                entries = await archive_period(conn, board.board_id, period)
                if entries is not None:
                    log.info("archived %s %s: %d entries", board.board_id, period.id, entries)
                    written.append((board.board_id, period.id, entries))
                await conn.execute(
                    "UPDATE board_archive_state SET since = $2 WHERE board_id = $1 AND since < $2",
                    board.board_id,
                    _time(period.end_ms),
                )
    return written


async def _since(conn: asyncpg.Connection, board: Board, now_ms: int, retention: int) -> int:
    """Where the board's archiving stands (ms); the oldest kept period when first seen."""
    query = "SELECT since FROM board_archive_state WHERE board_id = $1"
    since: datetime | None = await conn.fetchval(query, board.board_id)
    if since is None:
        oldest = ended_periods(board, now_ms, retention)[0]
        await conn.execute(
            "INSERT INTO board_archive_state (board_id, since) VALUES ($1, $2)"
            " ON CONFLICT (board_id) DO NOTHING",
            board.board_id,
            _time(oldest.start_ms or 0),
        )
        since = await conn.fetchval(query, board.board_id)  # another persister's, if first
    assert since is not None
    return (since - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)
