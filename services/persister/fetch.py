"""Fetch order: what the persister reads next from its consumer group, and where a new group
starts.

Own pending entries come first (a previous life of this consumer left them unacknowledged),
then entries idle too long at any consumer (XAUTOCLAIM, at most one sweep per rest period),
then new ones (XREADGROUP ``>``).
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from services.persister import metrics
from services.persister.batch import StreamEntry, claim_reply, previous_stream_id
from services.persister.deadletters import DeadLetters
from services.persister.errors import PG_ERRORS
from services.persister.member import Member
from shared.redisconn import text

log = logging.getLogger(__name__)


class Fetcher:
    def __init__(self, member: Member, dead_letters: DeadLetters) -> None:
        self.member = member
        self.dead_letters = dead_letters
        self.own_done = False  # own pending entries re-read since (re)connecting
        self._own_cursor = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    def reread_own(self) -> None:
        """Start again from our own pending entries (after reconnecting: finish what we hold)."""
        self.own_done = False
        self._own_cursor = "0"

    @property
    def only_new_next(self) -> bool:
        """The next fetch reads new entries: no own pending to re-read, no reclaim due."""
        return self.own_done and self.member.clock.monotonic() < self._next_claim

    async def fetch(self) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        if not self.own_done:
            entries = await self.read(self._own_cursor)
            if entries:  # refused ones stay pending: move past them, do not loop on them
                self._own_cursor = entries[-1].stream_id
            self.own_done = not entries
        if not entries and self.member.clock.monotonic() >= self._next_claim:
            entries = await self._claim()
        if not entries:
            entries = await self.read(">")
        return entries

    async def read(self, start: str, block: bool = True) -> list[StreamEntry]:
        wait = self.member.settings.persister_block_ms if start == ">" and block else None
        reply: Any = await self.member.redis.xreadgroup(
            self.member.group,
            self.member.consumer,
            {self.member.stream: start},
            count=self.member.settings.persister_batch_size,
            block=wait,
        )
        if not reply:
            return []
        _, rows = reply[0]
        # A deleted entry comes back with no fields.
        return [StreamEntry(text(sid), fields or None) for sid, fields in rows]

    async def _claim(self) -> list[StreamEntry]:
        """Take over entries idle longer than ``persister_claim_idle_ms`` (dead consumers).

        XAUTOCLAIM replies ``[cursor, entries]`` on Redis 6.2 and ``[cursor, entries, deleted]``
        on Redis 7+/Valkey (see ``claim_reply``).
        """
        reply: list[Any] = await self.member.redis.xautoclaim(
            self.member.stream,
            self.member.group,
            self.member.consumer,
            self.member.settings.persister_claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.member.settings.persister_batch_size,
        )
        cursor, rows, deleted = claim_reply(reply)
        self._claim_cursor = cursor
        if cursor == "0-0":  # a full sweep done: rest a little before the next one
            idle = self.member.settings.persister_claim_idle_ms / 1000
            self._next_claim = self.member.clock.monotonic() + min(max(idle / 4, 0.05), 5.0)
        entries = [StreamEntry(text(sid), fields or None) for sid, fields in rows if sid]
        if len(entries) < len(rows):
            log.error("xautoclaim returned %d deleted entries", len(rows) - len(entries))
        if deleted:
            # Redis already dropped them from the pending list; record that they are gone.
            gone = [(StreamEntry(d, None), "deleted before it was persisted") for d in deleted]
            await self.dead_letters.bury(gone)
        if entries:
            metrics.RECLAIMED.inc(len(entries))
            log.info("reclaimed %d idle entries", len(entries))
        return entries

    async def ensure_group(self) -> None:
        """Create the consumer group if it is missing, at the best known position."""
        try:
            groups = await self.member.redis.xinfo_groups(self.member.stream)
        except ResponseError:
            groups = []  # no stream yet
        if not any(text(g["name"]) == self.member.group for g in groups):
            start = await self._start_id()
            try:
                await self.member.redis.xgroup_create(
                    self.member.stream, self.member.group, id=start, mkstream=True
                )
                metrics.GROUP_CREATED.inc()
                log.warning(
                    "created consumer group %s on %s at %s",
                    self.member.group,
                    self.member.stream,
                    start,
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.reread_own()

    async def _start_id(self) -> str:
        """Where a new group starts: just below PostgreSQL's checkpoint when the stream provably
        is the one the checkpoint describes, else the stream's beginning ("0").

        Proof: the newest entry below the checkpoint is an event PostgreSQL holds. Otherwise
        (the stream was lost and rebuilt, or the clock moved) every entry is read again; the
        database ignores those it already has, so this costs time, never correctness.
        """
        try:
            checkpoint = await self.member.store.checkpoint(self.member.stream, self.member.group)
            if checkpoint is None:
                return "0"
            below: Any = await self.member.redis.xrevrange(
                self.member.stream, f"({checkpoint}", "-", count=1
            )
            if below:
                event_id = below[0][1].get(b"event_id")
                if event_id and await self.member.store.has_event(event_id.decode()):
                    return previous_stream_id(checkpoint)
        except PG_ERRORS as exc:
            log.warning("no checkpoint from postgres (%s); the group starts at 0", exc)
        return "0"
