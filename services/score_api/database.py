"""The score API's one PostgreSQL pool (archived periods, the admin endpoints), created on
first use: while PostgreSQL is unreachable those answer 503 and nothing else is affected.

``fetch`` and ``transaction`` raise ``DatabaseUnavailable`` for anything PostgreSQL or the
connection does wrong; the handlers map it to the 503 problem. An exception raised inside a
transaction by its caller (a problem, a Redis error) rolls it back and passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

# What "PostgreSQL is away or refusing" looks like from asyncpg (as the persister sorts it).
ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class DatabaseUnavailable(Exception):
    """PostgreSQL did not answer (HTTP 503)."""


class Database:
    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=0, max_size=4, timeout=self._timeout,
                    command_timeout=self._timeout * 6,
                )  # fmt: skip
            except ERRORS as exc:
                raise DatabaseUnavailable(str(exc)) from exc
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=self._timeout) as conn:
                return list(await conn.fetch(query, *args))
        except ERRORS as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """One pooled connection for several statements (no transaction of its own)."""
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except ERRORS as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction, committed when the block ends without error."""
        try:
            pool = await self.pool()
            async with pool.acquire(timeout=self._timeout) as conn, conn.transaction():
                yield conn
        except ERRORS as exc:
            raise DatabaseUnavailable(str(exc)) from exc
