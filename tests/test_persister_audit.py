"""The audit trail in PostgreSQL: who, from where, with which token; bans with their author,
reflected in users, rebuilt and reconciled."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
import redis.asyncio
from jose import jws

from devstack.devtoken import issue
from services.persister.batch import EventRow, ban_states
from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from services.persister.worker import Persister
from services.score_api.tokens import SCOPE_ADMIN
from tests.persister_fixtures import Api, drain, open_worker, redis_scores, running_api


def row(event_id: str, stream_id: str, type_: str, user: str = "u") -> EventRow:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return EventRow(event_id, stream_id, 0, type_, user, user, type_, 0, 0, "", "", at)


def test_the_newest_inserted_moderation_event_decides() -> None:
    rows = [
        row("a", "5-0", "ban"),
        row("b", "7-0", "unban"),
        row("c", "6-0", "ban"),
        row("d", "9-0", "ban", "v"),
        row("e", "8-0", "score", "w"),
    ]
    states = ban_states(rows, inserted={"a", "b", "c", "e"})
    assert [(s.user_id, s.banned) for s in states] == [("u", False)]


@pytest.fixture
async def setup(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[tuple[Api, Persister, PersisterSettings]]:
    await migrate(database_url)
    async with (
        running_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        settings = PersisterSettings(
            redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
        )
        yield api, worker, settings


async def moderate(api: Api, user: str, op: str) -> None:
    headers = {"Authorization": f"Bearer {issue(api.settings, 'mod', scopes=(SCOPE_ADMIN,))}"}
    if op == "ban":
        response = await api.http.delete(f"/api/admin/users/{user}", headers=headers)
    else:
        response = await api.http.post(f"/api/admin/users/{user}/unban", headers=headers)
    assert response.status_code == 200


async def users(database_url: str) -> dict[str, tuple[int, bool]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT user_id, score, banned FROM users")
    finally:
        await conn.close()
    return {r["user_id"]: (r["score"], r["banned"]) for r in rows}


async def test_ban_and_unban_are_recorded_with_their_author_and_reconcile_clean(
    setup: tuple[Api, Persister, PersisterSettings], database_url: str
) -> None:
    api, worker, settings = setup
    await api.load(12, users=3)
    await moderate(api, "u1", "ban")
    await moderate(api, "never-scored", "ban")
    await drain(worker)
    state = await users(database_url)
    assert state["u1"][1] is True
    assert state["never-scored"] == (0, True)
    assert state["u0"][1] is False
    conn = await asyncpg.connect(database_url)
    try:
        bans = await conn.fetch(
            "SELECT user_id, moderator, points, score_after FROM score_events"
            " WHERE type = 'ban' ORDER BY user_id"
        )
    finally:
        await conn.close()
    assert [(r["user_id"], r["moderator"], r["points"]) for r in bans] == [
        ("never-scored", "mod", 0),
        ("u1", "mod", 0),
    ]
    assert bans[1]["score_after"] == state["u1"][0]
    assert await reconcile(settings, out=io.StringIO()) == []
    await moderate(api, "u1", "unban")
    await drain(worker)
    assert (await users(database_url))["u1"][1] is False
    assert await reconcile(settings, out=io.StringIO()) == []


async def test_rebuild_keeps_banned_users_off_the_board_and_unban_restores_them(
    setup: tuple[Api, Persister, PersisterSettings],
    redis_client: redis.asyncio.Redis,
) -> None:
    api, worker, settings = setup
    await api.load(12, users=3)
    await moderate(api, "u2", "ban")
    await drain(worker)
    board_before = await redis_scores(redis_client, api.keys)
    banned_before = await redis_client.hgetall(api.keys.banned)
    keys = api.keys
    await redis_client.delete(keys.board, keys.members, keys.names, keys.banned, keys.seq)
    await rebuild(settings, out=io.StringIO())
    assert await redis_scores(redis_client, keys) == board_before
    assert await redis_client.hgetall(keys.banned) == banned_before
    refused = await api.post("u2")
    assert refused is not None
    assert refused.status_code == 403  # still banned after the rebuild
    await moderate(api, "u2", "unban")
    assert "u2" in await redis_scores(redis_client, keys)


async def test_accepted_updates_are_stored_with_their_audit_fields(
    setup: tuple[Api, Persister, PersisterSettings], database_url: str
) -> None:
    api, worker, _ = setup
    claims = {
        "sub": "alice",
        "iat": int(time.time()),
        "exp": int(time.time()) + 600,
        "scope": "score:write",
        "jti": "tok-1",
        "iss": "https://id.example",
    }
    token = jws.sign(orjson.dumps(claims), api.settings.jwt_secret, algorithm="HS256")
    headers = {
        "Authorization": f"Bearer {token}",
        "Idempotency-Key": "audit-1",
        "User-Agent": "game-client/2.3 " + "x" * 400,
        "X-Request-ID": "req-audit-1",
    }
    response = await api.http.post("/api/score", json={"action": "quest_complete"}, headers=headers)
    assert response.status_code == 200
    await drain(worker)
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT * FROM score_events WHERE event_id = $1", response.json()["event_id"]
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["client_ip"], row["jti"], row["iss"], row["request_id"]) == (
        "127.0.0.1",
        "tok-1",
        "https://id.example",
        "req-audit-1",
    )
    assert row["user_agent"].startswith("game-client/2.3 ")
    assert len(row["user_agent"]) == 256  # truncated
    assert row["created_at"] is not None
