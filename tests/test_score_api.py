"""The score API over real HTTP against a real Redis: effects, concurrency, errors, outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis.asyncio

from devstack.devtoken import issue
from devstack.servers import Server
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from shared.clock import Clock
from shared.formats import EVENT_VERSION
from shared.keys import BoardKeys
from tests.support import CLIENT_ACTIONS, NO_LIMITS, ONE_BOARD, board_state, serve, stream_events


@dataclass
class Api:
    http: httpx.AsyncClient
    keys: BoardKeys
    settings: ApiSettings

    def token(self, sub: str, **kwargs: Any) -> str:
        return issue(self.settings, sub, **kwargs)

    async def post(
        self, sub: str, key: str, action: str = "quest_complete", **kwargs: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(sub, **kwargs)}", "Idempotency-Key": key}
        return await self.http.post("/api/score", json={"action": action}, headers=headers)


@asynccontextmanager
async def running_api(clock: Clock | None = None, **settings: Any) -> AsyncIterator[Api]:
    # Client-mode actions, abuse limits off unless a test turns them on; tests/test_security.py
    # proves the limits, tests/test_tickets.py the trust modes.
    config = ApiSettings(**({"actions": CLIENT_ACTIONS} | ONE_BOARD | NO_LIMITS | settings))
    async with serve(create_app(config, clock)) as url:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
            yield Api(http, BoardKeys(config.redis_key_prefix, config.board_id), config)


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(redis_url=redis_url, redis_key_prefix=key_prefix) as running:
        yield running


async def test_accepted_update_returns_result_and_appends_one_event(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    headers = {
        "Authorization": f"Bearer {api.token('alice', name='Alice')}",
        "Idempotency-Key": "k1",
        "X-Request-ID": "req-123",
        "User-Agent": "game/1.0",
    }
    response = await api.http.post("/api/score", json={"action": "quest_complete"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    body = response.json()
    assert {k: body[k] for k in ("user_id", "name", "action", "awarded", "score", "rank")} == {
        "user_id": "alice",
        "name": "Alice",
        "action": "quest_complete",
        "awarded": 10,
        "score": 10,
        "rank": 1,
    }
    assert body["duplicate"] is False
    [event] = await stream_events(redis_client, api.keys.stream)
    assert event | {"ts": "", "seq": ""} == {
        "v": EVENT_VERSION,
        "type": "score",
        "event_id": body["event_id"],
        "user_id": "alice",
        "name": "Alice",
        "action": "quest_complete",
        "points": "10",
        "score": "10",
        "seq": "",
        "idempotency_key": "k1",
        "ts": "",
        "client_ip": "127.0.0.1",
        "request_id": "req-123",
        "user_agent": "game/1.0",
        "periods": "",
    }


async def test_points_accumulate_and_board_and_rank_agree(api: Api) -> None:
    for i, (user, action) in enumerate(
        [("a", "quest_complete"), ("b", "level_up"), ("a", "daily_login"), ("c", "daily_login")]
    ):
        assert (await api.post(user, f"k{i}", action)).status_code == 200
    all_time = {
        "board_id": "all-time",
        "period": "all",
        "starts_at": None,
        "ends_at": None,
        "final": False,
    }
    board = (await api.http.get("/api/score-board")).json()
    assert (
        board
        == {
            "total": 3,
            "board": [
                {"rank": 1, "user_id": "b", "name": "b", "score": 25},
                {"rank": 2, "user_id": "a", "name": "a", "score": 15},
                {"rank": 3, "user_id": "c", "name": "c", "score": 5},
            ],
        }
        | all_time
    )
    page = (await api.http.get("/api/score-board", params={"limit": 1, "offset": 1})).json()
    assert page == {"total": 3, "board": [board["board"][1]]} | all_time
    rank = (await api.http.get("/api/users/a/rank", params={"around": 1})).json()
    assert (
        rank
        == {
            "rank": 2,
            "user_id": "a",
            "name": "a",
            "score": 15,
            "around": [board["board"][0], board["board"][2]],
        }
        | all_time
    )


async def test_200_concurrent_updates_with_distinct_keys_sum_exactly(api: Api) -> None:
    responses = await asyncio.gather(*(api.post(f"u{i % 7}", f"k{i}") for i in range(200)))
    assert [r.status_code for r in responses] == [200] * 200
    board = (await api.http.get("/api/score-board")).json()
    assert sum(e["score"] for e in board["board"]) == 2000
    assert {e["user_id"]: e["score"] for e in board["board"]} == {
        f"u{i}": 10 * len(range(i, 200, 7)) for i in range(7)
    }


async def test_200_concurrent_updates_with_the_same_key_count_once(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    responses = await asyncio.gather(*(api.post("alice", "same") for _ in range(200)))
    bodies = [r.json() for r in responses]
    assert [r.status_code for r in responses] == [200] * 200
    assert sum(not b["duplicate"] for b in bodies) == 1
    assert {(b["score"], b["event_id"]) for b in bodies} == {(10, bodies[0]["event_id"])}
    assert await redis_client.xlen(api.keys.stream) == 1


async def test_same_key_by_another_user_is_independent(api: Api) -> None:
    assert (await api.post("alice", "shared")).json()["duplicate"] is False
    assert (await api.post("bob", "shared")).json()["duplicate"] is False


async def test_ties_order_by_arrival_then_stay_exact(api: Api) -> None:
    for user in ("zed", "amy", "kim"):
        assert (await api.post(user, f"{user}-1")).status_code == 200
    board = (await api.http.get("/api/score-board")).json()["board"]
    assert [e["user_id"] for e in board] == ["zed", "amy", "kim"]
    # amy moves ahead, then zed reaches the same score later: amy keeps the better rank.
    await api.post("amy", "amy-2", "daily_login")
    await api.post("zed", "zed-2", "daily_login")
    board = (await api.http.get("/api/score-board")).json()["board"]
    assert [(e["user_id"], e["score"]) for e in board] == [("amy", 15), ("zed", 15), ("kim", 10)]


async def test_replay_with_another_action_is_422_and_changes_nothing(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await api.post("alice", "k")
    before = await board_state(redis_client, api.keys)
    response = await api.post("alice", "k", "level_up")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await board_state(redis_client, api.keys) == before


def _raw(
    token: str | None,
    key: str | None = "k",
    ctype: str | None = "application/json",
    body: bytes = b'{"action": "quest_complete"}',
) -> dict[str, Any]:
    headers = {}
    if token is not None:
        headers["Authorization"] = token
    if key is not None:
        headers["Idempotency-Key"] = key
    if ctype is not None:
        headers["Content-Type"] = ctype
    return {"headers": headers, "content": body}


async def test_every_refusal_is_a_problem_and_changes_nothing(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await api.post("alice", "seed")
    good = f"Bearer {api.token('alice')}"
    cases: list[tuple[int, dict[str, Any]]] = [
        (401, _raw(None)),
        (401, _raw("Basic dXNlcjpwYXNz")),
        (401, _raw("Bearer not.a.jwt")),
        (401, _raw(f"Bearer {api.token('alice', ttl=-3600)}")),
        (401, _raw(good[:-3] + "AAA")),
        (403, _raw(f"Bearer {api.token('alice', scopes=('profile:read',))}")),
        (400, _raw(good, key=None)),
        (400, _raw(good, key="bad key!")),
        (415, _raw(good, ctype="text/plain")),
        (413, _raw(good, body=b'{"action": "' + b"x" * 5000 + b'"}')),
        (422, _raw(good, body=b"{not json")),
        (422, _raw(good, body=b'{"action": "quest_complete", "points": 99999}')),
        (422, _raw(good, body=b'{"action": "free_points"}')),
    ]
    before = await board_state(redis_client, api.keys)
    for status, request in cases:
        response = await api.http.post("/api/score", **request)
        assert response.status_code == status, (status, request["headers"], response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["status"] == status
        assert problem["type"].startswith("urn:")
        if status == 401:
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        if status == 403:
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert await board_state(redis_client, api.keys) == before


async def test_chunked_oversize_body_is_413(api: Api, redis_client: redis.asyncio.Redis) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    headers = {
        "Authorization": f"Bearer {api.token('alice')}",
        "Idempotency-Key": "k",
        "Content-Type": "application/json",
    }
    response = await api.http.post("/api/score", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert await redis_client.xlen(api.keys.stream) == 0


async def test_query_errors_are_problems(api: Api) -> None:
    for path, status in [
        ("/api/score-board?limit=0", 422),
        ("/api/score-board?offset=x", 422),
        ("/api/users/nobody/rank", 404),
        ("/api/users/a/rank?around=26", 422),
        ("/api/users/bad%20id/rank", 422),
        ("/no/such/route", 404),
    ]:
        response = await api.http.get(path)
        assert response.status_code == status, path
        assert response.json()["status"] == status
    assert (await api.http.get("/api/score")).status_code == 405


async def test_health_readiness_and_metrics(api: Api) -> None:
    await api.post("alice", "k")
    await api.post("alice", "k")
    await api.http.post("/api/score")
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    assert (await api.http.get("/readyz")).status_code == 200
    metrics = (await api.http.get("/metrics")).text
    assert 'score_api_requests_total{method="POST",route="post_score",status="200"}' in metrics
    assert "score_api_updates_duplicate_total" in metrics
    assert 'score_api_rejections_total{reason="token_missing"}' in metrics


async def test_redis_outage_gives_503_then_recovers(own_redis: Server, key_prefix: str) -> None:
    async with running_api(
        redis_url=own_redis.url, redis_key_prefix=key_prefix, redis_timeout_seconds=0.5
    ) as api:
        assert (await api.post("alice", "before")).status_code == 200
        own_redis.stop()
        response = await api.post("alice", "during")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert (await api.http.get("/readyz")).status_code == 503
        assert (await api.http.get("/api/score-board")).status_code == 503
        own_redis.start()
        assert (await api.http.get("/readyz")).status_code == 200
        # The restarted server kept nothing (no persistence): the retried key applies once.
        assert (await api.post("alice", "during")).json()["score"] == 10
        assert (await api.post("alice", "during")).json()["duplicate"] is True


async def test_timed_out_write_retried_with_same_key_counts_once(
    own_redis: Server, key_prefix: str
) -> None:
    async with running_api(
        redis_url=own_redis.url, redis_key_prefix=key_prefix, redis_timeout_seconds=0.3
    ) as api:
        admin = redis.asyncio.Redis.from_url(own_redis.url)
        try:
            # Writes are held back, so the API gives up while Redis holds the command. Whether
            # Redis then runs or drops it, the retry with the same key must count once.
            await admin.client_pause(5000, all=False)
            assert (await api.post("alice", "slow")).status_code == 503
            await admin.client_unpause()  # no sleeping until the pause runs out
            assert (await api.post("alice", "slow")).json()["score"] == 10
            assert (await api.post("alice", "slow")).json()["duplicate"] is True
            assert await admin.xlen(api.keys.stream) == 1
        finally:
            await admin.aclose()
