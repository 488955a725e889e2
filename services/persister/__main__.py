"""``python -m services.persister [run|migrate|rebuild [--force]|reconcile]`` (default: run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys

import uvloop

from services.persister import health
from services.persister.migrate import migrate
from services.persister.rebuild import RebuildRefused, rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from services.persister.worker import Persister
from shared import logs
from shared.redisconn import connect

log = logging.getLogger("services.persister")


async def run(settings: PersisterSettings) -> int:
    """Persist until SIGTERM/SIGINT; then finish the batch in hand within the deadline."""
    # The socket timeout must outlast a blocking XREADGROUP.
    timeout = max(settings.persister_redis_timeout_seconds, settings.persister_block_ms / 1000 + 2)
    redis = connect(settings.redis_url, timeout=timeout, max_connections=8)
    store = await EventStore.open(settings.database_url, settings.persister_pg_timeout_seconds)
    persister = Persister(settings, redis, store)
    # As in the API: the startup heap lives as long as the process, so full collections
    # (frequent here: parsing makes many short-lived objects) should not walk it.
    gc.collect()
    gc.freeze()
    worker = asyncio.create_task(persister.run(), name="persister")
    app = health.create_app(alive=lambda: not worker.done(), ready=persister.readiness)
    server, server_task = await health.start(
        app, settings.persister_metrics_host, settings.persister_metrics_port
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, persister.stop)
    log.info(
        "persisting %s as %s/%s; health on :%d",
        persister.stream,
        persister.group,
        persister.consumer,
        settings.persister_metrics_port,
    )
    code = 0
    try:
        stopping = asyncio.create_task(persister.stopping.wait())
        await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if worker.done():
            worker.result()  # the loop only ends on stop(): anything else is a crash
        else:
            log.info("stopping: finishing the batch in hand")
            try:
                await asyncio.wait_for(worker, settings.persister_shutdown_seconds)
            except TimeoutError:
                # Cancelled mid-batch: nothing was acknowledged, so it will be redelivered.
                log.error("shutdown deadline passed; the batch in hand will be redelivered")
                code = 1
    except Exception:
        log.exception("the persist loop crashed")
        code = 1
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await server_task
        await store.close()
        await redis.aclose()
    log.info("stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.persister", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="persist the score stream (the default)")
    commands.add_parser("migrate", help="apply the SQL migrations (idempotent)")
    rebuild_cmd = commands.add_parser("rebuild", help="rebuild the Redis board from PostgreSQL")
    rebuild_cmd.add_argument("--force", action="store_true", help="replace a non-empty board")
    commands.add_parser("reconcile", help="compare Redis and PostgreSQL totals; 1 if any differ")
    args = parser.parse_args(argv)
    settings = PersisterSettings()
    logs.configure(settings.log_level)
    command = args.command or "run"
    if command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {applied}" if applied else "schema is up to date")
        return 0
    if command == "rebuild":
        try:
            asyncio.run(rebuild(settings, force=args.force))
        except RebuildRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        return 0
    if command == "reconcile":
        return 1 if asyncio.run(reconcile(settings)) else 0
    return uvloop.run(run(settings))  # as the other services: a cheaper event loop


if __name__ == "__main__":
    sys.exit(main())
