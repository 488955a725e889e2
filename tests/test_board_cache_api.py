"""The board cache over real HTTP against real Redis: hits, invalidation, max age, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio
from prometheus_client import REGISTRY

from devstack.devtoken import issue
from devstack.servers import Server
from services.score_api.app import ScoreApi, create_app
from services.score_api.settings import ApiSettings
from services.score_api.tokens import SCOPE_ADMIN
from shared.keys import BoardKeys
from tests.support import CLIENT_ACTIONS, NO_LIMITS, serve

# Generous bounds for polling: a healthy follower reacts in milliseconds.
WAIT_SECONDS = 15.0
LONG_MAX_AGE = 60.0


@dataclass
class Replica:
    http: httpx.AsyncClient
    api: ScoreApi
    keys: BoardKeys
    settings: ApiSettings

    async def post(self, sub: str, key: str, action: str = "quest_complete") -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {issue(self.settings, sub)}",
            "Idempotency-Key": key,
        }
        return await self.http.post("/api/score", json={"action": action}, headers=headers)

    async def ban(self, user: str) -> httpx.Response:
        token = issue(self.settings, "moderator", scopes=(SCOPE_ADMIN,))
        headers = {"Authorization": f"Bearer {token}"}
        return await self.http.delete(f"/api/admin/users/{user}", headers=headers)

    async def board(self) -> dict[str, Any]:
        response = await self.http.get("/api/score-board")
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    async def caching(self) -> None:
        """Wait until the follower has taken its position and enabled the cache."""
        await eventually(lambda: as_awaitable(self.api.board_cache.enabled))


@asynccontextmanager
async def replica(redis_url: str, prefix: str, **settings: Any) -> AsyncIterator[Replica]:
    config = ApiSettings(
        redis_url=redis_url,
        redis_key_prefix=prefix,
        **({"actions": CLIENT_ACTIONS} | NO_LIMITS),
        **settings,
    )
    app = create_app(config)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        keys = BoardKeys(config.redis_key_prefix, config.board_id)
        yield Replica(http, app.state.api, keys, config)


async def as_awaitable(value: bool) -> bool:
    return value


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds; fail if it does not within WAIT_SECONDS."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def hits() -> float:
    return REGISTRY.get_sample_value("score_api_board_cache_total", {"result": "hit"}) or 0.0


async def rename_behind_the_api(client: redis.asyncio.Redis, keys: BoardKeys, user: str) -> None:
    """A change that appends no stream event, as ``persister rebuild`` or a manual fix."""
    await client.hset(keys.names, user, "Renamed")


def names(board: dict[str, Any]) -> list[str]:
    return [row["name"] for row in board["board"]]


async def test_a_read_is_answered_from_the_cache_while_nothing_is_appended(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url, key_prefix, api_board_cache_seconds=LONG_MAX_AGE) as api:
        assert (await api.post("alice", "k1")).status_code == 200
        await api.caching()
        first = await api.board()
        before = hits()
        await rename_behind_the_api(redis_client, api.keys, "alice")
        assert await api.board() == first
        assert hits() == before + 1
        other_page = (await api.http.get("/api/score-board", params={"limit": 1})).json()
        assert names(other_page) == ["Renamed"]


async def test_another_replicas_write_invalidates_the_cache_through_the_stream(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with (
        replica(redis_url, key_prefix, api_board_cache_seconds=LONG_MAX_AGE) as writer,
        replica(redis_url, key_prefix, api_board_cache_seconds=LONG_MAX_AGE) as reader,
    ):
        assert (await writer.post("alice", "k1")).status_code == 200
        await reader.caching()
        cached = await reader.board()
        await rename_behind_the_api(redis_client, reader.keys, "alice")
        assert await reader.board() == cached
        assert (await writer.post("bob", "k2", "level_up")).status_code == 200

        async def converged() -> bool:
            board = await reader.board()
            return board["total"] == 2 and names(board) == ["bob", "Renamed"]

        await eventually(converged)


async def test_own_writes_and_bans_are_visible_at_once(redis_url: str, key_prefix: str) -> None:
    async with replica(redis_url, key_prefix, api_board_cache_seconds=LONG_MAX_AGE) as api:
        assert (await api.post("alice", "k1")).status_code == 200
        await api.caching()
        assert (await api.board())["total"] == 1
        assert (await api.board())["total"] == 1
        assert (await api.post("bob", "k2", "level_up")).status_code == 200
        board = await api.board()
        assert [(r["user_id"], r["score"]) for r in board["board"]] == [("bob", 25), ("alice", 10)]
        assert (await api.ban("bob")).status_code == 200
        board = await api.board()
        assert [(r["user_id"], r["score"]) for r in board["board"]] == [("alice", 10)]


async def test_a_change_without_an_event_is_served_once_the_max_age_has_passed(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url, key_prefix, api_board_cache_seconds=0.3) as api:
        assert (await api.post("alice", "k1")).status_code == 200
        await api.caching()
        await api.board()
        await rename_behind_the_api(redis_client, api.keys, "alice")

        async def renamed() -> bool:
            return names(await api.board()) == ["Renamed"]

        await eventually(renamed)


async def test_a_max_age_of_zero_reads_redis_every_time(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with replica(redis_url, key_prefix, api_board_cache_seconds=0) as api:
        assert api.api.follower is None
        assert (await api.post("alice", "k1")).status_code == 200
        await api.board()
        await rename_behind_the_api(redis_client, api.keys, "alice")
        assert names(await api.board()) == ["Renamed"]
        assert not api.api.board_cache.enabled


async def test_a_redis_outage_gives_503_and_caching_resumes_after_recovery(
    own_redis: Server, key_prefix: str
) -> None:
    async with replica(
        own_redis.url,
        key_prefix,
        api_board_cache_seconds=LONG_MAX_AGE,
        redis_timeout_seconds=0.5,
    ) as api:
        assert (await api.post("alice", "k1")).status_code == 200
        await api.caching()
        await api.board()
        await api.board()
        own_redis.stop()

        async def unavailable() -> bool:
            response = await api.http.get("/api/score-board")
            if response.status_code == 503:
                assert response.headers["content-type"] == "application/problem+json"
                return True
            assert response.status_code == 200
            return False

        await eventually(unavailable)
        assert not api.api.board_cache.enabled
        assert (await api.http.get("/api/score-board")).status_code == 503
        own_redis.start()

        async def available() -> bool:
            return (await api.http.get("/api/score-board")).status_code == 200

        await eventually(available)
        # The restarted server kept nothing (no persistence).
        assert (await api.board())["total"] == 0
        assert (await api.post("bob", "k2")).status_code == 200
        await api.caching()
        assert names(await api.board()) == ["bob"]
        before = hits()
        assert names(await api.board()) == ["bob"]
        assert hits() == before + 1
