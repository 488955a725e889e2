"""The score API's PostgreSQL pool for the admin endpoints, created on first use: while
PostgreSQL is unreachable those answer 503 and nothing else is affected."""

from __future__ import annotations

import asyncpg


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
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                raise DatabaseUnavailable(str(exc)) from exc
        return self._pool

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
