"""Archives of ended periods, exactly once: two persister processes, one SIGKILLed inside its
archive transaction, still leave one archive per period, equal to the board at the boundary.
In real time, on a 10 s board (at most about 10 s of waiting)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio

from services.persister.archive import archive_due, ended_periods
from services.persister.migrate import migrate
from shared.boards import Boards
from shared.periods import Schedule
from tests.persister_fixtures import persisters, wait_until
from tests.test_score_api import running_api

BOARDS: dict[str, Any] = {
    "all-time": {"reset": "never"},
    "tens": {"reset": "interval", "interval_seconds": 10},
}
TENS = Schedule("interval", interval_seconds=10)


def test_the_periods_a_pass_looks_at_are_the_kept_ones_that_ended() -> None:
    board = Boards.from_mapping(BOARDS).periodic[0]
    now = 1_764_594_035_000  # 13:00:35 UTC
    ids = [p.id for p in ended_periods(board, now, 3)]
    assert ids == ["2025-12-01T13:00:00Z", "2025-12-01T13:00:10Z", "2025-12-01T13:00:20Z"]


async def test_two_persisters_and_a_sigkill_mid_archive_leave_exactly_one_archive(
    tmp_path: Path,
    redis_url: str,
    database_url: str,
    key_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    await migrate(database_url)
    env = {"BOARDS": json.dumps(BOARDS), "BOARD_RETENTION_PERIODS": "2"}
    conn = await asyncpg.connect(database_url)
    try:
        async with (
            running_api(redis_url=redis_url, redis_key_prefix=key_prefix, boards=BOARDS) as api,
            persisters(tmp_path, redis_url, database_url, key_prefix, **env) as spawn,
        ):
            users = ["ann", "bob", "cid", "bob", "dan", "ann", "eve"]
            responses = [await api.post(user, f"k{i}") for i, user in enumerate(users)]
            periods = {r.json()["boards"][1]["period"] for r in responses}
            period = max(periods)  # the awards may straddle a boundary; follow the last one
            lock = f"archive tens {period}"
            # Hold the period's archive lock: the first persister to archive it blocks inside
            # its transaction, where it is killed.
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", lock)
            first = spawn("p1")

            async def waiting() -> bool:
                blocked = await conn.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                return int(blocked) >= 1

            await wait_until(waiting, "p1 blocked inside its archive transaction", within=30)
            end = TENS.named(period).end_ms or 0
            seconds, _ = await redis_client.time()
            assert int(seconds) * 1000 >= end
            board = await api.http.get(
                "/api/score-board", params={"board": "tens", "period": period, "limit": 100}
            )
            at_boundary = [
                (e["rank"], e["user_id"], e["name"], e["score"]) for e in board.json()["board"]
            ]
            first.kill()  # SIGKILL, its transaction open
            second, third = spawn("p2"), spawn("p3")
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", lock)

            async def closed() -> bool:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM board_periods_closed"
                        " WHERE board_id = 'tens' AND period = $1",
                        period,
                    )
                )

            await wait_until(closed, f"tens {period} archived", within=30)
            # Both survivors go on archiving every 200 ms (PERSISTER_TRIM_INTERVAL_MS): give
            # them a few passes, which must change nothing.
            await asyncio.sleep(1.0)
            assert second.proc is not None
            assert third.proc is not None
            assert second.proc.poll() is None
            assert third.proc.poll() is None
            rows = await conn.fetch(
                "SELECT rank, user_id, name, score FROM board_archives"
                " WHERE board_id = 'tens' AND period = $1 ORDER BY rank",
                period,
            )
            markers = await conn.fetch(
                "SELECT board_id, period, entries FROM board_periods_closed WHERE period = $1",
                period,
            )
    finally:
        await conn.close()
    assert [tuple(r.values()) for r in rows] == at_boundary
    assert len(at_boundary) >= 1
    assert [tuple(m.values()) for m in markers] == [("tens", period, len(at_boundary))]


async def test_archiving_catches_up_after_a_downtime_longer_than_retention(
    database_url: str,
) -> None:
    """The persister was down for 12 periods with only 1 kept: the ended ones are archived
    from PostgreSQL's events, oldest first, each once."""
    await migrate(database_url)
    board = Boards.from_mapping(BOARDS)
    first = TENS.at(1_764_594_000_000)  # 2025-12-01T13:00:00Z
    played = TENS.following(first)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            for seq, (user, points) in enumerate([("ann", 10), ("bob", 30), ("ann", 25)], 1):
                await conn.execute(
                    "INSERT INTO score_events (event_id, stream_id, seq, type, user_id, name,"
                    " action, points, score_after, idempotency_key, client_ip, created_at,"
                    " periods) VALUES ($1, $2, $3, 'score', $4, $4, 'coin', $5, $5, $1, '',"
                    " now(), $6)",
                    f"e{seq}", f"{seq}-0", seq, user, points, f"tens={played.id}",
                )  # fmt: skip
        # Seen once at the start of the first period: from the oldest kept one, just ended.
        seen = await archive_due(pool, board, first.start_ms or 0, 1, first.start_ms)
        assert seen == [("tens", TENS.previous(first).id, 0)]
        later = (first.start_ms or 0) + 12 * 10_000
        written = await archive_due(pool, board, later, 1, later)
        assert [w[1] for w in written][:2] == [first.id, played.id]
        assert len(written) == 12
        assert dict((w[1], w[2]) for w in written)[played.id] == 2
        assert await archive_due(pool, board, later, 1, later) == []
        async with pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT rank, user_id, score FROM board_archives WHERE period = $1 ORDER BY rank",
                played.id,
            )
        assert [tuple(r.values()) for r in rows] == [(1, "ann", 35), (2, "bob", 30)]
    finally:
        await pool.close()
