"""Archived periods, read from PostgreSQL (``board_archives``, written by the persister).

Board reads reach PostgreSQL only here, and only for periods that have ended: whether one
is archived (``final``), and the standings of one that Redis no longer keeps. They share the
API's one pool (``database``); while PostgreSQL is unreachable these reads answer 503 and
nothing else is affected. A period once archived stays archived, so positive answers are
cached for good and negative ones for a second.

An archive is written once, but what it shows follows moderation: users banned or quarantined
now (``users``) are left out of its pages and rank look-ups, and the ranks of the others close
up (``Hidden``), exactly as on a live board. Revocations that touched an archived period are
listed beside it (``corrections``), never applied to its rows.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.score_api.database import Database, DatabaseUnavailable
from services.score_api.tickets import rfc3339
from shared.board import Entry
from shared.clock import Clock

NEGATIVE_SECONDS = 1.0
MAX_CACHED = 10_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Users hidden from every board now: each part reads its own partial index.
_HIDDEN_USERS = (
    "SELECT user_id FROM users WHERE banned UNION SELECT user_id FROM users WHERE quarantined"
)
# Archived rows by their stored rank (the primary key's order).
_RANGE = (
    "SELECT rank, user_id, name, score FROM board_archives"
    " WHERE board_id = $1 AND period = $2 AND rank BETWEEN $3 AND $4 ORDER BY rank"
)


# PostgreSQL did not answer (HTTP 503): the database's own error, under the name board reads
# know it by.
ArchiveUnavailable = DatabaseUnavailable


@dataclass(frozen=True, slots=True)
class Hidden:
    """The users hidden now, and the stored ranks (ascending) of those in one archive: what
    maps its stored ranks to the visible ones, where the others close up."""

    users: frozenset[str]
    ranks: list[int]

    def closed_up(self, stored: int) -> int:
        """The visible rank of a visible entry's stored rank."""
        return stored - bisect_left(self.ranks, stored)

    def original(self, visible: int) -> int:
        """The stored rank of the entry shown at ``visible`` (every hidden rank at or before
        it pushes it one further)."""
        stored = visible
        for hidden in self.ranks:
            if hidden > stored:
                break
            stored += 1
        return stored

    def visible(self, rows: Sequence[asyncpg.Record]) -> list[Entry]:
        """The visible entries among stored rows, with their closed-up ranks."""
        skip = set(self.ranks)
        return [
            Entry(self.closed_up(r["rank"]), r["user_id"], r["name"], r["score"])
            for r in rows
            if r["rank"] not in skip
        ]


class Archives:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._database = database
        self._clock = clock
        self._closed: set[tuple[str, str]] = set()
        self._open_until: dict[tuple[str, str], float] = {}
        # Per complete archive: the stored rank of each user looked up as hidden (None: not
        # in it). Users un-hidden since stay here harmlessly: only the hidden now are used.
        self._ranks: dict[tuple[str, str], dict[str, int | None]] = {}

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
        """Visible ranks ``offset + 1 .. offset + limit`` and the number of visible entries."""
        key = (board_id, period)
        async with self._connection() as conn:
            hidden = await self._hidden(conn, key)
            entries = await conn.fetchval(
                "SELECT entries FROM board_periods_closed WHERE board_id = $1 AND period = $2",
                board_id,
                period,
            )
            first, last = hidden.original(offset + 1), hidden.original(offset + limit)
            rows = await conn.fetch(_RANGE, board_id, period, first, last) if limit > 0 else []
        return hidden.visible(rows), max(0, (entries or 0) - len(hidden.ranks))

    async def rank(
        self, board_id: str, period: str, user_id: str, around: int
    ) -> tuple[Entry, list[Entry]] | None:
        key = (board_id, period)
        async with self._connection() as conn:
            hidden = await self._hidden(conn, key)
            if user_id in hidden.users:
                return None
            original = await conn.fetchval(
                "SELECT rank FROM board_archives"
                " WHERE board_id = $1 AND period = $2 AND user_id = $3",
                board_id,
                period,
                user_id,
            )
            if original is None:
                return None
            rank = hidden.closed_up(original)
            first = hidden.original(max(1, rank - around))
            last = hidden.original(rank + around)
            rows = await conn.fetch(_RANGE, board_id, period, first, last)
        entries = hidden.visible(rows)
        own = next(e for e in entries if e.user_id == user_id)
        return own, [e for e in entries if e.user_id != user_id]

    async def corrections(self, board_id: str, period: str) -> list[dict[str, object]]:
        """What revocations removed from the period's archived scores (archive_corrections),
        oldest first; a quarantined user's are left out, as the user is."""
        rows = await self._fetch(
            "SELECT c.user_id, c.points, c.revocation_id, c.created_at"
            " FROM archive_corrections AS c LEFT JOIN users AS u USING (user_id)"
            " WHERE c.board_id = $1 AND c.period = $2 AND NOT coalesce(u.quarantined, false)"
            " ORDER BY c.created_at, c.revocation_id",
            board_id,
            period,
        )
        return [
            {
                "user_id": r["user_id"],
                "points": r["points"],
                "revocation_id": r["revocation_id"],
                "at": rfc3339((r["created_at"] - _EPOCH) // timedelta(milliseconds=1)),
            }
            for r in rows
        ]

    async def _hidden(self, conn: asyncpg.Connection, key: tuple[str, str]) -> Hidden:
        """The archive's entries of the users banned or quarantined now.

        The hidden users are read on every call (a partial index each, so as many rows as
        such users); where each one stands in a complete archive, which never changes, is
        remembered, so the archive is searched only for users hidden since the last call.
        """
        users = {r["user_id"] for r in await conn.fetch(_HIDDEN_USERS)}
        cacheable = key in self._closed  # only a complete archive stays as it is
        known = self._ranks.get(key, {}) if cacheable else {}
        missing = [u for u in users if u not in known]
        if missing:
            found = await conn.fetch(
                "SELECT user_id, rank FROM board_archives"
                " WHERE board_id = $1 AND period = $2 AND user_id = ANY($3::text[])",
                *key,
                missing,
            )
            ranks = {r["user_id"]: int(r["rank"]) for r in found}
            known = known | {u: ranks.get(u) for u in missing}
            if cacheable:
                if len(self._ranks) >= MAX_CACHED:
                    self._ranks.clear()
                self._ranks[key] = known
        ranked = sorted(r for u in users if (r := known[u]) is not None)
        return Hidden(frozenset(users), ranked)

    def _connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """One pooled connection for several queries; any failure is ArchiveUnavailable."""
        return self._database.connection()

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        return await self._database.fetch(query, *args)

    async def _fetchval(self, query: str, *args: object) -> int | None:
        """The first column of the first row: every such query here reads an integer."""
        rows = await self._fetch(query, *args)
        return int(rows[0][0]) if rows and rows[0][0] is not None else None
