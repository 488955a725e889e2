"""Dead letters: which refused entries give up (delivered ``persister_max_attempts`` times, or
deleted from the stream), and moving them to the dead-letter stream with why and when.

A refused entry that has attempts left stays pending, to be reclaimed and retried after
``persister_claim_idle_ms``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from services.persister import metrics
from services.persister.batch import Refused, StreamEntry
from services.persister.member import Member
from shared.clock import ms

log = logging.getLogger(__name__)

MAXLEN = 100_000  # the dead-letter stream keeps the newest this many


class DeadLetters:
    def __init__(self, member: Member) -> None:
        self.member = member
        self.max_attempts = member.settings.persister_max_attempts

    async def refuse(self, entries: Sequence[StreamEntry], refused: Sequence[Refused]) -> None:
        """Dead-letter the refused entries out of attempts; leave the rest pending."""
        by_id = {e.stream_id: e for e in entries}
        async with self.member.redis.pipeline(transaction=False) as pipe:
            for r in refused:
                pipe.xpending_range(
                    self.member.keys.stream, self.member.group, r.stream_id, r.stream_id, 1
                )
            details = await pipe.execute()
        doomed: list[tuple[StreamEntry, str]] = []
        for r, info in zip(refused, details, strict=True):
            attempts = int(info[0]["times_delivered"]) if info else 0
            entry = by_id[r.stream_id]
            if entry.fields is None or attempts >= self.max_attempts:
                doomed.append((entry, f"{r.error} (after {attempts} deliveries)"))
            else:
                log.warning("entry %s refused (attempt %d): %s", r.stream_id, attempts, r.error)
        await self.bury(doomed)

    async def bury(self, doomed: Sequence[tuple[StreamEntry, str]]) -> None:
        """Move ``(entry, why)`` pairs to the dead-letter stream and acknowledge them."""
        if not doomed:
            return
        at = str(ms(self.member.clock))
        # XADD and XACK together (one hash slot, one MULTI): an entry is never in both places
        # nor in neither.
        async with self.member.redis.pipeline(transaction=True) as pipe:
            for entry, error in doomed:
                fields: dict[Any, Any] = dict(entry.fields or {})
                fields.update(
                    {
                        "dead_error": error,
                        "dead_stream_id": entry.stream_id,
                        "dead_consumer": self.member.consumer,
                        "dead_at_ms": at,
                    }
                )
                pipe.xadd(self.member.keys.dead_letters, fields, maxlen=MAXLEN)
                pipe.xack(self.member.keys.stream, self.member.group, entry.stream_id)
            await pipe.execute()
        for entry, error in doomed:
            reason = "deleted" if entry.fields is None else "refused"
            metrics.DEAD_LETTERS.labels(reason).inc()
            log.error("dead-lettered %s: %s", entry.stream_id, error)
