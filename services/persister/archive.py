"""Archives: when a period of a periodic board ends, its final standings go to PostgreSQL
(``board_archives``), exactly once, whatever the number of persisters and whatever crashes.

- **Only once complete.** A period is closed only when the stream is persisted past its end
  (the group's checkpoint, ``stream_checkpoints``, or a group with nothing pending and
  nothing undelivered at Redis's now), so an event accepted before the boundary
  but persisted after it still counts. The standings come from the events that name the
  period (event version 2), ranked as the board ranks them: score, then who reached it
  first (the lower arrival counter), then the lower user id; banned users are left out.
- **Exactly once.** One transaction takes an advisory lock on the period, checks its
  ``board_periods_closed`` row, writes the standings and that row. A second persister waits
  for the lock and then finds the row; a crash rolls the transaction back and the next pass
  (of any persister) writes the archive whole.
- Each pass looks at the periods Redis still keeps (``BOARD_RETENTION_PERIODS``) that have
  ended: a persister that is down for longer leaves those periods unarchived.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import asyncpg

from shared.boards import Board, Boards
from shared.formats import PERIOD_SEP
from shared.periods import Period

log = logging.getLogger(__name__)

_ARCHIVE = """
INSERT INTO board_archives (board_id, period, rank, user_id, name, score, reached_at)
SELECT $1, $2, row_number() OVER (ORDER BY t.score DESC, t.last_seq, t.user_id),
    t.user_id, coalesce(u.name, t.user_id), t.score, t.reached_at
FROM (
    SELECT user_id, sum(points)::bigint AS score, max(seq) AS last_seq,
        max(created_at) AS reached_at
    FROM score_events
    WHERE type = 'score' AND string_to_array(periods, ' ') @> ARRAY[$3::text]
    GROUP BY user_id
) AS t
LEFT JOIN users AS u USING (user_id)
WHERE NOT coalesce(u.banned, false)
"""


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
        status = await conn.execute(
            _ARCHIVE, board_id, period.id, f"{board_id}{PERIOD_SEP}{period.id}"
        )
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
            for period in ended_periods(board, now_ms, retention):
                assert period.end_ms is not None
                if persisted_ms < period.end_ms:
                    break  # later periods end later still
                entries = await archive_period(conn, board.board_id, period)
                if entries is not None:
                    log.info("archived %s %s: %d entries", board.board_id, period.id, entries)
                    written.append((board.board_id, period.id, entries))
    return written


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
