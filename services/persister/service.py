"""The persister's lifecycle, the same shape as every service's ``running()``: it owns the
Redis and PostgreSQL connections, the persist loop and the health server, and shuts them
down in order within ``persister_shutdown_seconds``.

``ended`` is set when the persist loop stops by itself (it only does so by crashing), so the
process exits instead of serving a health endpoint that says "stopped" until killed;
``exit_code`` says how the shutdown went (0, or 1 after a crash or a missed deadline).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette

from services.persister.flags import FlagJob, moderator_quarantine
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from services.persister.worker import Persister
from shared.boards import Slots
from shared.clock import Clock
from shared.health import Health, serving
from shared.lifecycle import freeze_heap, stop_tasks
from shared.moderator import Moderator
from shared.redisconn import connect

log = logging.getLogger("services.persister")


class Service:
    def __init__(self, settings: PersisterSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock
        self.ended = asyncio.Event()
        self.exit_code = 0
        self.persister: Persister | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Persist until the block exits, then stop; yields the health server's base URL."""
        s = self.settings
        # The socket timeout must outlast a blocking XREADGROUP.
        timeout = max(s.persister_redis_timeout_seconds, s.persister_block_ms / 1000 + 2)
        redis = connect(s.redis_url, timeout=timeout, max_connections=8)
        try:
            store = await EventStore.open(s.database_url, s.persister_pg_timeout_seconds)
            try:
                self.persister = persister = Persister(s, redis, store, self.clock)
                # Parsing makes many short-lived objects, so full collections are frequent:
                # they should not walk the startup heap, which lives as long as the process.
                freeze_heap()
                worker = asyncio.create_task(persister.run(), name="persister")
                worker.add_done_callback(lambda _: self.ended.set())
                jobs = []
                if s.flag_interval_seconds:
                    flags = self.flag_job(persister).run(persister.stopping)
                    jobs.append(asyncio.create_task(flags, name="flags"))
                health = Health(ready=persister.readiness, alive=lambda: not worker.done())
                app = Starlette(routes=health.routes())
                async with serving(app, s.persister_metrics_host, s.persister_metrics_port) as port:
                    log.info(
                        "persisting %s as %s/%s; health on :%d",
                        persister.stream,
                        persister.group,
                        persister.consumer,
                        port,
                    )
                    try:
                        yield f"http://{s.persister_metrics_host}:{port}"
                    finally:
                        # Still answering /healthz while the batch in hand is finished.
                        await self._stop(persister, worker)
                        await stop_tasks(jobs, 1.0, log)
            finally:
                await store.close()
        finally:
            await redis.aclose()

    def flag_job(self, persister: Persister) -> FlagJob:
        """The anomaly flags (``services.persister.flags``), quarantining through the same
        script as the score API when ``AUTO_QUARANTINE`` is on."""
        s, clock = self.settings, persister.clock
        moderator = Moderator(persister.redis, persister.keys, clock)
        slots = Slots(persister.boards, s.board_retention_periods)
        quarantine = moderator_quarantine(moderator, slots, clock)
        return FlagJob.from_settings(s, persister.store.pool, clock, quarantine)

    async def _stop(self, persister: Persister, worker: asyncio.Task[None]) -> None:
        if not worker.done():
            log.info("stopping: finishing the batch in hand")
            persister.stop()
            try:
                await asyncio.wait_for(worker, self.settings.persister_shutdown_seconds)
            except TimeoutError:
                # Cancelled mid-batch: nothing was acknowledged, so it will be redelivered.
                log.error("shutdown deadline passed; the batch in hand will be redelivered")
                self.exit_code = 1
                return
        if worker.cancelled():
            self.exit_code = 1
        elif (error := worker.exception()) is not None:
            # The loop only ends on stop(): anything else is a crash.
            log.error("the persist loop crashed", exc_info=error)
            self.exit_code = 1


def running(
    settings: PersisterSettings, clock: Clock | None = None
) -> AbstractAsyncContextManager[str]:
    """Every service's shape, ``running(settings)``; ``python -m services.persister`` keeps
    the ``Service`` itself, to exit when the loop ends and to report the exit code."""
    return Service(settings, clock).running()
