"""The persist loop: read the score stream as a consumer group, commit, then acknowledge.

Delivery is at least once (an entry is acknowledged only after its batch committed) and the
database ignores an ``event_id`` it already has, so the effect is exactly once. Each pass:

1. fetch in order: own pending entries, then idle ones reclaimed, then new ones (``fetch``);
2. one PostgreSQL transaction for the batch, retried with capped backoff while the database is
   away; XACK after the commit; refused entries stay pending until their delivery count
   reaches ``persister_max_attempts``, then go to the dead-letter stream (``deadletters``).
   While the batch commits, the next new entries are read and parsed (``readahead``);
3. now and then: trim the stream, checkpoint, and update the lag gauges (``trim``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from redis.exceptions import RedisError, ResponseError

from services.persister import metrics
from services.persister.archive import archive_due, stream_id_ms
from services.persister.backup import BackupGauge
from services.persister.batch import Batch, StreamEntry, parse
from services.persister.deadletters import DeadLetters
from services.persister.errors import PG_ERRORS
from services.persister.fetch import Fetcher
from services.persister.member import Member
from services.persister.readahead import ReadAhead
from services.persister.readiness import readiness
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore, Written, is_data_error
from services.persister.trim import Trimmer
from shared.clock import Clock, clock_for
from shared.keys import BoardKeys
from shared.lifecycle import Backoff
from shared.redisconn import RedisClient, now_ms, text

log = logging.getLogger(__name__)


class Persister:
    def __init__(
        self,
        settings: PersisterSettings,
        redis: RedisClient,
        store: EventStore,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.store = store
        self.clock = clock or clock_for(settings.clock_offset_seconds)
        self.keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        self.stream = self.keys.stream
        self.group = settings.persister_group
        self.consumer = settings.persister_consumer
        self.stopping = asyncio.Event()
        self.member = Member(settings, redis, store, self.clock)
        self.dead_letters = DeadLetters(self.member)
        self.fetcher = Fetcher(self.member, self.dead_letters)
        self.ahead = ReadAhead(self.fetcher)
        self.trimmer = Trimmer(self.member)
        self.backups = BackupGauge(store.pool, self.clock)
        self.boards = settings.board_family()
        self._group_ready = False

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
                self.fetcher.reread_own()  # after reconnecting, first finish what we hold
                self.ahead.drop()  # pending: re-read with the rest
                if "NOGROUP" in str(exc):
                    self._group_ready = False
                delay = backoff.next()
                log.warning("redis: %s: %s; retrying in %.2fs", type(exc).__name__, exc, delay)
                await self._pause(delay)
        ahead = self.ahead.take()
        if ahead is not None:
            # Read ahead just before stop(): those entries are in hand too, so finish them.
            entries, batch = ahead
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
        ahead = self.ahead.take()
        if ahead is not None:
            entries, batch = ahead
        else:
            try:
                entries = await self.fetcher.fetch()
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("consumer group %s vanished (Redis lost data?)", self.group)
                await self.ensure_group()
                entries = await self.fetcher.fetch()
            batch = parse(entries)
        if entries:
            read_next = not self.stopping.is_set() and self.fetcher.only_new_next
            await self.ahead.store(self._store, entries, batch, read_next=read_next)
        if self.trimmer.due:
            await self.trim()
        return len(entries)

    async def ensure_group(self) -> None:
        """Create the consumer group if it is missing, at the best known position."""
        await self.fetcher.ensure_group()
        self._group_ready = True
        self.ahead.drop()  # read from the group as it was; the pending list says what is left

    async def trim(self) -> None:
        """Trim what is persisted (keeping the tail), checkpoint it, and publish the lag;
        then archive the periods that the checkpoint has passed (``archive``)."""
        if not await self.trimmer.trim():
            self._group_ready = False  # recreated on the next pass
            return
        await self.backups.publish()
        if self.boards.periodic:
            await self.archive()

    async def archive(self) -> None:
        try:
            now = await now_ms(self.redis)
            groups = await self.redis.xinfo_groups(self.stream)
            ours = next((g for g in groups if text(g["name"]) == self.group), None)
            if ours is not None and ours["pending"] == 0 and ours.get("lag") == 0:
                # Nothing unpersisted and nothing undelivered as of Redis's now: every event
                # of a period that ended by then is in PostgreSQL.
                persisted_ms: int | None = now
            else:
                below = await self.store.checkpoint(self.stream, self.group)
                persisted_ms = None if below is None else stream_id_ms(below)
            retention = self.settings.board_retention_periods
            await archive_due(self.store.pool, self.boards, now, retention, persisted_ms)
        except (RedisError, OSError, *PG_ERRORS) as exc:
            # The archive transaction rolled back whole: the next pass writes it.
            log.warning("archiving failed, retrying on the next pass: %r", exc)

    async def readiness(self) -> dict[str, object]:
        """Reasons the persister cannot do its job now; empty when it can."""
        return await readiness(self.redis, self.store)

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
                    extra = {
                        "event_id": row.event_id,
                        "request_id": row.request_id,
                        "user_id": row.user_id,
                        "stream_id": row.stream_id,
                    }
                    log.debug("stored %s", row.type, extra=extra)
        if batch.rows:
            summary = {
                "entries": len(entries),
                "new": written.inserted,
                "duplicates": written.duplicates,
            }
            log.info("batch stored", extra=summary)
        metrics.PERSISTED.inc(written.inserted)
        metrics.DUPLICATES.inc(written.duplicates + len(batch.repeats))
        if refused:
            await self.dead_letters.refuse(entries, refused)
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

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
