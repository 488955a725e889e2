"""Helpers of the persister tests: a real score API for load, the persister as a subprocess,
and the one end check every fault test finishes with."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis.asyncio

from devstack.devtoken import issue
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from services.persister.worker import Persister
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from shared.formats import decode_member
from shared.keys import BoardKeys
from shared.redisconn import connect
from tests.support import NO_LIMITS, free_port, serve

ROOT = Path(__file__).resolve().parent.parent
WAIT = 30.0
LOAD_ACTIONS: dict[str, Any] = {
    "quest_complete": 10,
    "level_up": 25,
    "daily_login": 5,
}  # no cooldowns


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, within: float = WAIT) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Api:
    """The real score API over HTTP, counting the updates it accepted."""

    http: httpx.AsyncClient
    keys: BoardKeys
    settings: ApiSettings
    accepted: int = 0
    _keys: Iterator[int] = field(default_factory=itertools.count)

    async def post(self, user: str, action: str = "quest_complete") -> httpx.Response | None:
        token = issue(self.settings, user, name=f"Name {user}")
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{next(self._keys)}"}
        try:
            response = await self.http.post("/api/score", json={"action": action}, headers=headers)
        except httpx.HTTPError:
            return None  # e.g. Redis restarting: not accepted, so not counted
        if response.status_code == 200 and not response.json()["duplicate"]:
            self.accepted += 1
        return response

    async def load(self, count: int, users: int = 20, concurrency: int = 20) -> None:
        """``count`` updates spread over ``users`` users, ``concurrency`` at a time."""
        queue = iter(range(count))

        async def client() -> None:
            for i in queue:
                await self.post(
                    f"u{i % users}", ("quest_complete", "level_up", "daily_login")[i % 3]
                )

        await asyncio.gather(*(client() for _ in range(concurrency)))

    async def load_until(self, stop: asyncio.Event, users: int = 20, concurrency: int = 10) -> None:
        """Keep posting updates until ``stop`` is set."""
        counter = itertools.count()

        async def client() -> None:
            while not stop.is_set():
                i = next(counter)
                if await self.post(f"u{i % users}") is None:
                    await asyncio.sleep(0.05)  # the API is unreachable: do not spin

        await asyncio.gather(*(client() for _ in range(concurrency)))


@asynccontextmanager
async def running_api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    config = ApiSettings(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        redis_timeout_seconds=5,
        actions=LOAD_ACTIONS,
        # Load comes from one address and a few users: no abuse limits here.
        **NO_LIMITS,
    )
    async with (
        serve(create_app(config)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield Api(http, BoardKeys(config.redis_key_prefix, config.board_id), config)


@dataclass
class PersisterProcess:
    """``python -m services.persister`` as a real child process."""

    env: dict[str, str]
    port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self) -> None:
        assert self.log is not None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.persister"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    async def wait_exit(self, within: float = WAIT) -> int:
        assert self.proc is not None
        proc = self.proc
        await wait_until(lambda: _done(proc), "the persister to exit", within)
        return proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    async def get(self, path: str) -> httpx.Response | None:
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                return await http.get(f"http://127.0.0.1:{self.port}{path}")
        except httpx.HTTPError:
            return None


async def _done(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


@asynccontextmanager
async def persisters(
    tmp_path: Path, redis_url: str, database_url: str, key_prefix: str, **env: str
) -> AsyncIterator[Callable[..., PersisterProcess]]:
    """A factory of persister processes; every one is killed on exit, whatever happened."""
    started: list[PersisterProcess] = []

    def spawn(consumer: str = "p1", start: bool = True, **more: str) -> PersisterProcess:
        port = free_port()
        full = dict(os.environ)
        full.update(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            REDIS_KEY_PREFIX=key_prefix,
            PERSISTER_CONSUMER=consumer,
            PERSISTER_METRICS_HOST="127.0.0.1",
            PERSISTER_METRICS_PORT=str(port),
            PERSISTER_CLAIM_IDLE_MS="1000",
            PERSISTER_RETRY_MAX_SECONDS="0.5",
            PERSISTER_TRIM_INTERVAL_MS="200",
            LOG_LEVEL="INFO",
        )
        full.update(env)
        full.update(more)
        process = PersisterProcess(full, port, log=tmp_path / f"persister-{len(started)}.log")
        started.append(process)
        if start:
            process.start()
        return process

    try:
        yield spawn
    finally:
        for process in started:
            process.kill()


async def wait_ready(process: PersisterProcess) -> None:
    async def ready() -> bool:
        assert process.proc is not None
        if process.proc.poll() is not None:
            raise AssertionError(f"the persister exited:\n{process.output()[-3000:]}")
        response = await process.get("/readyz")
        return response is not None and response.status_code == 200

    await wait_until(ready, "the persister to be ready")


async def redis_scores(client: redis.asyncio.Redis, keys: BoardKeys) -> dict[str, int]:
    rows: list[tuple[bytes, float]] = await client.zrange(keys.board, 0, -1, withscores=True)  # type: ignore[assignment]
    return {decode_member(m.decode())[1]: -int(s) for m, s in rows}


async def event_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM score_events"))
    finally:
        await conn.close()


async def assert_consistent(
    client: redis.asyncio.Redis, keys: BoardKeys, database_url: str, accepted: int
) -> None:
    """The end check: once the backlog drained, for every user the board's score equals
    ``users.score`` equals the sum of their events, and accepted updates == event rows."""

    async def drained() -> bool:
        return await event_count(database_url) >= accepted

    await wait_until(drained, f"{accepted} events in postgres")
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT count(*) AS n FROM score_events")
        users = {r["user_id"]: r["score"] for r in await conn.fetch("SELECT * FROM users")}
        sums = {
            r["user_id"]: r["total"]
            for r in await conn.fetch(
                "SELECT user_id, sum(points)::bigint AS total FROM score_events GROUP BY user_id"
            )
        }
    finally:
        await conn.close()
    board = await redis_scores(client, keys)
    assert rows[0]["n"] == accepted
    assert board == users == sums
    assert accepted > 0


async def pending_count(client: redis.asyncio.Redis, keys: BoardKeys) -> int:
    try:
        summary = await client.xpending(keys.stream, "persister")
    except redis.ResponseError:
        return 0  # no stream or group yet
    return int(summary["pending"])


@asynccontextmanager
async def open_worker(
    redis_url: str, database_url: str, key_prefix: str, **overrides: object
) -> AsyncIterator[Persister]:
    """An in-process persist loop (driven by ``step()``), with quick retry settings."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "redis_key_prefix": key_prefix,
        "persister_consumer": "w1",
        "persister_block_ms": 20,
        "persister_claim_idle_ms": 50,
        "persister_max_attempts": 3,
        "persister_trim_interval_ms": 1,
    }
    settings = PersisterSettings(**(values | overrides))  # type: ignore[arg-type]
    store = await EventStore.open(settings.database_url, 5.0)
    worker = Persister(settings, connect(settings.redis_url, timeout=5.0), store)
    try:
        yield worker
    finally:
        await store.close()
        await worker.redis.aclose()


async def drain(worker: Persister, passes: int = 200) -> None:
    """Run passes until one finds nothing to do (bounded)."""
    for _ in range(passes):
        if not await worker.step():
            return
    raise AssertionError("the worker never went idle")
