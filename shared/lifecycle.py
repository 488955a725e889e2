"""The lifecycle kit every service uses: retry delays, heap freezing, signals, deadlines.

Each service exposes ``running(settings)``, an async context manager that owns its
connections, background tasks and health server, and shuts them down within its deadline
when the block exits. ``serve_until_signalled`` runs one until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable, Generator, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import uvicorn
import uvloop
from redis.backoff import EqualJitterBackoff

from shared import logs
from shared.settings import SharedSettings

T = TypeVar("T")
S = TypeVar("S", bound=SharedSettings)
MAX_DOUBLINGS = 30


class Backoff:
    """Capped exponential delays with equal jitter (redis-py's): 50 ms, 100 ms, ... ``cap``.

    Each delay lies in [d/2, d] for the nominal d, so retries spread out without ever
    spinning with a zero delay. ``reset()`` after a success.
    """

    def __init__(self, cap: float, base: float = 0.05) -> None:
        self._policy = EqualJitterBackoff(cap=cap, base=base)
        self.failures = 0

    def next(self) -> float:
        delay = self._policy.compute(self.failures)
        self.failures = min(self.failures + 1, MAX_DOUBLINGS)
        return delay

    def reset(self) -> None:
        self.failures = 0


def freeze_heap() -> None:
    """Move everything built so far out of the collector's reach.

    What a service builds at start-up lives as long as the process; once frozen, full
    collections no longer walk it (A/B in docs/benchmarks.md: POST p99 at saturation
    34-38 -> 9-10 ms).
    """
    gc.collect()
    gc.freeze()


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]], within: float, log: logging.Logger
) -> None:
    """Cancel ``tasks`` and wait for them at most ``within`` seconds: a task stuck inside a
    library call must not keep the process past its shutdown deadline."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, stuck = await asyncio.wait(tasks, timeout=within)
    if stuck:
        log.warning("%d background tasks did not stop in time", len(stuck))


async def bounded(awaitable: Any, within: float) -> None:
    """Await ``awaitable`` (a close, a drain), giving up silently after ``within`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            await awaitable


async def serve_until_signalled(
    running: AbstractAsyncContextManager[T], log: logging.Logger, stop: asyncio.Event | None = None
) -> None:
    """Enter ``running``, wait for SIGTERM/SIGINT (or ``stop``), then leave it (shut down)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running as where:
            log.info("serving on %s", where)
            await stop.wait()
            log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service owns SIGTERM/SIGINT (serve_until_signalled); uvicorn must not take them.
        yield


@contextlib.asynccontextmanager
async def uvicorn_serving(config: uvicorn.Config) -> AsyncIterator[int]:
    """Run uvicorn in this loop until the block exits (its own graceful shutdown, bounded by
    ``config.timeout_graceful_shutdown``); yields the bound port."""
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task


def main(
    settings: S, running: Callable[[S], AbstractAsyncContextManager[Any]], log: logging.Logger
) -> None:
    """A service's ``python -m`` entry point: JSON logs, uvloop, ``running`` until signalled."""
    logs.configure(settings.log_level)
    uvloop.run(serve_until_signalled(running(settings), log))
