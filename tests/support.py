"""Helpers the tests share: unique names, a manual clock, an in-process uvicorn server, Redis
snapshots."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio
import uvicorn
from starlette.types import ASGIApp

from services.score_api.settings import ApiSettings
from shared.keys import BoardKeys

ROOT = Path(__file__).resolve().parent.parent
# The seed's catalogue with every action in client mode: tests of the write path that are not
# about trust modes use it; tests/test_tickets.py and tests/test_farming.py prove the default.
CLIENT_ACTIONS: dict[str, Any] = {
    "quest_complete": 10,
    "daily_login": {"points": 5, "cooldown_seconds": 72000},
    "level_up": {"points": 25, "cooldown_seconds": 60},
    "match_win": {"points": 20, "cooldown_seconds": 30},
    "achievement_unlocked": 50,
}
# The all-time board alone, as before periodic boards: tests that are not about them use it
# (tests/test_boards.py and the other board tests prove the default family).
ONE_BOARD: dict[str, Any] = {"boards": {"all-time": {"reset": "never"}}}
# Every abuse limit and points budget off; tests/test_security.py and test_budgets.py prove
# them. Settings names, lower case (ApiSettings keywords); ``api_env`` gives the variables.
NO_LIMITS: dict[str, Any] = {
    "rate_limit_user_per_second": 0,
    "rate_limit_user_per_minute": 0,
    "rate_limit_user_per_hour": 0,
    "rate_limit_ip_per_second": 0,
    "rate_limit_reporter_per_second": 0,
    "points_per_user_per_hour": 0,
    "points_per_user_per_day": 0,
}


def admin_api_settings(
    redis_url: str, key_prefix: str, database_url: str, **settings: Any
) -> ApiSettings:
    """An in-process score API's settings with PostgreSQL for the admin endpoints: client
    actions, one board, no limits."""
    return ApiSettings(
        **(
            {"actions": CLIENT_ACTIONS}
            | ONE_BOARD
            | NO_LIMITS
            | {"redis_url": redis_url, "redis_key_prefix": key_prefix}
            | {"database_url": database_url, "redis_timeout_seconds": 2}
            | settings
        )
    )


def api_env(**settings: Any) -> dict[str, str]:
    """Environment variables of an API process: client-mode actions, no limits, then these."""
    values = {"actions": CLIENT_ACTIONS} | ONE_BOARD | NO_LIMITS | settings
    return {
        name.upper(): value if isinstance(value, str) else json.dumps(value)
        for name, value in values.items()
    }


RUN_ID = os.urandom(4).hex()
_counter = itertools.count()
_prefixes: list[str] = []


class ManualClock:
    """A ``shared.clock.Clock`` that moves only when the test says: it starts at the real
    wall time (so real tokens verify) and ``advance`` moves both clocks, never sleeping."""

    def __init__(self, wall: float | None = None) -> None:
        self._wall = time.time() if wall is None else wall
        self._monotonic = 1_000.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go back")
        self._wall += seconds
        self._monotonic += seconds


def new_prefix() -> str:
    """A Redis key prefix unique to this test in this run; all are deleted at session end."""
    prefix = f"t{RUN_ID}-{next(_counter)}"
    _prefixes.append(prefix)
    return prefix


def prefixes_in_use() -> list[str]:
    return list(_prefixes)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def serve(app: ASGIApp, port: int | None = None) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a loopback port in this event loop; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        # Longer than any test's pause, so the client never reuses a connection the server
        # is closing (a keep-alive race that is real, but not what these tests are about).
        timeout_keep_alive=120,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def board_state(client: redis.asyncio.Redis, keys: BoardKeys) -> dict[str, Any]:
    """Everything an update could change, for 'this request changed nothing' assertions."""
    idem = [k async for k in client.scan_iter(match=f"{keys.tag}:idem:*", count=1000)]
    return {
        "board": await client.zrange(keys.board, 0, -1, withscores=True),
        "members": await client.hgetall(keys.members),
        "names": await client.hgetall(keys.names),
        "seq": await client.get(keys.seq),
        "stream": await client.xlen(keys.stream),
        "idempotency": sorted(idem),
        "hidden": await client.zrange(keys.hidden_board, 0, -1, withscores=True),
        "quarantined": sorted(await client.hkeys(keys.quarantined)),
        "banned": await client.hgetall(keys.banned),
    }


async def stream_events(client: redis.asyncio.Redis, stream: str) -> list[dict[str, str]]:
    """Every entry of a stream as text fields, oldest first."""
    rows: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(stream)  # type: ignore[assignment]
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at another database."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def api_process(
    redis_url: str, key_prefix: str, log: Path | None = None, **env: str
) -> AsyncIterator[str]:
    """``python -m services.score_api`` as a real process, ready; yields its base URL.

    Client-mode actions, abuse limits and budgets off unless ``env`` sets them; stderr goes
    to ``log`` when given.
    """
    port = free_port()
    full = (
        os.environ
        | api_env()
        | {"REDIS_URL": redis_url, "REDIS_KEY_PREFIX": key_prefix, "API_PORT": str(port)}
        | env
    )
    with (log or Path(os.devnull)).open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.score_api", env=full, cwd=ROOT, stderr=err
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_ready(url, proc)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def wait_ready(url: str, proc: asyncio.subprocess.Process | None = None) -> None:
    """Poll ``url``/readyz until it answers 200 (bounded), failing early if ``proc`` exits."""
    async with httpx.AsyncClient(timeout=2) as http:
        for _ in range(300):
            if proc is not None and proc.returncode is not None:
                raise AssertionError(f"{url}: the process exited with {proc.returncode}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")
