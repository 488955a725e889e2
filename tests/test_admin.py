"""Banning a cheater over HTTP: scope, effect on the board, the audit event, and the unban."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio

from services.score_api.tokens import SCOPE_ADMIN
from tests.gateway_fixtures import Follower, run_gateway, wait_until
from tests.support import board_state, stream_events
from tests.test_score_api import Api, running_api


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(redis_url=redis_url, redis_key_prefix=key_prefix) as running:
        yield running


async def moderate(
    api: Api, user: str, op: str = "ban", scopes: tuple[str, ...] = (SCOPE_ADMIN,)
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.token('moderator', scopes=scopes)}"}
    if op == "ban":
        return await api.http.delete(f"/api/admin/users/{user}", headers=headers)
    return await api.http.post(f"/api/admin/users/{user}/unban", headers=headers)


async def board(api: Api) -> list[tuple[str, int]]:
    rows = (await api.http.get("/api/score-board")).json()["board"]
    return [(row["user_id"], row["score"]) for row in rows]


async def test_ban_needs_the_admin_scope_and_changes_nothing_otherwise(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await api.post("cheater", "k1")
    before = await board_state(redis_client, api.keys)
    assert (await moderate(api, "cheater", scopes=("score:write",))).status_code == 403
    assert (await api.http.delete("/api/admin/users/cheater")).status_code == 401
    assert (await moderate(api, "cheater", "unban", scopes=("score:write",))).status_code == 403
    assert await board_state(redis_client, api.keys) == before


async def test_ban_removes_the_user_refuses_updates_and_records_who_banned(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await api.post("honest", "k1")
    await api.post("cheater", "k1", "achievement_unlocked")
    response = await moderate(api, "cheater")
    assert response.json() == {
        "user_id": "cheater",
        "status": "banned",
        "changed": True,
        "score": 50,
    }
    assert await board(api) == [("honest", 10)]
    assert (await api.http.get("/api/users/cheater/rank")).status_code == 404
    refused = await api.post("cheater", "k2")
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("banned")
    ban = (await stream_events(redis_client, api.keys.stream))[-1]
    assert {k: ban[k] for k in ("type", "user_id", "score", "points", "by")} == {
        "type": "ban",
        "user_id": "cheater",
        "score": "50",
        "points": "0",
        "by": "moderator",
    }
    assert (await moderate(api, "cheater")).json()["changed"] is False


async def test_unban_restores_the_score_and_tie_break_place(api: Api) -> None:
    await api.post("first", "k1")
    await api.post("second", "k1")
    await moderate(api, "first")
    assert await board(api) == [("second", 10)]
    response = await moderate(api, "first", "unban")
    assert response.json() == {"user_id": "first", "status": "active", "changed": True, "score": 10}
    assert await board(api) == [("first", 10), ("second", 10)]
    assert (await api.post("first", "k2")).json()["score"] == 20
    assert (await moderate(api, "first", "unban")).json()["changed"] is False


async def test_a_user_banned_before_scoring_cannot_score_until_unbanned(api: Api) -> None:
    assert (await moderate(api, "newcomer")).json()["score"] is None
    assert (await api.post("newcomer", "k1")).status_code == 403
    await moderate(api, "newcomer", "unban")
    assert (await api.post("newcomer", "k1")).json()["score"] == 10


async def test_live_boards_drop_a_banned_user_and_restore_them_on_unban(
    api: Api, redis_url: str
) -> None:
    await api.post("honest", "k1")
    await api.post("cheater", "k1", "achievement_unlocked")
    async with (
        run_gateway(redis_url, api.keys.prefix) as gateway,
        Follower(gateway.url) as browser,
    ):

        def shown() -> list[tuple[str, int]]:
            return [(e.user_id, e.score) for e in browser.board]

        await wait_until(lambda: shown() == [("cheater", 50), ("honest", 10)], what="board")
        await moderate(api, "cheater")
        await wait_until(lambda: shown() == [("honest", 10)], what="the ban on the live board")
        await moderate(api, "cheater", "unban")
        await wait_until(lambda: shown() == [("cheater", 50), ("honest", 10)], what="the unban")


async def test_a_user_id_with_a_trailing_newline_is_refused_and_bans_no_one(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await api.post("victim", "k1")
    before = await board_state(redis_client, api.keys)
    response = await moderate(api, "victim%0a")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await board_state(redis_client, api.keys) == before
    assert await redis_client.hlen(api.keys.banned) == 0
    rank = await api.http.get("/api/users/victim%0a/rank")
    assert rank.status_code == 422


@pytest.mark.parametrize("query", ["limit=%C2%B2", "limit=%E2%91%A0", "offset=" + "9" * 5000])
async def test_unicode_or_huge_numbers_in_the_query_are_422_not_500(api: Api, query: str) -> None:
    response = await api.http.get(f"/api/score-board?{query}")
    assert response.status_code == 422
    assert response.json()["type"].endswith("invalid-parameter")
    around = await api.http.get("/api/users/victim/rank?around=%C2%B2")
    assert around.status_code == 422
