"""Trimming and lag gauges: now and then, drop what is persisted from the stream (keeping the
gateways' tail), save that position in PostgreSQL, and publish how far behind the persister is.

The trim never removes an unpersisted entry: every entry below the first unpersisted id (the
oldest pending one, else the first never delivered) is committed and acknowledged. With a tail,
it also keeps the newest ``persister_stream_tail`` entries; finding where the tail starts is
the ``trim`` script's job, which reads a bounded number of entries per call, so a long stream
never makes one call expensive; a backlog is trimmed over several calls instead.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from services.persister import metrics
from services.persister.batch import stream_id_key, trim_point
from services.persister.errors import PG_ERRORS
from services.persister.member import Member
from services.persister.refusalcounts import copy_quietly
from shared.redisconn import lua, text

log = logging.getLogger(__name__)

READ_BOUND = 256  # entries one trim call may read (twice at most)
ROUNDS = 8  # trim calls per pass before the loop gets its turn back
_TRIM = lua("services.persister", "trim")


class Trimmer:
    def __init__(self, member: Member, read_bound: int = READ_BOUND) -> None:
        self.member = member
        self.tail = member.settings.persister_stream_tail
        self.interval = member.settings.persister_trim_interval_ms / 1000
        self.read_bound = read_bound
        self._script = member.redis.register_script(_TRIM)
        self._next = 0.0

    @property
    def due(self) -> bool:
        return self.member.clock.monotonic() >= self._next

    async def trim(self) -> bool:
        """One pass: trim, checkpoint, publish the lag. False when the group or the stream is
        missing (the caller recreates it)."""
        self._next = self.member.clock.monotonic() + self.interval
        async with self.member.redis.pipeline(transaction=True) as pipe:
            # One snapshot: every entry up to last-delivered is either acknowledged or pending.
            pipe.xinfo_groups(self.member.stream)
            pipe.xpending(self.member.stream, self.member.group)
            try:
                groups, pending = await pipe.execute()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                    raise
                return False
        group = next(g for g in groups if text(g["name"]) == self.member.group)
        count = int(pending["pending"])
        pending_min = text(pending["min"]) if count else None
        last = text(group["last-delivered-id"])
        safe, _ = trim_point(pending_min, last, None)
        if await self._trim_below(safe, group.get("lag")):
            # A backlog is left: the next pass trims again.
            self._next = self.member.clock.monotonic()
        await self._publish_lag(count, pending_min, last, group.get("lag"))
        try:
            await self.member.store.save_checkpoint(self.member.stream, self.member.group, safe)
        except PG_ERRORS as exc:
            log.debug("checkpoint not saved: %s", exc)
        member = self.member
        await copy_quietly(member.redis, member.store.pool, member.keys, member.clock.time())
        return True

    async def _trim_below(self, safe: str, lag: object) -> bool:
        """Trim what lies below ``safe`` and outside the tail; True if a backlog is left."""
        # Redis 7 counts the entries never delivered to the group (``lag``, None when it
        # cannot tell). They are the newest entries and all lie at or above ``safe``: when
        # there are at least ``tail`` of them, the tail is unpersisted entries only, and
        # trimming below ``safe`` is the exact rule, in one call that reads nothing. This is
        # the catching-up case, where the bounded script would need many calls per pass.
        if not self.tail or (isinstance(lag, int) and lag >= self.tail):
            removed = await self.member.redis.xtrim(
                self.member.stream, minid=safe, approximate=False
            )
            metrics.TRIMMED.inc(int(removed))
            return False
        for _ in range(ROUNDS):
            reply: Any = await self._script(
                keys=[self.member.stream], args=[safe, self.tail, self.read_bound]
            )
            removed, more = (int(n) for n in reply)
            metrics.TRIMMED.inc(removed)
            if not more:
                return False
        return True

    async def _publish_lag(
        self, pending: int, pending_min: str | None, last: str, lag: object
    ) -> None:
        metrics.PENDING.set(pending)
        metrics.UNDELIVERED.set(int(lag) if isinstance(lag, int | bytes | str) else -1)
        oldest = pending_min
        if oldest is None:
            first_new: Any = await self.member.redis.xrange(
                self.member.stream, f"({last}", "+", count=1
            )
            oldest = text(first_new[0][0]) if first_new else None
        age = 0.0
        if oldest is not None:
            age = max(0.0, self.member.clock.time() - stream_id_key(oldest)[0] / 1000)
        metrics.OLDEST_AGE.set(age)
