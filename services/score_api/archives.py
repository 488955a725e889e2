"""Archived periods, read from PostgreSQL (``board_archives``, written by the persister).

The score API reaches PostgreSQL only here, and only for periods that have ended: whether
one is archived (``final``), and the standings of one that Redis no longer keeps. The pool
is created on first use; while PostgreSQL is unreachable these reads answer 503 and
nothing else is affected. A period once archived stays archived, so positive answers are
cached for good and negative ones for a second.
"""

from __future__ import annotations

import asyncpg

from shared.board import Entry
from shared.clock import Clock

NEGATIVE_SECONDS = 1.0
MAX_CACHED = 10_000


class ArchiveUnavailable(Exception):
    """PostgreSQL did not answer (HTTP 503)."""


class Archives:
    def __init__(self, database_url: str, timeout: float, clock: Clock) -> None:
        self._url = database_url
        self._timeout = timeout
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._closed: set[tuple[str, str]] = set()
        self._open_until: dict[tuple[str, str], float] = {}

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def final(self, board_id: str, period: str) -> bool:
        """Whether the period's archive is complete."""
        key = (board_id, period)
        if key in self._closed:
            return True
        now = self._clock.monotonic()
        if self._open_until.get(key, 0.0) > now:
            return False
        try:
            done = await self._fetchval(
                "SELECT 1 FROM board_periods_closed WHERE board_id = $1 AND period = $2",
                board_id,
                period,
            )
        except ArchiveUnavailable:
            self._open_until[key] = now + NEGATIVE_SECONDS  # do not wait on it every read
            raise
        if done:
            if len(self._closed) < MAX_CACHED:
                self._closed.add(key)
            return True
        if len(self._open_until) >= MAX_CACHED:
            self._open_until.clear()
        self._open_until[key] = now + NEGATIVE_SECONDS
        return False

    async def page(
        self, board_id: str, period: str, offset: int, limit: int
    ) -> tuple[list[Entry], int]:
        rows = await self._fetch(
            "SELECT rank, user_id, name, score FROM board_archives"
            " WHERE board_id = $1 AND period = $2 AND rank > $3 ORDER BY rank LIMIT $4",
            board_id,
            period,
            offset,
            limit,
        )
        total = await self._fetchval(
            "SELECT entries FROM board_periods_closed WHERE board_id = $1 AND period = $2",
            board_id,
            period,
        )
        return [Entry(r["rank"], r["user_id"], r["name"], r["score"]) for r in rows], total or 0

    async def rank(
        self, board_id: str, period: str, user_id: str, around: int
    ) -> tuple[Entry, list[Entry]] | None:
        rank = await self._fetchval(
            "SELECT rank FROM board_archives WHERE board_id = $1 AND period = $2 AND user_id = $3",
            board_id,
            period,
            user_id,
        )
        if rank is None:
            return None
        rows = await self._fetch(
            "SELECT rank, user_id, name, score FROM board_archives WHERE board_id = $1"
            " AND period = $2 AND rank BETWEEN $3 AND $4 ORDER BY rank",
            board_id,
            period,
            rank - around,
            rank + around,
        )
        entries = [Entry(r["rank"], r["user_id"], r["name"], r["score"]) for r in rows]
        own = next(e for e in entries if e.user_id == user_id)
        return own, [e for e in entries if e.user_id != user_id]

    async def _pool_(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await asyncpg.create_pool(
                self._url, min_size=0, max_size=4, timeout=self._timeout,
                command_timeout=self._timeout,
            )  # fmt: skip
        return self._pool

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            pool = await self._pool_()
            async with pool.acquire(timeout=self._timeout) as conn:
                return list(await conn.fetch(query, *args))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveUnavailable(str(exc)) from exc

    async def _fetchval(self, query: str, *args: object) -> int | None:
        """The first column of the first row: every such query here reads an integer."""
        rows = await self._fetch(query, *args)
        return int(rows[0][0]) if rows and rows[0][0] is not None else None
