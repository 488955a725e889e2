"""The audit trail in PostgreSQL: who, from where, with which token; bans with their author,
reflected in users, rebuilt and reconciled; the proof of action (ticket, duration, reporter)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio
from jose import jws

from devstack.devtoken import issue
from services.persister.batch import EventRow, moderation_states
from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from services.persister.worker import Persister
from services.score_api.tokens import SCOPE_ADMIN
from shared.formats import EVENT_VERSION, EventType, Field
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
    states = moderation_states(rows, inserted={"a", "b", "c", "e"})
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


TICKET = "5f0c2a9be13d4f7a8c6b0e1d2f3a4b5c"


def score_event(event_id: str, seq: int, **extras: str) -> dict[str, str]:
    """A version-1 score event (shared.events) as the score API's script appends it."""
    return {
        Field.VERSION: EVENT_VERSION,
        Field.TYPE: EventType.SCORE,
        Field.EVENT_ID: event_id,
        Field.USER_ID: "player-1",
        Field.NAME: "Player One",
        Field.ACTION: "match_win",
        Field.POINTS: "20",
        Field.SCORE: str(20 * seq),
        Field.SEQ: str(seq),
        Field.IDEMPOTENCY_KEY: f"key-{event_id}",
        Field.TS: str(1_700_000_000_000 + seq),
        Field.CLIENT_IP: "10.1.2.3",
    } | extras


async def proof_columns(database_url: str) -> dict[str, tuple[Any, ...]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT event_id, ticket, duration_ms, reporter FROM score_events")
    finally:
        await conn.close()
    return {r["event_id"]: (r["ticket"], r["duration_ms"], r["reporter"]) for r in rows}


# The score API does not write these fields yet, so the events go straight onto the stream the
# worker reads, next to an old-style event written before tickets existed.
async def test_the_proof_of_action_is_stored_and_old_events_have_none(
    redis_url: str, database_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    await migrate(database_url)
    async with open_worker(redis_url, database_url, key_prefix) as worker:
        await redis_client.xadd(worker.stream, score_event("old0001", 1))  # type: ignore[arg-type]
        proof = {Field.TICKET: TICKET, Field.DURATION_MS: "45250", Field.REPORTER: "game-eu-1"}
        await redis_client.xadd(worker.stream, score_event("poa0001", 2, **proof))  # type: ignore[arg-type]
        await drain(worker)
    assert await proof_columns(database_url) == {
        "old0001": (None, None, None),
        "poa0001": (TICKET, 45250, "game-eu-1"),
    }


async def test_a_bad_duration_is_dead_lettered_and_its_batch_is_stored(
    redis_url: str, database_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    await migrate(database_url)
    async with open_worker(redis_url, database_url, key_prefix, persister_max_attempts=1) as worker:
        for seq, duration in enumerate(["10", "-10", "\u0661\u0662", "20"], start=1):
            event = score_event(f"dur{seq:04d}", seq, **{Field.DURATION_MS: duration})
            await redis_client.xadd(worker.stream, event)  # type: ignore[arg-type]
        await drain(worker)
        dead: Any = await redis_client.xrange(worker.keys.dead_letters)
        assert (await redis_client.xpending(worker.stream, worker.group))["pending"] == 0
    assert [fields[Field.EVENT_ID.encode()] for _, fields in dead] == [b"dur0002", b"dur0003"]
    assert all(b"duration_ms" in fields[b"dead_error"] for _, fields in dead)
    stored = await proof_columns(database_url)
    assert {k: v[1] for k, v in stored.items()} == {"dur0001": 10, "dur0004": 20}
