"""Automatic pipelining of one Lua script: the calls made in one event-loop iteration share
one round trip.

Under load many requests reach their Redis call in the same iteration; redis-py would take a
pooled connection, write, wait and parse once per call (about 50 microseconds of CPU each in
a profile). Here they are queued, and one callback scheduled for the end of the iteration
sends them all as one non-transactional pipeline (EVALSHA per call, in order) on one
connection. Each caller gets its own reply or error, exactly as if it had called alone:

- a script runs atomically whatever else is in the pipeline, and calls are independent;
- ``NOSCRIPT`` (Redis restarted or flushed its script cache) means that call did not run:
  the script is loaded again and that call alone is sent once more;
- a connection error or timeout fails every call of the batch with it; as with a single
  call, the script may or may not have run (the API answers 503, and a retry with the same
  idempotency key counts once).

Only for single-server URLs: on a cluster (``redis+cluster://``) calls go one by one through
redis-py, whose cluster pipeline may re-send a batch after a connection error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[Sequence[str], Sequence[str | int], "asyncio.Future[Any]"]


class ScriptPipeline:
    """``await pipeline(keys, args)`` runs ``script`` like ``script(keys=keys, args=args)``."""

    def __init__(self, redis: Redis, script: AsyncScript) -> None:
        self._redis = redis
        self._script = script
        self._queue: list[Call] = []
        self._running: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        batch = [call for call in batch if not call[2].done()]  # cancelled callers: skipped
        if batch:
            task = asyncio.create_task(self._send(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _send(self, batch: list[Call]) -> None:
        sha = self._script.sha
        try:
            pipe = self._redis.pipeline(transaction=False)
            for keys, args, _ in batch:
                pipe.evalsha(sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # That call did not run. Script.__call__ loads the script and sends it again.
                reply = await self._retry(keys, args)
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _retry(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await self._script(keys=list(keys), args=list(args))
        except Exception as exc:
            return exc
