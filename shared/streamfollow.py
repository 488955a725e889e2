"""Follow the score stream from a position, forever: the loop the gateways and the API share.

Every replica reads with plain XREAD, not a consumer group: each must see every entry. The
follower owns the read, the reconnect and the backoff; a handler decides what a position is
(``start``), what the entries read mean (``entries``, also called with none when a block
timed out), how long a read may block, and what losing Redis means (``lost``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NoReturn, Protocol

from redis.exceptions import RedisError

from shared.lifecycle import Backoff
from shared.redisconn import RedisClient

Entry = tuple[bytes, dict[bytes, bytes]]
log = logging.getLogger(__name__)


class FollowHandler(Protocol):
    async def start(self) -> str:
        """Take a position: the ID after which the stream is read (after a reconnect too)."""
        ...

    async def entries(self, entries: list[Entry]) -> str | None:
        """Act on the entries read (maybe none); a returned ID replaces the position."""
        ...

    def block_ms(self) -> int:
        """How long the next read may wait for an entry."""
        ...

    def lost(self, exc: BaseException) -> None:
        """Redis failed (or the handler did): whatever depends on being in step stops."""
        ...


class StreamFollower:
    def __init__(
        self,
        redis: RedisClient,
        stream: str,
        handler: FollowHandler,
        *,
        batch: int,
        backoff_cap: float,
        name: str,
    ) -> None:
        # ``redis`` must be a client of its own whose socket timeout outlasts the longest block.
        self.redis = redis
        self.stream = stream
        self.handler = handler
        self.batch = batch
        self.backoff_cap = backoff_cap
        self.name = name

    async def run(self) -> NoReturn:
        """Take a position, follow; after any failure back off and start over."""
        backoff = Backoff(self.backoff_cap)
        while True:
            try:
                position = await self.handler.start()
                backoff.reset()
                while True:
                    reply: Any = await self.redis.xread(
                        {self.stream: position}, count=self.batch, block=self.handler.block_ms()
                    )
                    entries: list[Entry] = reply[0][1] if reply else []
                    if entries:
                        position = entries[-1][0].decode()
                    moved = await self.handler.entries(entries)
                    if moved is not None:
                        position = moved
            except (RedisError, OSError) as exc:
                self.handler.lost(exc)
                delay = backoff.next()
                log.warning("%s: redis unavailable (%s); retry in %.2fs", self.name, exc, delay)
            except Exception as exc:
                # A bug must not leave dependants believing they are in step: same as a loss,
                # at the longest delay.
                self.handler.lost(exc)
                delay = self.backoff_cap
                log.exception("%s: stream follower failed; retry in %.2fs", self.name, delay)
            await asyncio.sleep(delay)
