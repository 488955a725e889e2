"""The persist loop: read the score stream as a consumer group, commit, then acknowledge.

Delivery is at least once (an entry is acknowledged only after its batch committed) and the
database ignores an ``event_id`` it already has, so the effect is exactly once. Each pass:

1. own pending entries first (a previous life of this consumer left them unacknowledged),
   then entries idle too long at any consumer (XAUTOCLAIM), then new ones (XREADGROUP ``>``);
2. one PostgreSQL transaction for the batch, retried with capped backoff while the database is
   away; XACK after the commit; refused entries stay pending until their delivery count
   reaches ``persister_max_attempts``, then go to the dead-letter stream. While the batch
   commits, the next new entries are read (without blocking) and parsed, so Redis, PostgreSQL
   and Python work overlap; that batch is the next pass's, and is acknowledged only after its
   own commit;
3. now and then: trim the stream below the oldest unpersisted entry (keeping a tail for the
   gateways), save that position in PostgreSQL, and update the lag gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import asyncpg
from redis.exceptions import RedisError, ResponseError

from services.persister import metrics
from services.persister.batch import (
    Batch,
    Refused,
    StreamEntry,
    claim_reply,
    next_stream_id,
    parse,
    previous_stream_id,
    stream_id_key,
    trim_point,
)
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore, Written, is_data_error
from shared.keys import BoardKeys
from shared.redisconn import RedisClient

log = logging.getLogger(__name__)

# What a lost or refusing PostgreSQL raises; data errors among them are handled per row.
# InternalClientError: asyncpg's connection state machine breaks when the server goes away
# mid-operation (seen when PostgreSQL shuts down under load); a fresh connection recovers.
PG_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)
DEAD_LETTER_MAXLEN = 100_000
MAX_TRIM_READ = 10_000  # entries trimmed per pass at most
# The id of the n-th oldest entry (the last of ``XRANGE - + COUNT n``), or nil when there is
# none. In a script so that only one id, not n whole entries, crosses the network and is
# decoded: reading them was a tenth of the persister's CPU while it catches up.
_NTH_ID = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
local last = entries[#entries]
if last then return last[1] end
return false
"""


class Backoff:
    """Capped exponential delays with jitter: 50 ms, 100 ms, ... up to ``cap`` seconds."""

    def __init__(self, cap: float, first: float = 0.05) -> None:
        self.cap = cap
        self.first = first
        self.failures = 0

    def next(self) -> float:
        delay: float = min(self.cap, self.first * 2.0**self.failures)
        self.failures = min(self.failures + 1, 30)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


class Persister:
    def __init__(self, settings: PersisterSettings, redis: RedisClient, store: EventStore) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        self.stream = self.keys.stream
        self.group = settings.persister_group
        self.consumer = settings.persister_consumer
        self.stopping = asyncio.Event()
        self._nth_id = redis.register_script(_NTH_ID)
        self._group_ready = False
        self._own_done = False  # own pending entries re-read since (re)connecting
        self._own_cursor = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._next_trim = 0.0
        # Entries read ahead during the last pass (delivered to us, pending, not yet stored).
        self._ahead: tuple[list[StreamEntry], Batch] | None = None

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Persist until ``stop()``; the current batch is always finished first."""
        backoff = Backoff(self.settings.persister_retry_max_seconds)
        while not self.stopping.is_set():
            try:
                await self.step()
                backoff.reset()
            except RedisError as exc:
                metrics.RETRIES.labels("redis").inc()
                self._reread_own()  # after reconnecting, first finish what we hold
                self._ahead = None  # pending: re-read with the rest
                if "NOGROUP" in str(exc):
                    self._group_ready = False
                delay = backoff.next()
                log.warning("redis: %s: %s; retrying in %.2fs", type(exc).__name__, exc, delay)
                await self._pause(delay)
        if self._ahead is not None:
            # Read ahead just before stop(): those entries are in hand too, so finish them.
            entries, batch = self._ahead
            self._ahead = None
            try:
                await self._store(entries, batch)
            except RedisError as exc:
                log.warning(
                    "redis: %s: %s; %d entries stay pending", type(exc).__name__, exc, len(entries)
                )

    async def step(self) -> int:
        """One pass; returns how many entries it processed."""
        if not self._group_ready:
            await self.ensure_group()
        batch: Batch | None = None
        if self._ahead is not None:
            (entries, batch), self._ahead = self._ahead, None
        else:
            try:
                entries = await self._fetch()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group %s vanished (Redis lost data?)", self.group)
                await self.ensure_group()
                entries = await self._fetch()
        if entries:
            await self._store_reading_ahead(entries, batch or parse(entries))
        if time.monotonic() >= self._next_trim:
            self._next_trim = time.monotonic() + self.settings.persister_trim_interval_ms / 1000
            await self.trim()
        return len(entries)

    async def _store_reading_ahead(self, entries: list[StreamEntry], batch: Batch) -> None:
        """Store a batch while reading (and parsing) the next one, when that is what the next
        pass would read anyway: new entries, with no own pending entries to re-read and no
        reclaim due."""
        if self.stopping.is_set() or not self._own_done or time.monotonic() >= self._next_claim:
            await self._store(entries, batch)
            return
        ahead = asyncio.create_task(self._read_ahead())
        try:
            await self._store(entries, batch)
        except BaseException:
            # Whatever it read stays pending: re-read after a Redis error (``_reread_own``),
            # redelivered after a crash or a cancelled shutdown.
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead
            raise
        self._ahead = await ahead

    async def _read_ahead(self) -> tuple[list[StreamEntry], Batch] | None:
        entries = await self._read(">", block=False)
        return (entries, parse(entries)) if entries else None

    async def _fetch(self) -> list[StreamEntry]:
        entries: list[StreamEntry] = []
        if not self._own_done:
            entries = await self._read(self._own_cursor)
            if entries:  # refused ones stay pending: move past them, do not loop on them
                self._own_cursor = entries[-1].stream_id
            self._own_done = not entries
        if not entries and time.monotonic() >= self._next_claim:
            entries = await self._claim()
        if not entries:
            entries = await self._read(">")
        return entries

    async def ensure_group(self) -> None:
        """Create the consumer group if it is missing, at the best known position."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            groups = []  # no stream yet
        if not any(_text(g["name"]) == self.group for g in groups):
            start = await self._start_id()
            try:
                await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
                metrics.GROUP_CREATED.inc()
                log.warning("created consumer group %s on %s at %s", self.group, self.stream, start)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True
        self._ahead = None  # read from the group as it was; the pending list says what is left
        self._reread_own()

    def _reread_own(self) -> None:
        self._own_done = False
        self._own_cursor = "0"

    async def _start_id(self) -> str:
        """Where a new group starts: just below PostgreSQL's checkpoint when the stream provably
        is the one the checkpoint describes, else the stream's beginning ("0").

        Proof: the newest entry below the checkpoint is an event PostgreSQL holds. Otherwise
        (the stream was lost and rebuilt, or the clock moved) every entry is read again; the
        database ignores those it already has, so this costs time, never correctness.
        """
        try:
            checkpoint = await self.store.checkpoint(self.stream, self.group)
            if checkpoint is None:
                return "0"
            below: Any = await self.redis.xrevrange(self.stream, f"({checkpoint}", "-", count=1)
            if below:
                event_id = below[0][1].get(b"event_id")
                if event_id and await self.store.has_event(event_id.decode()):
                    return previous_stream_id(checkpoint)
        except PG_ERRORS as exc:
            log.warning("no checkpoint from postgres (%s); the group starts at 0", exc)
        return "0"

    async def _read(self, start: str, block: bool = True) -> list[StreamEntry]:
        wait = self.settings.persister_block_ms if start == ">" and block else None
        reply: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self.settings.persister_batch_size,
            block=wait,
        )
        if not reply:
            return []
        _, rows = reply[0]
        # A deleted entry comes back with no fields.
        return [StreamEntry(_text(sid), fields or None) for sid, fields in rows]

    async def _claim(self) -> list[StreamEntry]:
        """Take over entries idle longer than ``persister_claim_idle_ms`` (dead consumers).

        XAUTOCLAIM replies ``[cursor, entries]`` on Redis 6.2 and ``[cursor, entries, deleted]``
        on Redis 7+/Valkey (see ``claim_reply``).
        """
        reply: list[Any] = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.settings.persister_claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.settings.persister_batch_size,
        )
        cursor, rows, deleted = claim_reply(reply)
        self._claim_cursor = cursor
        if cursor == "0-0":  # a full sweep done: rest a little before the next one
            idle = self.settings.persister_claim_idle_ms / 1000
            self._next_claim = time.monotonic() + min(max(idle / 4, 0.05), 5.0)
        entries = [StreamEntry(_text(sid), fields or None) for sid, fields in rows if sid]
        if len(entries) < len(rows):
            log.error("xautoclaim returned %d deleted entries", len(rows) - len(entries))
        if deleted:
            # Redis already dropped them from the pending list; record that they are gone.
            gone = [(StreamEntry(d, None), "deleted before it was persisted") for d in deleted]
            await self._dead_letter(gone)
        if entries:
            metrics.RECLAIMED.inc(len(entries))
            log.info("reclaimed %d idle entries", len(entries))
        return entries

    async def process(self, entries: Sequence[StreamEntry]) -> Written:
        """Store one batch, acknowledge what is stored, dead-letter what keeps failing."""
        return await self._store(entries, parse(entries))

    async def _store(self, entries: Sequence[StreamEntry], batch: Batch) -> Written:
        metrics.BATCH_SIZE.observe(len(entries))
        written = await self._write(batch)
        refused = batch.refused + written.refused
        failed = {r.stream_id for r in refused}
        done = [sid for sid in batch.stored_ids if sid not in failed]
        if done:
            await self.redis.xack(self.stream, self.group, *done)
        if log.isEnabledFor(logging.DEBUG):
            # One line per stored event, so a request can be followed from the API to here.
            for row in batch.rows:
                if row.stream_id not in failed:
                    log.debug(
                        "stored %s",
                        row.type,
                        extra={
                            "event_id": row.event_id,
                            "request_id": row.request_id,
                            "user_id": row.user_id,
                            "stream_id": row.stream_id,
                        },
                    )
        if batch.rows:
            log.info(
                "batch stored",
                extra={
                    "entries": len(entries),
                    "new": written.inserted,
                    "duplicates": written.duplicates,
                },
            )
        metrics.PERSISTED.inc(written.inserted)
        metrics.DUPLICATES.inc(written.duplicates + len(batch.repeats))
        if refused:
            await self._refuse(entries, refused)
        return written

    async def _write(self, batch: Batch) -> Written:
        backoff = Backoff(self.settings.persister_retry_max_seconds)
        while True:
            started = time.perf_counter()
            try:
                written = await self.store.write(batch.rows)
            except PG_ERRORS as exc:
                if is_data_error(exc):
                    raise  # store.write handles these itself; anything left is a bug
                metrics.RETRIES.labels("postgres").inc()
                delay = backoff.next()
                log.warning("postgres: %s: %s; retrying in %.2fs", type(exc).__name__, exc, delay)
                # Not interrupted by stop(): the batch in hand is finished, or the shutdown
                # deadline cancels it (then it stays pending and is redelivered).
                await asyncio.sleep(delay)
                continue
            if batch.rows:
                metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            return written

    async def _refuse(self, entries: Sequence[StreamEntry], refused: list[Refused]) -> None:
        """Dead-letter the refused entries delivered ``max_attempts`` times; leave the rest
        pending, to be reclaimed and retried after ``claim_idle_ms``."""
        by_id = {e.stream_id: e for e in entries}
        async with self.redis.pipeline(transaction=False) as pipe:
            for r in refused:
                pipe.xpending_range(self.stream, self.group, r.stream_id, r.stream_id, 1)
            details = await pipe.execute()
        doomed: list[tuple[StreamEntry, str]] = []
        for r, info in zip(refused, details, strict=True):
            attempts = int(info[0]["times_delivered"]) if info else 0
            entry = by_id[r.stream_id]
            if entry.fields is None or attempts >= self.settings.persister_max_attempts:
                doomed.append((entry, f"{r.error} (after {attempts} deliveries)"))
            else:
                log.warning("entry %s refused (attempt %d): %s", r.stream_id, attempts, r.error)
        await self._dead_letter(doomed)

    async def _dead_letter(self, doomed: Sequence[tuple[StreamEntry, str]]) -> None:
        if not doomed:
            return
        # XADD and XACK together (one hash slot, one MULTI): an entry is never in both places
        # nor in neither.
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry, error in doomed:
                fields: dict[Any, Any] = dict(entry.fields or {})
                fields.update(
                    {
                        "dead_error": error,
                        "dead_stream_id": entry.stream_id,
                        "dead_consumer": self.consumer,
                        "dead_at_ms": str(time.time_ns() // 1_000_000),
                    }
                )
                pipe.xadd(self.keys.dead_letters, fields, maxlen=DEAD_LETTER_MAXLEN)
                pipe.xack(self.stream, self.group, entry.stream_id)
            await pipe.execute()
        for entry, error in doomed:
            reason = "deleted" if entry.fields is None else "refused"
            metrics.DEAD_LETTERS.labels(reason).inc()
            log.error("dead-lettered %s: %s", entry.stream_id, error)

    async def trim(self) -> None:
        """Trim what is persisted (keeping the tail), checkpoint it, and publish the lag."""
        async with self.redis.pipeline(transaction=True) as pipe:
            # One snapshot: every entry up to last-delivered is either acknowledged or pending.
            pipe.xinfo_groups(self.stream)
            pipe.xpending(self.stream, self.group)
            pipe.xlen(self.stream)
            try:
                groups, pending, length = await pipe.execute()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) and "no such key" not in str(exc):
                    raise
                self._group_ready = False  # recreated on the next pass
                return
        group = next(g for g in groups if _text(g["name"]) == self.group)
        count = int(pending["pending"])
        pending_min = _text(pending["min"]) if count else None
        last = _text(group["last-delivered-id"])
        safe, minid = trim_point(pending_min, last, await self._tail_start(int(length)))
        if minid != "0-0":
            removed = await self.redis.xtrim(self.stream, minid=minid, approximate=False)
            metrics.TRIMMED.inc(int(removed))
        await self._publish_lag(count, pending_min, last, group.get("lag"))
        try:
            await self.store.save_checkpoint(self.stream, self.group, safe)
        except PG_ERRORS as exc:
            log.debug("checkpoint not saved: %s", exc)

    async def _tail_start(self, length: int) -> str | None:
        """The first id of the gateways' tail (None: no tail kept; "0-0": keep everything).

        Reads only the entries beyond the tail (what a trim would remove, about one interval's
        worth), not the tail itself.
        """
        tail = self.settings.persister_stream_tail
        if not tail:
            return None
        excess = min(length - tail, MAX_TRIM_READ)
        if excess <= 0:
            return "0-0"
        last: Any = await self._nth_id(keys=[self.stream], args=[excess])
        return next_stream_id(_text(last)) if last else "0-0"

    async def _publish_lag(
        self, pending: int, pending_min: str | None, last: str, lag: object
    ) -> None:
        metrics.PENDING.set(pending)
        metrics.UNDELIVERED.set(int(lag) if isinstance(lag, int | bytes | str) else -1)
        oldest = pending_min
        if oldest is None:
            first_new: Any = await self.redis.xrange(self.stream, f"({last}", "+", count=1)
            oldest = _text(first_new[0][0]) if first_new else None
        age = 0.0
        if oldest is not None:
            age = max(0.0, time.time() - stream_id_key(oldest)[0] / 1000)
        metrics.OLDEST_AGE.set(age)

    async def readiness(self) -> dict[str, str]:
        """Reasons the persister cannot do its job now; empty when it can."""

        async def check(name: str, probe: Awaitable[object]) -> tuple[str, str | None]:
            try:
                await asyncio.wait_for(probe, 2.0)
            except (RedisError, *PG_ERRORS) as exc:
                return name, type(exc).__name__
            return name, None

        results = await asyncio.gather(
            check("redis", self.redis.ping()), check("postgres", self.store.ping())
        )
        return {name: problem for name, problem in results if problem}

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
