"""Scale-out: two score APIs, two gateways and two persisters share one Redis and PostgreSQL.

Every instance is a real ``python -m services.<name>`` process. Under concurrent load split
over both APIs, every accepted update reaches PostgreSQL exactly once and every WebSocket
client of either gateway converges to the API's board; when one gateway is sent SIGTERM, its
clients reconnect to the other (as a load balancer would send them) and converge again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.score_api.settings import TokenSettings
from shared.keys import BoardKeys
from tests.gateway_fixtures import GatewayProcess
from tests.gateway_fixtures import wait_until as wait_for
from tests.models import ClientView, decode_message
from tests.persister_fixtures import assert_consistent, persisters, wait_ready
from tests.support import api_process, free_port

ROOT = Path(__file__).resolve().parent.parent
ACTIONS = {"quest_complete": 10, "level_up": 25}  # no cooldowns
UPDATES = 400
USERS = 25
CONCURRENCY = 16
CLIENTS_PER_GATEWAY = 4


@dataclass
class Outcome:
    """What the load was told: the event ids of accepted updates (never of replays)."""

    accepted: set[str] = field(default_factory=set)
    duplicates: int = 0


class Player:
    """Posts scores through whichever API it is handed; every update has its own key."""

    def __init__(self, http: httpx.AsyncClient, tokens: TokenSettings) -> None:
        self.http = http
        self.tokens = tokens
        self.outcome = Outcome()

    async def post(self, api: str, user: str, key: str, action: str) -> dict[str, object]:
        headers = {
            "Authorization": f"Bearer {issue(self.tokens, user, name=f'Player {user}')}",
            "Idempotency-Key": key,
        }
        response = await self.http.post(
            f"{api}/api/score", json={"action": action}, headers=headers
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        if body["duplicate"]:
            self.outcome.duplicates += 1
        else:
            event_id = str(body["event_id"])
            assert event_id not in self.outcome.accepted
            self.outcome.accepted.add(event_id)
        return body

    async def load(self, apis: list[str], count: int) -> None:
        """``count`` updates alternating between the APIs, ``CONCURRENCY`` at a time; every
        tenth is also replayed through the other API at the same moment (a client retrying
        against another replica), which must count once."""
        work = iter(range(count))
        actions = list(ACTIONS)

        async def client() -> None:
            for i in work:
                user, key, action = f"u{i % USERS}", f"load-{i}", actions[i % len(actions)]
                first, other = apis[i % 2], apis[(i + 1) % 2]
                if i % 10:
                    await self.post(first, user, key, action)
                    continue
                both = await asyncio.gather(
                    self.post(first, user, key, action), self.post(other, user, key, action)
                )
                assert sorted(bool(b["duplicate"]) for b in both) == [False, True]
                assert both[0]["event_id"] == both[1]["event_id"]

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


class BalancedClient:
    """A browser behind a load balancer: connects to its first gateway and, after any close,
    to the next one in the list."""

    def __init__(self, urls: list[str], first: int) -> None:
        self.urls = urls
        self.index = first
        self.view = ClientView()
        self.closes: list[int | None] = []
        self.connected_to: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def board(self) -> list[dict[str, int | str]]:
        return [e.as_dict() for e in self.view.board]

    async def __aenter__(self) -> BalancedClient:
        self._task = asyncio.create_task(self._run())
        await wait_for(lambda: self.view.version is not None, what="first snapshot")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            url = self.urls[self.index % len(self.urls)]
            try:
                async with connect(url, compression=None, open_timeout=5) as ws:
                    self.connected_to.append(url)
                    self.view = ClientView()
                    async for raw in ws:
                        if not self.view.receive(decode_message(raw)):
                            await ws.send('{"type": "resync"}')
                    self.closes.append(ws.close_code)
            except ConnectionClosed as exc:
                self.closes.append(exc.rcvd.code if exc.rcvd else None)
            except (OSError, InvalidHandshake, TimeoutError):
                pass
            self.index += 1
            await asyncio.sleep(0.05)


async def postgres_event_ids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return [r["event_id"] for r in await conn.fetch("SELECT event_id FROM score_events")]
    finally:
        await conn.close()


@asynccontextmanager
async def gateway(redis_url: str, key_prefix: str, log: Path) -> AsyncIterator[GatewayProcess]:
    env = {"GATEWAY_TICK_MS": "20", "GATEWAY_SHUTDOWN_SECONDS": "5", "LOG_LEVEL": "INFO"}
    process = GatewayProcess(redis_url, key_prefix, free_port(), log, **env)
    try:
        await process.start()
        yield process
    finally:
        if process.proc is not None and process.proc.returncode is None:
            process.proc.kill()
            await process.proc.wait()


async def converged(
    clients: list[BalancedClient],
    expected: Callable[[], Awaitable[list[dict[str, object]]]],
    what: str,
) -> None:
    board = await expected()
    await wait_for(lambda: all(c.board() == board for c in clients), what=what)


async def test_two_of_each_service_persist_once_and_every_client_converges(
    redis_url: str,
    redis_client: redis.asyncio.Redis,
    key_prefix: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    await migrate(database_url)
    keys = BoardKeys(key_prefix, "global")
    api_env = {
        "DATABASE_URL": database_url,
        "ACTIONS": json.dumps(ACTIONS),
        "REDIS_TIMEOUT_SECONDS": "5",
        "LOG_LEVEL": "WARNING",
    }
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        spawn = await stack.enter_async_context(
            persisters(tmp_path, redis_url, database_url, key_prefix)
        )
        workers = [spawn("p1"), spawn("p2")]
        apis = [
            await stack.enter_async_context(
                api_process(redis_url, key_prefix, tmp_path / f"api-{i}.log", **api_env)
            )
            for i in range(2)
        ]
        gateways = [
            await stack.enter_async_context(
                gateway(redis_url, key_prefix, tmp_path / f"gateway-{i}.log")
            )
            for i in range(2)
        ]
        for worker in workers:
            await wait_ready(worker)

        urls = [g.url for g in gateways]
        clients = [
            await stack.enter_async_context(BalancedClient(urls, first=i % 2))
            for i in range(2 * CLIENTS_PER_GATEWAY)
        ]

        async def board() -> list[dict[str, object]]:
            boards = [(await http.get(f"{api}/api/score-board")).json()["board"] for api in apis]
            assert boards[0] == boards[1]  # both replicas read the same board
            return [dict(e) for e in boards[0]]

        player = Player(http, TokenSettings())
        await player.load(apis, UPDATES)
        accepted = player.outcome.accepted
        assert len(accepted) == UPDATES
        assert player.outcome.duplicates == UPDATES // 10

        # Exactly once: PostgreSQL holds each accepted event, one row each, and nothing else.
        await assert_consistent(redis_client, keys, database_url, len(accepted))
        stored = await postgres_event_ids(database_url)
        assert len(stored) == len(set(stored)) == len(accepted)
        assert set(stored) == accepted
        await converged(clients, board, "every client of both gateways shows the API's board")

        # One gateway leaves: its clients are told 1012 and reconnect to the other.
        leaving, staying = gateways
        moved = [c for c in clients if c.connected_to[-1] == leaving.url]
        assert len(moved) == CLIENTS_PER_GATEWAY
        assert await leaving.terminate() == 0
        await wait_for(
            lambda: all(c.closes == [1012] and c.connected_to[-1] == staying.url for c in moved),
            what="the leaving gateway's clients reconnected to the other gateway",
        )
        await converged(clients, board, "the moved clients show the API's board")
        leader = (await board())[0]
        await player.post(apis[1], str(leader["user_id"]), "after-failover", "level_up")
        await converged(clients, board, "every client shows the update made after the failover")
        assert all(len(c.connected_to) == 1 for c in clients if c not in moved)

        assert (await board())[0] == leader | {"score": int(str(leader["score"])) + 25}
        assert len(accepted) == UPDATES + 1  # the same set, grown by the post above
        await assert_consistent(redis_client, keys, database_url, len(accepted))
    log = (tmp_path / "gateway-0.log").read_text()
    assert "stopped" in log, log
