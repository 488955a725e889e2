"""What the gateway tests share: a gateway in-process or as a process, and following clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from services.broadcast_gateway.protocol import Board
from services.broadcast_gateway.server import Gateway
from services.broadcast_gateway.settings import GatewaySettings
from shared.board_reader import BoardReader
from shared.formats import encode_member
from shared.keys import BoardKeys
from tests.models import ClientView, Message, Ping, decode_message

ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0


async def wait_until(check: Callable[[], bool], within: float = WAIT, what: str = "") -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds (a bound, not a measure)."""
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not reached within {within}s: {what}")
        await asyncio.sleep(0.02)


async def read_until_closed(ws: ClientConnection) -> list[object]:
    """Every message left, then the close code the server sent (None if it sent none)."""
    got: list[object] = []
    try:
        while True:
            got.append(await ws.recv())
    except ConnectionClosed as exc:
        got.append(exc.rcvd.code if exc.rcvd else None)
    return got


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def run_gateway(redis_url: str, prefix: str, **overrides: Any) -> AsyncIterator[Gateway]:
    """A gateway in this event loop on a free port; ``gateway.url`` is its WebSocket URL."""
    options: dict[str, Any] = {"gateway_port": 0} | overrides
    settings = GatewaySettings(redis_url=redis_url, redis_key_prefix=prefix, **options)
    gateway = Gateway(settings)
    async with gateway.running():
        await wait_until(lambda: gateway.fanout.loaded, what="board loaded")
        yield gateway


class BoardWriter:
    """Writes one board with the score API's layout (shared.board), and reads its top N.

    Tests set scores directly, so they can also remove users and shrink the board the way an
    administrator's action would; every write appends a stream event as the real writers do.
    """

    def __init__(self, redis: Redis, prefix: str, top_n: int = 10) -> None:
        self.keys = BoardKeys(prefix, "global")
        self.reader = BoardReader(redis, self.keys)
        self.redis = redis
        self.top_n = top_n

    async def set_score(self, user: str, score: int, name: str | None = None) -> None:
        k = self.keys
        old = await self.redis.hget(k.members, user)
        seq = await self.redis.incr(k.seq)
        member = encode_member(seq, user)
        async with self.redis.pipeline(transaction=True) as tx:
            if old is not None:
                tx.zrem(k.board, old)
            tx.zadd(k.board, {member: -score})
            tx.hset(k.members, user, member)
            tx.hset(k.names, user, name or user)
            tx.xadd(k.stream, self._event("score", user, score=str(score)))
            await tx.execute()

    async def remove(self, user: str) -> None:
        """What a ban does to the board: the user leaves it, and an event says so."""
        k = self.keys
        old = await self.redis.hget(k.members, user)
        async with self.redis.pipeline(transaction=True) as tx:
            if old is not None:
                tx.zrem(k.board, old)
            tx.hdel(k.members, user)
            tx.xadd(k.stream, self._event("ban", user))
            await tx.execute()

    async def top(self) -> Board:
        entries, _ = await self.reader.page(0, self.top_n)
        return tuple(entries)

    @staticmethod
    def _event(kind: str, user: str, **fields: str) -> Any:
        ts = str(time.time_ns() // 1_000_000)
        event: dict[str, str] = {
            "v": "1",
            "type": kind,
            "event_id": os.urandom(8).hex(),
            "user_id": user,
            "ts": ts,
        }
        return event | fields


class Follower:
    """A WebSocket client that keeps a ClientView and, optionally, reconnects."""

    def __init__(self, url: str, *, reconnect: bool = False, **connect_args: Any) -> None:
        self.url = url
        self.reconnect = reconnect
        self.connect_args = {"compression": None, "open_timeout": 5} | connect_args
        self.view = ClientView()
        self.messages: list[Message] = []
        self.closes: list[int | None] = []
        self.connections = 0
        self.ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def board(self) -> Board:
        return self.view.board

    def versions(self) -> list[int]:
        return [m.version for m in self.messages if not isinstance(m, Ping)]

    async def __aenter__(self) -> Follower:
        self._task = asyncio.create_task(self._run())
        await wait_until(lambda: self.view.version is not None, what="first snapshot")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        # Bounded, so a stuck close shows up as a failure of the test, never as a hang.
        await asyncio.wait([self._task], timeout=WAIT)
        assert self._task.done(), "the follower did not stop"
        if self.ws is not None:
            async with asyncio.timeout(WAIT):
                await self.ws.close()

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                async with connect(self.url, **self.connect_args) as ws:
                    self.ws = ws
                    self.connections += 1
                    self.view = ClientView()
                    async for raw in ws:
                        message = decode_message(raw)
                        self.messages.append(message)
                        if not self.view.receive(message):
                            await ws.send('{"type": "resync"}')
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            except (OSError, InvalidHandshake, TimeoutError):
                pass
            if not self.reconnect:
                return
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


class GatewayProcess:
    """``python -m services.broadcast_gateway`` as a child process (restart and SIGTERM tests)."""

    def __init__(self, redis_url: str, prefix: str, port: int, log: Path, **env: str) -> None:
        self.env = (
            os.environ
            | {
                "REDIS_URL": redis_url,
                "REDIS_KEY_PREFIX": prefix,
                "GATEWAY_PORT": str(port),
                "PYTHONPATH": str(ROOT),
            }
            | env
        )
        self.port = port
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/score"

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.broadcast_gateway",
                cwd=ROOT,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        async with httpx.AsyncClient(timeout=1) as http:
            async with asyncio.timeout(WAIT):
                while True:
                    if self.proc.returncode is not None:
                        raise RuntimeError(f"gateway exited:\n{self.log.read_text()}")
                    with contextlib.suppress(httpx.HTTPError):
                        ready = await http.get(f"http://127.0.0.1:{self.port}/readyz")
                        if ready.status_code == 200:
                            return
                    await asyncio.sleep(0.05)

    async def terminate(self, within: float = WAIT) -> int:
        """SIGTERM, then wait for the exit code (SIGKILL if it overstays ``within`` seconds)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
