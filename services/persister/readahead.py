"""Read-ahead: while one batch commits, read (without blocking) and parse the next, so Redis,
PostgreSQL and Python work overlap.

What is read ahead is delivered to this consumer and pending; it is the next pass's batch and
is acknowledged only after its own commit. Dropped (never stored) it simply stays pending: it
is re-read after a Redis error, or redelivered after a crash or a cancelled shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from services.persister.batch import Batch, StreamEntry, parse
from services.persister.fetch import Fetcher

Read = tuple[list[StreamEntry], Batch]


class ReadAhead:
    def __init__(self, fetcher: Fetcher) -> None:
        self.fetcher = fetcher
        self._ahead: Read | None = None

    def take(self) -> Read | None:
        """The batch read ahead during the last pass, if any (now the caller's)."""
        ahead, self._ahead = self._ahead, None
        return ahead

    def drop(self) -> None:
        """Forget it (it stays pending and is read again with the rest)."""
        self._ahead = None

    async def store(
        self,
        store: Callable[[list[StreamEntry], Batch], Awaitable[object]],
        entries: list[StreamEntry],
        batch: Batch,
        *,
        read_next: bool,
    ) -> None:
        """``store(entries, batch)``, reading the next new entries meanwhile if ``read_next``
        (only worth it when new entries are what the next pass reads anyway)."""
        if not read_next:
            await store(entries, batch)
            return
        ahead = asyncio.create_task(self._read())
        try:
            await store(entries, batch)
        except BaseException:
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead
            raise
        self._ahead = await ahead

    async def _read(self) -> Read | None:
        entries = await self.fetcher.read(">", block=False)
        return (entries, parse(entries)) if entries else None
