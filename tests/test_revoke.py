"""Revocation end to end: a real API, a persister process, Redis and PostgreSQL. A range that
spans the all-time board, two periodic boards and an archived period; the tie-break moves
to the last remaining event; idempotent per id; reconcile passes; live boards follow."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio

from services.persister.migrate import migrate
from services.persister.reconcile import reconcile
from services.score_api import revocations
from services.score_api.store import ScoreStore
from services.score_api.tickets import rfc3339
from services.score_api.tokens import SCOPE_ADMIN
from shared.periods import Schedule
from shared.settings import SharedSettings
from tests.gateway_fixtures import Follower, run_gateway
from tests.gateway_fixtures import wait_until as wait_for
from tests.persister_fixtures import persisters, wait_until
from tests.support import board_state, stream_events
from tests.test_score_api import Api, running_api

BOARDS: dict[str, Any] = {
    "all-time": {"reset": "never"},
    "daily": {"reset": "daily"},
    "tens": {"reset": "interval", "interval_seconds": 10},
}
TENS = Schedule("interval", interval_seconds=10)


def admin(api: Api, scopes: tuple[str, ...] = (SCOPE_ADMIN,)) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token('moderator', scopes=scopes)}"}


async def revoke(api: Api, user: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = admin(api) | ({"Idempotency-Key": key} if key else {})
    return await api.http.post(f"/api/admin/users/{user}/revoke", json=body, headers=headers)


async def ranks(api: Api, board: str = "all-time", period: str = "") -> list[tuple[str, int]]:
    query = {"board": board} | ({"period": period} if period else {})
    rows = (await api.http.get("/api/score-board", params=query)).json()["board"]
    return [(row["user_id"], row["score"]) for row in rows]


async def last_ts(client: redis.asyncio.Redis, api: Api) -> int:
    return int((await stream_events(client, api.keys.stream))[-1]["ts"])


async def persisted(client: redis.asyncio.Redis, api: Api) -> bool:
    """Every entry of the stream committed by the persisters."""
    try:
        groups = await client.xinfo_groups(api.keys.stream)
        pending = await client.xpending(api.keys.stream, "persister")
    except redis.ResponseError:
        return False
    return bool(groups) and groups[0]["lag"] == 0 and pending["pending"] == 0


@pytest.fixture
async def stack(
    tmp_path: Path, redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[Api]:
    await migrate(database_url)
    env = {"BOARDS": json.dumps(BOARDS), "BOARD_RETENTION_PERIODS": "2"}
    async with (
        running_api(
            redis_url=redis_url,
            redis_key_prefix=key_prefix,
            database_url=database_url,
            boards=BOARDS,
        ) as api,
        persisters(tmp_path, redis_url, database_url, key_prefix, **env) as spawn,
    ):
        spawn("p1")
        yield api


async def test_a_revocation_over_two_boards_and_an_archived_period(
    stack: Api, redis_client: redis.asyncio.Redis, database_url: str, redis_url: str
) -> None:
    api = stack
    # Start right after a tens boundary, so the first three awards share a period.
    seconds, _ = await redis_client.time()
    await asyncio.sleep(10 - seconds % 10 + 0.05)
    assert (await api.post("che", "e1")).status_code == 200  # che 10, first
    assert (await api.post("hon", "h1")).status_code == 200  # hon 10, after che's first
    assert (await api.post("che", "e2")).status_code == 200  # che 20
    since = await last_ts(redis_client, api)
    first = (await api.post("che", "e2b")).json()["boards"][2]["period"]  # che 30, same period
    # The next tens period: che's last award lands there.
    period = TENS.named(first)
    seconds, micros = await redis_client.time()
    await asyncio.sleep(max(0.0, ((period.end_ms or 0) - seconds * 1000 - micros / 1000) / 1000))
    third = await api.post("che", "e3")
    second = third.json()["boards"][2]["period"]
    day = third.json()["boards"][1]["period"]
    assert second != first
    until = await last_ts(redis_client, api) + 1
    assert await ranks(api) == [("che", 40), ("hon", 10)]

    conn = await asyncpg.connect(database_url)
    try:

        async def archived() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT 1 FROM board_periods_closed WHERE board_id = 'tens' AND period = $1",
                    first,
                )
            )

        await wait_until(archived, f"tens {first} archived", within=30)
        async with (
            run_gateway(redis_url, api.keys.prefix) as gateway,
            Follower(gateway.url) as live,
        ):
            await wait_for(lambda: [e.score for e in live.board] == [40, 10], what="live board")
            body = {"since": rfc3339(since), "until": rfc3339(until), "reason": "speed hack"}
            response = await revoke(api, "che", body, key="rev-1")
            assert response.status_code == 200, response.text
            result = response.json()
            # e2, e2b and e3: 30 points; che keeps the 10 of e1.
            assert {k: result[k] for k in ("events", "points", "score", "replayed")} == {
                "events": 3,
                "points": 30,
                "score": 10,
                "replayed": False,
            }
            assert result["revocation_id"] == "rev-1"
            assert result["boards"] == [
                {"board_id": "daily", "period": day, "points": 30},
                {"board_id": "tens", "period": first, "points": 20},
                {"board_id": "tens", "period": second, "points": 10},
            ]
            assert result["corrections"] == [{"board_id": "tens", "period": first, "points": 20}]
            # che reached 10 (e1) before hon did: the tie-break puts che first again.
            await wait_for(
                lambda: [(e.user_id, e.score) for e in live.board] == [("che", 10), ("hon", 10)],
                what="the revocation on the live board",
            )
        assert await ranks(api) == [("che", 10), ("hon", 10)]
        assert await ranks(api, "daily") == [("che", 10), ("hon", 10)]
        assert await ranks(api, "tens", first) == [("che", 10), ("hon", 10)]
        assert await ranks(api, "tens", second) == []

        # The same id again: the answer it gave, and nothing changes.
        before = await board_state(redis_client, api.keys)
        again = await revoke(api, "che", body, key="rev-1")
        assert again.status_code == 200
        assert again.json() | {"replayed": False} == result
        assert again.json()["replayed"] is True
        after = await board_state(redis_client, api.keys)
        assert {k: v for k, v in after.items() if k != "stream"} == {
            k: v for k, v in before.items() if k != "stream"
        }
        conflict = await revoke(api, "che", body | {"since": rfc3339(since - 1)}, key="rev-1")
        assert conflict.status_code == 409
        # An overlapping revocation finds nothing left to revoke.
        overlap = await revoke(api, "che", body, key="rev-2")
        assert (overlap.json()["events"], overlap.json()["score"]) == (0, 10)

        # PostgreSQL keeps every event, marked, and the revocation with its moderator.
        revoked = await conn.fetch(
            "SELECT idempotency_key FROM score_events WHERE revoked_by = 'rev-1' ORDER BY seq"
        )
        assert [r["idempotency_key"] for r in revoked] == ["e2", "e2b", "e3"]
        row = await conn.fetchrow("SELECT * FROM revocations WHERE revocation_id = 'rev-1'")
        assert (row["moderator"], row["reason"], row["points"]) == ("moderator", "speed hack", 30)
        assert row["applied_at"] is not None
        assert await conn.fetchval("SELECT score FROM users WHERE user_id = 'che'") == 10
        corrections = await conn.fetch("SELECT * FROM archive_corrections")
        assert [(c["board_id"], c["period"], c["points"]) for c in corrections] == [
            ("tens", first, 20)
        ]
        archived_score = await conn.fetchval(
            "SELECT score FROM board_archives WHERE board_id = 'tens' AND period = $1"
            " AND user_id = 'che'",
            first,
        )
        assert archived_score == 30  # never rewritten
        await wait_until(lambda: persisted(redis_client, api), "the revoke events persisted")
        audit = await conn.fetch(
            "SELECT type, moderator, reason, revocation FROM score_events"
            " WHERE type = 'revoke' ORDER BY stream_id"
        )
        assert tuple(audit[0].values()) == (
            "revoke",
            "moderator",
            "speed hack",
            "rev-1",
        )
    finally:
        await conn.close()
    settings = SharedSettings(
        redis_url=redis_url,
        database_url=database_url,
        redis_key_prefix=api.keys.prefix,
        boards=BOARDS,
    )
    assert await reconcile(settings, out=io.StringIO()) == []


async def test_revoking_a_quarantined_users_latest_points_keeps_them_hidden(
    stack: Api, redis_client: redis.asyncio.Redis
) -> None:
    api = stack
    await api.post("hon", "h1")
    await api.post("che", "e1")
    since = await last_ts(redis_client, api) + 1
    await asyncio.sleep(0.01)
    await api.post("che", "e2")
    await api.http.post(
        "/api/admin/users/che/quarantine", json={"reason": "suspect"}, headers=admin(api)
    )
    body = {"since": rfc3339(since), "until": rfc3339(since + 3_600_000), "reason": "cheat"}
    response = await revoke(api, "che", body)
    assert (response.json()["points"], response.json()["score"]) == (10, 10)
    assert await ranks(api) == [("hon", 10)]
    me = await api.http.get("/api/me", headers={"Authorization": f"Bearer {api.token('che')}"})
    assert (me.json()["score"], me.json()["rank"]) == (10, 2)  # reached 10 after hon


async def test_a_revocation_redis_never_applied_is_applied_before_the_next(
    stack: Api, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    """Redis failed after PostgreSQL committed (simulated: recorded, never applied): the
    user's next revocation applies it first, with its own reason."""
    api = stack
    await api.post("che", "e1")
    first = await last_ts(redis_client, api)
    await api.post("che", "e2")
    second = await last_ts(redis_client, api)
    await wait_until(lambda: persisted(redis_client, api), "the awards persisted")
    seq, _ = await ScoreStore(redis_client, api.keys, 60).position()
    conn = await asyncpg.connect(database_url)
    try:
        await revocations.record(
            conn, "lost", "che", first, first + 1, seq, "first strike", "m1", None
        )
        body = {"since": rfc3339(second), "until": rfc3339(second + 1), "reason": "second"}
        response = await revoke(api, "che", body, key="next")
        assert (response.json()["points"], response.json()["score"]) == (10, 0)
        applied = await conn.fetchval(
            "SELECT count(*) FROM revocations WHERE applied_at IS NOT NULL"
        )
        assert applied == 2
    finally:
        await conn.close()
    assert await ranks(api) == []
    events = [
        e for e in await stream_events(redis_client, api.keys.stream) if e["type"] == "revoke"
    ]
    assert [(e["revocation"], e["reason"]) for e in events] == [
        ("lost", "first strike"),
        ("next", "second"),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z"},
        {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z", "reason": "r"},
        {"since": "2026-12-01T00:00:00Z", "until": "2026-12-01T00:00:00Z", "reason": "r"},
        {"since": "2026-12-01", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": "2026-12-01T00:00:00", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": "2026-13-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": "1969-12-31T23:59:59Z", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": 0, "until": 1, "reason": "r"},
        {"since": "٢٠٢٦-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": "2026-12-01T00:00:00Z\n", "until": "2026-12-02T00:00:00Z", "reason": "r"},
        {"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "reason": ""},
        {"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z", "reason": "r", "x": 1},
        ["since", "until", "reason"],
    ],
)
async def test_a_hostile_revocation_is_422_and_changes_nothing(
    stack: Api, redis_client: redis.asyncio.Redis, body: Any
) -> None:
    api = stack
    await api.post("che", "e1")
    before = await board_state(redis_client, api.keys)
    response = await revoke(api, "che", body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await board_state(redis_client, api.keys) == before


async def test_revocation_refusals_change_nothing(
    stack: Api, redis_client: redis.asyncio.Redis
) -> None:
    api = stack
    await api.post("che", "e1")
    before = await board_state(redis_client, api.keys)
    body = {"since": "2026-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z", "reason": "r"}
    assert (await api.http.post("/api/admin/users/che/revoke", json=body)).status_code == 401
    player = admin(api, ("score:write",))
    url = "/api/admin/users/che/revoke"
    assert (await api.http.post(url, json=body, headers=player)).status_code == 403
    assert (await revoke(api, "che", body, key="bad key!")).status_code == 400
    assert (await revoke(api, "ch%0Ae", body)).status_code == 422
    assert await board_state(redis_client, api.keys) == before


async def test_without_the_persisters_or_postgresql_a_revocation_is_503_and_changes_nothing(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis, database_url: str
) -> None:
    await migrate(database_url)
    body = {"since": "2026-01-01T00:00:00Z", "until": "2030-01-01T00:00:00Z", "reason": "r"}
    settings: dict[str, Any] = {
        "redis_url": redis_url,
        "redis_key_prefix": key_prefix,
        "boards": BOARDS,
    }
    async with running_api(database_url=database_url, revoke_wait_seconds=0.2, **settings) as api:
        await api.post("che", "e1")  # no persister: never stored
        before = await board_state(redis_client, api.keys)
        response = await revoke(api, "che", body)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert await board_state(redis_client, api.keys) == before
    await redis_client.delete(api.keys.stream)  # nothing to wait for: PostgreSQL is next
    async with running_api(database_url="postgresql://postgres@127.0.0.1:9/x", **settings) as api:
        response = await revoke(api, "che", body)
        assert response.status_code == 503
        assert response.json()["type"].endswith("unavailable")
