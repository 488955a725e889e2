"""Trusted reporters (score:report): server-authoritative awards to named users, their audit
rows in PostgreSQL, their own limit, and PLAYER_WRITES=false."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio

from services.persister.migrate import migrate
from services.score_api.tokens import SCOPE_REPORT, SCOPE_WRITE
from shared.formats import Field
from tests.persister_fixtures import drain, open_worker
from tests.support import board_state, stream_events
from tests.test_score_api import Api, running_api

ACTIONS: dict[str, Any] = {
    "match_win": {"points": 20, "mode": "server"},
    "quest": {"points": 10, "mode": "ticket", "max_seconds": 60},
    "login": {"points": 5, "mode": "client", "max_per_day": 1},
}


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, actions=ACTIONS
    ) as running:
        yield running


async def report(
    api: Api, key: str, body: dict[str, Any], sub: str = "game-1", scopes: tuple[str, ...] = ()
) -> httpx.Response:
    token = api.token(sub, scopes=scopes or (SCOPE_REPORT,))
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    return await api.http.post("/api/score", json=body, headers=headers)


async def board(api: Api) -> list[tuple[str, str, int]]:
    rows = (await api.http.get("/api/score-board")).json()["board"]
    return [(r["user_id"], r["name"], r["score"]) for r in rows]


async def test_a_reporter_awards_any_action_to_the_user_it_names(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    named = await report(api, "r1", {"action": "match_win", "user_id": "alice", "name": "Alice"})
    assert named.status_code == 200, named.text
    assert (named.json()["user_id"], named.json()["score"]) == ("alice", 20)
    # Without a name the stored one stays; a new user is shown by their id.
    await report(api, "r2", {"action": "match_win", "user_id": "alice"})
    await report(api, "r3", {"action": "quest", "user_id": "bob"})  # the witness: no ticket
    assert await board(api) == [("alice", "Alice", 40), ("bob", "bob", 10)]
    events = await stream_events(redis_client, api.keys.stream)
    assert [e[Field.REPORTER] for e in events] == ["game-1"] * 3
    assert Field.TICKET not in events[2]
    # Per-user rules still hold for a reporter: the daily cap, and idempotency per user.
    assert (await report(api, "r4", {"action": "login", "user_id": "bob"})).status_code == 200
    capped = await report(api, "r5", {"action": "login", "user_id": "bob"})
    assert capped.status_code == 429
    assert capped.json()["type"].endswith("daily-cap")
    replay = await report(api, "r1", {"action": "match_win", "user_id": "alice"})
    assert replay.json()["duplicate"] is True


async def test_only_a_reporter_may_name_a_user_and_a_reporter_must(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    before = await board_state(redis_client, api.keys)
    cases = [
        # A player's token naming someone (themself included): 403, naming the scope needed.
        ((SCOPE_WRITE,), "alice", {"action": "match_win", "user_id": "bob"}, 403),
        ((SCOPE_WRITE,), "alice", {"action": "login", "user_id": "alice"}, 403),
        # A reporter's token that names no one is not a player's token.
        ((SCOPE_REPORT,), "game-1", {"action": "login"}, 403),
        # A reporter's body with a bad user or name, or player fields mixed in.
        ((SCOPE_REPORT,), "game-1", {"action": "match_win", "user_id": "bob\n"}, 422),
        (
            (SCOPE_REPORT,),
            "game-1",
            {"action": "match_win", "user_id": "bob", "name": "\u3164"},
            422,
        ),
        ((SCOPE_REPORT,), "game-1", {"action": "quest", "user_id": "bob", "ticket": "0" * 32}, 422),
        ((SCOPE_REPORT,), "game-1", {"action": "nope", "user_id": "bob"}, 422),
        # Neither scope at all.
        (("score:admin",), "mod", {"action": "match_win", "user_id": "bob"}, 403),
    ]
    for i, (scopes, sub, body, status) in enumerate(cases):
        refused = await report(api, f"x{i}", body, sub=sub, scopes=scopes)
        assert refused.status_code == status, (body, refused.text)
        if status == 403:
            assert refused.headers["www-authenticate"].startswith('Bearer error="insufficient')
    assert await board_state(redis_client, api.keys) == before


async def test_a_reporter_counts_against_its_own_limit_not_its_address(
    redis_url: str, key_prefix: str
) -> None:
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        actions=ACTIONS,
        rate_limit_ip_per_second=1,
        rate_limit_reporter_per_second=3,
    ) as api:
        statuses = [
            (await report(api, f"k{i}", {"action": "match_win", "user_id": f"u{i}"})).status_code
            for i in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = await report(api, "k9", {"action": "match_win", "user_id": "u9"})
        assert limited.headers["ratelimit"].startswith('"reporter-second";r=0;')
        assert '"reporter-second";q=3;w=1' in limited.headers["ratelimit-policy"]
        # Another reporter from the same address has its own allowance.
        other = await report(api, "k1", {"action": "match_win", "user_id": "u1"}, sub="game-2")
        assert other.status_code == 200


async def test_player_writes_off_leaves_only_reporters(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, actions=ACTIONS, player_writes=False
    ) as api:
        player = {"Authorization": f"Bearer {api.token('alice')}", "Idempotency-Key": "p1"}
        before = await board_state(redis_client, api.keys)
        for path, body in (
            ("/api/score", {"action": "login"}),
            ("/api/actions", {"action": "quest"}),
        ):
            refused = await api.http.post(path, json=body, headers=player)
            assert refused.status_code == 403, path
            assert refused.json()["type"].endswith("player-writes-off")
        assert await board_state(redis_client, api.keys) == before
        assert (await api.http.get("/config.json")).json()["player_writes"] is False
        assert (await api.http.get("/api/actions")).json()["player_writes"] is False
        reported = await report(api, "r1", {"action": "login", "user_id": "alice"})
        assert reported.status_code == 200


async def test_reporter_and_ticket_awards_reach_the_audit_trail(
    redis_url: str, database_url: str, key_prefix: str
) -> None:
    await migrate(database_url)
    async with (
        running_api(
            redis_url=redis_url,
            redis_key_prefix=key_prefix,
            actions=ACTIONS,
        ) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        reported = await report(api, "r1", {"action": "match_win", "user_id": "alice"})
        token = {"Authorization": f"Bearer {api.token('bob')}"}
        ticket = await api.http.post("/api/actions", json={"action": "quest"}, headers=token)
        completed = await api.http.post(
            "/api/score",
            json={"action": "quest", "ticket": ticket.json()["ticket"]},
            headers=token | {"Idempotency-Key": "b1"},
        )
        assert (reported.status_code, completed.status_code) == (200, 200)
        await drain(worker)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT user_id, action, reporter, ticket, duration_ms FROM score_events"
            " WHERE event_id = ANY($1::text[]) ORDER BY user_id",
            [reported.json()["event_id"], completed.json()["event_id"]],
        )
    finally:
        await conn.close()
    assert [tuple(r.values())[:4] for r in rows] == [
        ("alice", "match_win", "game-1", None),
        ("bob", "quest", None, ticket.json()["ticket"]),
    ]
    assert rows[0]["duration_ms"] is None
    assert 0 <= rows[1]["duration_ms"] < 5000
