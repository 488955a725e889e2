"""Quarantine (a shadow ban) over HTTP and the WebSocket, on every board of the default family:
others never see the user, the user sees themself, and a release restores them exactly."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio

from services.score_api.store import ScoreStore
from services.score_api.tokens import SCOPE_ADMIN
from shared.boards import DEFAULT_BOARDS
from shared.formats import encode_member
from shared.keys import BoardKeys
from tests.gateway_fixtures import Follower, run_gateway, wait_until
from tests.support import board_state, stream_events
from tests.test_score_api import Api, running_api

BOARDS = ("all-time", "weekly", "daily")


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    boards = {name: dict(spec) for name, spec in DEFAULT_BOARDS.items()}
    async with running_api(redis_url=redis_url, redis_key_prefix=key_prefix, boards=boards) as a:
        yield a


def admin(api: Api, scopes: tuple[str, ...] = (SCOPE_ADMIN,)) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token('moderator', scopes=scopes)}"}


async def act(api: Api, user: str, action: str, reason: Any = "farming bot") -> httpx.Response:
    body = {} if reason is None else {"reason": reason}
    return await api.http.post(f"/api/admin/users/{user}/{action}", json=body, headers=admin(api))


async def board(api: Api, board_id: str = "all-time") -> list[tuple[int, str, int]]:
    rows = (await api.http.get(f"/api/score-board?board={board_id}")).json()["board"]
    return [(row["rank"], row["user_id"], row["score"]) for row in rows]


async def me(api: Api, user: str, board_id: str = "all-time") -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.token(user)}"}
    return await api.http.get(f"/api/me?board={board_id}", headers=headers)


async def sorted_sets(client: redis.asyncio.Redis, api: Api) -> dict[str, Any]:
    """Every public and hidden sorted set, members and scores (for exact comparisons)."""
    out = {}
    async for key in client.scan_iter(match=f"{api.keys.tag}:*", count=1000):
        if await client.type(key) == b"zset":
            out[key.decode()] = await client.zrange(key, 0, -1, withscores=True)
    return out


async def seed(api: Api) -> None:
    assert (await api.post("cheat", "k1", "achievement_unlocked")).status_code == 200  # 50
    assert (await api.post("bea", "k1")).status_code == 200  # 10
    assert (await api.post("cal", "k1")).status_code == 200  # 10, after bea


async def test_others_never_see_a_quarantined_user_and_the_user_sees_themself(api: Api) -> None:
    await seed(api)
    response = await act(api, "cheat", "quarantine")
    assert response.json() == {
        "user_id": "cheat",
        "status": "quarantined",
        "changed": True,
        "score": 50,
    }
    for board_id in BOARDS:
        assert await board(api, board_id) == [(1, "bea", 10), (2, "cal", 10)], board_id
        page = (await api.http.get(f"/api/score-board?board={board_id}")).json()
        assert page["total"] == 2
        assert (await api.http.get(f"/api/users/cheat/rank?board={board_id}")).status_code == 404
        around = (await api.http.get(f"/api/users/cal/rank?board={board_id}&around=5")).json()
        assert (around["rank"], [e["user_id"] for e in around["around"]]) == (2, ["bea"])
        own = (await me(api, "cheat", board_id)).json()
        assert (own["user_id"], own["score"], own["rank"], own["board_id"]) == (
            "cheat",
            50,
            1,
            board_id,
        )
        assert (await me(api, "bea", board_id)).json()["rank"] == 1

    # Their writes are still accepted and answered as if nothing had changed.
    award = await api.post("cheat", "k2")
    assert award.status_code == 200
    assert (award.json()["score"], award.json()["rank"]) == (60, 1)
    assert [(b["board_id"], b["score"], b["rank"]) for b in award.json()["boards"]] == [
        ("all-time", 60, 1),
        ("weekly", 60, 1),
        ("daily", 60, 1),
    ]
    assert (await me(api, "cheat")).json()["score"] == 60
    for board_id in BOARDS:
        assert await board(api, board_id) == [(1, "bea", 10), (2, "cal", 10)]


async def test_the_would_be_rank_counts_ties_by_arrival(api: Api) -> None:
    await seed(api)
    await act(api, "cal", "quarantine")
    # cal has 10 like bea but arrived later: their would-be rank is 3, behind cheat and bea.
    assert (await me(api, "cal")).json()["rank"] == 3
    assert await board(api) == [(1, "cheat", 50), (2, "bea", 10)]
    assert (await api.post("cal", "k2")).json()["rank"] == 2  # 20 now: ahead of bea


async def test_release_restores_every_board_exactly(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await seed(api)
    before = await sorted_sets(redis_client, api)
    state = await board_state(redis_client, api.keys)
    await act(api, "cheat", "quarantine")
    assert await sorted_sets(redis_client, api) != before
    response = await act(api, "cheat", "release", "appeal upheld")
    assert response.json() == {"user_id": "cheat", "status": "active", "changed": True, "score": 50}
    assert await sorted_sets(redis_client, api) == before
    after = await board_state(redis_client, api.keys)
    assert {k: v for k, v in after.items() if k != "stream"} == {
        k: v for k, v in state.items() if k != "stream"
    }
    for board_id in BOARDS:
        assert await board(api, board_id) == [(1, "cheat", 50), (2, "bea", 10), (3, "cal", 10)]
    # Repeating either is harmless.
    assert (await act(api, "cheat", "release")).json()["changed"] is False
    assert (await act(api, "bea", "release")).json()["changed"] is False


async def test_points_scored_in_quarantine_stay_after_release(api: Api) -> None:
    await seed(api)
    await act(api, "bea", "quarantine")
    await api.post("bea", "k2")  # 20, hidden
    assert await board(api) == [(1, "cheat", 50), (2, "cal", 10)]
    await act(api, "bea", "release")
    for board_id in BOARDS:
        assert await board(api, board_id) == [(1, "cheat", 50), (2, "bea", 20), (3, "cal", 10)]


async def test_every_action_is_an_audited_stream_event(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await seed(api)
    await act(api, "cheat", "quarantine", "bot-like timing")
    await act(api, "cheat", "release", "false positive")
    events = (await stream_events(redis_client, api.keys.stream))[-2:]
    assert [
        {k: e.get(k) for k in ("type", "user_id", "by", "reason", "score")} for e in events
    ] == [
        {
            "type": "quarantine",
            "user_id": "cheat",
            "by": "moderator",
            "reason": "bot-like timing",
            "score": "50",
        },
        {
            "type": "release",
            "user_id": "cheat",
            "by": "moderator",
            "reason": "false positive",
            "score": "50",
        },
    ]
    assert all(e["request_id"] for e in events)


async def test_a_ban_supersedes_a_quarantine_and_a_quarantine_never_undoes_a_ban(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await seed(api)
    await act(api, "cheat", "quarantine")
    banned = await act(api, "cheat", "ban", "confirmed cheat")
    assert banned.json() == {"user_id": "cheat", "status": "banned", "changed": True, "score": 50}
    assert await redis_client.hlen(api.keys.quarantined) == 0
    assert (await api.post("cheat", "k2")).status_code == 403
    assert (await me(api, "cheat")).status_code == 404
    before = await board_state(redis_client, api.keys)
    refused = await act(api, "cheat", "quarantine")
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("user-banned")
    assert (await board_state(redis_client, api.keys))["board"] == before["board"]
    await act(api, "cheat", "unban", "appeal")
    for board_id in BOARDS:
        assert await board(api, board_id) == [(1, "cheat", 50), (2, "bea", 10), (3, "cal", 10)]


async def test_a_user_quarantined_before_scoring_scores_out_of_sight(api: Api) -> None:
    await seed(api)
    assert (await act(api, "newbie", "quarantine")).json()["score"] is None
    # 50 like cheat, who came first: the rank they would have is 2.
    assert (await api.post("newbie", "k1", "achievement_unlocked")).json()["rank"] == 2
    assert await board(api) == [(1, "cheat", 50), (2, "bea", 10), (3, "cal", 10)]
    assert (await me(api, "newbie", "daily")).json()["rank"] == 2


async def test_live_boards_drop_a_quarantined_user_within_a_tick(api: Api, redis_url: str) -> None:
    await seed(api)
    async with (
        run_gateway(redis_url, api.keys.prefix) as gateway,
        Follower(gateway.url) as all_time,
        Follower(gateway.url + "?board=daily") as daily,
    ):

        async def both_show(users: list[str], what: str) -> None:
            for follower in (all_time, daily):
                await wait_until(
                    lambda f=follower: [e.user_id for e in f.board] == users,  # type: ignore[misc]
                    what=what,
                )

        await both_show(["cheat", "bea", "cal"], "seed")
        await act(api, "cheat", "quarantine")
        await both_show(["bea", "cal"], "quarantine")
        await api.post("cheat", "k2")  # scored out of sight: no frame shows them
        await act(api, "cheat", "release")
        await both_show(["cheat", "bea", "cal"], "release")
        assert (await board(api))[0] == (1, "cheat", 60)
        assert [e.score for e in all_time.board] == [60, 10, 10]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": ""},
        {"reason": "   "},
        {"reason": "x" * 501},
        {"reason": 5},
        {"reason": None},
        {"reason": "line\nbreak"},
        {"reason": "nul\x00"},
        {"reason": "bidi\u202e"},
        {"reason": "ok", "extra": 1},
        ["reason"],
        "reason",
    ],
)
async def test_a_hostile_reason_is_422_and_changes_nothing(
    api: Api, redis_client: redis.asyncio.Redis, body: Any
) -> None:
    await seed(api)
    before = await board_state(redis_client, api.keys)
    for action in ("quarantine", "release", "ban"):
        response = await api.http.post(
            f"/api/admin/users/cheat/{action}", json=body, headers=admin(api)
        )
        assert response.status_code == 422, (action, body)
        assert response.headers["content-type"] == "application/problem+json"
    assert await board_state(redis_client, api.keys) == before


async def test_quarantine_needs_the_admin_scope_a_valid_user_and_a_json_body(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    await seed(api)
    before = await board_state(redis_client, api.keys)
    url = "/api/admin/users/cheat/quarantine"
    body = {"reason": "r"}
    assert (await api.http.post(url, json=body)).status_code == 401
    player = admin(api, ("score:write",))
    assert (await api.http.post(url, json=body, headers=player)).status_code == 403
    bad_user = await api.http.post(
        "/api/admin/users/che%0Aat/quarantine", json=body, headers=admin(api)
    )
    assert bad_user.status_code == 422
    broken = await api.http.post(url, content=b"{not json", headers=admin(api))
    assert broken.status_code == 415  # not declared JSON
    json_type = admin(api) | {"Content-Type": "application/json"}
    assert (await api.http.post(url, content=b"{not json", headers=json_type)).status_code == 422
    huge = await api.http.post(url, content=b"{" + b" " * 20_000 + b"}", headers=admin(api))
    assert huge.status_code == 413
    assert await board_state(redis_client, api.keys) == before
    assert (await api.http.get("/api/me")).status_code == 401
    assert (await api.http.get("/api/me?board=nope", headers=admin(api))).status_code == 422
    assert (await api.http.get("/api/me", headers=admin(api))).status_code == 404  # no score


async def test_the_would_be_rank_equals_the_rank_the_entry_would_take(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    """standing.lua against ZRANK: random boards full of ties, every member hidden in turn."""
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 60)
    rng = random.Random(15)
    entries = {
        encode_member(seq, f"u{seq}"): -float(rng.choice([0, 10, 10, 20, 30, 30, 30]))
        for seq in rng.sample(range(1, 10_000), 120)
    }
    await redis_client.zadd(keys.board, entries)
    await redis_client.hset(keys.members, mapping={m.split(":")[1]: m for m in entries})
    for member, score in list(entries.items())[:60]:
        user = member.split(":")[1]
        expected = int(await redis_client.zrank(keys.board, member))  # type: ignore[arg-type]
        await redis_client.zrem(keys.board, member)
        await redis_client.zadd(keys.hidden_board, {member: score})
        found = await store.rank(user, 0, hidden=keys.hidden_board)
        assert found is not None
        assert found[0].rank == expected + 1
        assert await store.rank(user, 0) is None  # not on the public board
        await redis_client.zrem(keys.hidden_board, member)
        await redis_client.zadd(keys.board, {member: score})
