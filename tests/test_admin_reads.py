"""The admin reads (services.score_api.admin) over HTTP on the real Redis and PostgreSQL: the
flags and their dismissal, a user's moderation history and events; every hostile input a
4xx problem, PostgreSQL or Redis away a 503 that changed nothing."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio
from starlette.routing import Route

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.score_api.admin import AdminReads
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from services.score_api.tokens import SCOPE_ADMIN, SCOPE_WRITE
from shared.formats import encode_member
from shared.keys import BoardKeys
from tests.persister_fixtures import drain, open_worker
from tests.support import (
    admin_api_settings,
    free_port,
    serve,
    stream_events,
)

ROUTES = (
    ("/api/admin/flags", "list_flags", "GET"),
    ("/api/admin/flags/{flag_id}/dismiss", "dismiss_flag", "POST"),
    ("/api/admin/audit", "audit", "GET"),
    ("/api/admin/users/{user_id}/events", "user_events", "GET"),
)
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


@dataclass
class Admin:
    http: httpx.AsyncClient
    keys: BoardKeys
    settings: ApiSettings
    database_url: str

    def headers(
        self, sub: str = "moderator", scopes: tuple[str, ...] = (SCOPE_ADMIN,)
    ) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue(self.settings, sub, scopes=scopes)}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.headers(), **kwargs)

    async def dismiss(self, flag: int | str, body: Any = None, **kwargs: Any) -> httpx.Response:
        if body is None:
            body = {"reason": "an honest streak"}
        return await self.http.post(
            f"/api/admin/flags/{flag}/dismiss", json=body, headers=self.headers(), **kwargs
        )


@asynccontextmanager
async def running_admin(
    redis_url: str, key_prefix: str, database_url: str, **settings: Any
) -> AsyncIterator[Admin]:
    config = admin_api_settings(redis_url, key_prefix, database_url, **settings)
    async with (
        serve(create_app(config)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield Admin(http, BoardKeys(config.redis_key_prefix, config.board_id), config, database_url)


@pytest.fixture
async def admin(redis_url: str, key_prefix: str, database_url: str) -> AsyncIterator[Admin]:
    await migrate(database_url)
    async with running_admin(redis_url, key_prefix, database_url) as running:
        yield running


async def sql(admin: Admin, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(admin.database_url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def add_flag(
    admin: Admin,
    user: str,
    rule: str = "outlier",
    seen: datetime = T0,
    state: str = "open",
    observed: int = 2180,
) -> int:
    await sql(
        admin,
        "INSERT INTO users (user_id, name, score) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        user,
        f"Name of {user}",
        observed,
    )
    [row] = await sql(
        admin,
        "INSERT INTO user_flags (user_id, rule, window_seconds, observed, threshold, first_seen,"
        " last_seen, state) VALUES ($1, $2, 3600, $3, 1090, $4, $5, $6) RETURNING flag_id",
        user,
        rule,
        observed,
        seen - timedelta(minutes=5),
        seen,
        state,
    )
    return int(row["flag_id"])


async def add_event(admin: Admin, user: str, kind: str, created: datetime, **columns: Any) -> str:
    n = next(_ids)
    event_id = f"{n:032x}"
    values: dict[str, Any] = {
        "event_id": event_id,
        "stream_id": f"{n}-0",
        "seq": n if kind == "score" else 0,
        "type": kind,
        "user_id": user,
        "name": user,
        "action": "quest_complete" if kind == "score" else kind,
        "points": 10 if kind == "score" else 0,
        "score_after": 10 * n,
        "idempotency_key": f"k{n}" if kind == "score" else "",
        "client_ip": "192.0.2.7",
        "created_at": created,
    } | columns
    names = ", ".join(values)
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    insert = f"INSERT INTO score_events ({names}) VALUES ({marks})"  # noqa: S608 - our columns
    await sql(admin, insert, *values.values())
    return event_id


def is_problem(response: httpx.Response, status: int, slug: str | None = None) -> bool:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"].endswith(f":{slug}"), body
    return True


# ---- GET /api/admin/flags


async def test_open_flags_are_listed_newest_first_with_every_field(admin: Admin) -> None:
    older = await add_flag(admin, "cheater", seen=T0)
    newer = await add_flag(admin, "farmer", "points_per_hour", seen=T0 + timedelta(minutes=1))
    await add_flag(admin, "cleared", seen=T0 + timedelta(minutes=2), state="dismissed")
    response = await admin.get("/api/admin/flags")
    assert response.status_code == 200
    flags = response.json()["flags"]
    assert [f["flag_id"] for f in flags] == [newer, older]
    assert flags[1] == {
        "flag_id": older,
        "user_id": "cheater",
        "name": "Name of cheater",
        "rule": "outlier",
        "window_seconds": 3600,
        "observed": 2180,
        "threshold": 1090,
        "first_seen": "2026-11-30T11:55:00.000Z",
        "last_seen": "2026-11-30T12:00:00.000Z",
        "state": "open",
        "decided_by": None,
        "decided_at": None,
        "decision": None,
    }
    dismissed = (await admin.get("/api/admin/flags", params={"state": "dismissed"})).json()
    assert [f["user_id"] for f in dismissed["flags"]] == ["cleared"]
    assert (await admin.get("/api/admin/flags?state=actioned")).json() == {"flags": []}
    one = (await admin.get("/api/admin/flags?limit=1")).json()["flags"]
    assert [f["flag_id"] for f in one] == [newer]
    assert len((await admin.get("/api/admin/flags?limit=500")).json()["flags"]) == 2


@pytest.mark.parametrize(
    "query",
    [
        "state=bad",
        "state=",
        "state=OPEN",
        "state=open%00",
        "state=open'%20OR%201=1--",
        "limit=0",
        "limit=-1",
        "limit=501",
        "limit=1000000000",
        "limit=1e3",
        "limit=",
        "limit=%C2%B2",
        "limit=" + "9" * 5000,
        "limit=10.0",
    ],
)
async def test_hostile_flag_queries_are_422_problems(admin: Admin, query: str) -> None:
    assert is_problem(await admin.get(f"/api/admin/flags?{query}"), 422, "invalid-parameter")


# ---- every endpoint: token and scope


def endpoint_calls(flag: int) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/api/admin/flags", {}),
        ("POST", f"/api/admin/flags/{flag}/dismiss", {"json": {"reason": "why"}}),
        ("GET", "/api/admin/audit?user_id=cheater", {}),
        ("GET", "/api/admin/users/cheater/events", {}),
    ]


async def test_every_admin_read_needs_a_token_with_the_admin_scope(
    admin: Admin, redis_client: redis.asyncio.Redis
) -> None:
    flag = await add_flag(admin, "cheater")
    player = admin.headers("cheater", scopes=(SCOPE_WRITE,))
    for method, path, kwargs in endpoint_calls(flag):
        assert is_problem(await admin.http.request(method, path, **kwargs), 401, "invalid-token")
        bad = {"Authorization": "Bearer not-a-token"}
        assert is_problem(await admin.http.request(method, path, headers=bad, **kwargs), 401)
        forbidden = await admin.http.request(method, path, headers=player, **kwargs)
        assert is_problem(forbidden, 403, "insufficient-scope")
    assert [r["state"] for r in await sql(admin, "SELECT state FROM user_flags")] == ["open"]
    assert await redis_client.exists(admin.keys.stream) == 0


# ---- POST /api/admin/flags/{flag_id}/dismiss


async def test_a_dismissal_closes_the_flag_and_records_an_event(
    admin: Admin, redis_client: redis.asyncio.Redis
) -> None:
    flag = await add_flag(admin, "streaker")
    member = encode_member(7, "streaker")
    await redis_client.zadd(admin.keys.board, {member: -2180})
    await redis_client.hset(admin.keys.members, "streaker", member)
    await redis_client.hset(admin.keys.names, "streaker", "Streaker")
    headers = admin.headers("mod-1") | {"X-Request-ID": "req-dismiss", "User-Agent": "console/1"}
    response = await admin.http.post(
        f"/api/admin/flags/{flag}/dismiss", json={"reason": "tournament night"}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"flag_id": flag, "state": "dismissed", "changed": True}
    [row] = await sql(admin, "SELECT * FROM user_flags")
    assert (row["state"], row["decided_by"], row["decision"]) == (
        "dismissed",
        "mod-1",
        "tournament night",
    )
    assert abs(row["decided_at"] - datetime.now(UTC)) < timedelta(seconds=30)
    [event] = await stream_events(redis_client, admin.keys.stream)
    assert event.pop("event_id")
    assert abs(int(event.pop("ts")) - datetime.now(UTC).timestamp() * 1000) < 30_000
    assert event.pop("client_ip")
    assert event == {
        "v": "3",
        "type": "dismiss",
        "user_id": "streaker",
        "name": "Streaker",
        "action": "dismiss",
        "points": "0",
        "score": "2180",
        "seq": "0",
        "idempotency_key": "",
        "by": "mod-1",
        "reason": "tournament night",
        "flag": str(flag),
        "request_id": "req-dismiss",
        "user_agent": "console/1",
    }
    again = await admin.dismiss(flag)
    assert again.json() == {"flag_id": flag, "state": "dismissed", "changed": False}
    assert await redis_client.xlen(admin.keys.stream) == 1


async def test_the_dismissal_is_persisted_and_shown_in_the_audit(
    admin: Admin, redis_url: str, key_prefix: str
) -> None:
    flag = await add_flag(admin, "streaker")
    assert (await admin.dismiss(flag, {"reason": "verified by support"})).status_code == 200
    async with open_worker(redis_url, admin.database_url, key_prefix) as worker:
        await drain(worker)
    [row] = await sql(admin, "SELECT state, decided_by, decision FROM user_flags")
    assert tuple(row) == ("dismissed", "moderator", "verified by support")
    audit = (await admin.get("/api/admin/audit", params={"user_id": "streaker"})).json()
    [action] = audit["actions"]
    assert action.pop("event_id")
    assert action.pop("at").endswith("Z")
    assert action.pop("request_id")
    assert action == {
        "type": "dismiss",
        "by": "moderator",
        "reason": "verified by support",
        "revocation": None,
        "flag": flag,
        "score": 0,
    }


async def test_a_flag_already_decided_is_left_as_it_is(
    admin: Admin, redis_client: redis.asyncio.Redis
) -> None:
    actioned = await add_flag(admin, "banned-one", state="actioned")
    response = await admin.dismiss(actioned)
    assert response.json() == {"flag_id": actioned, "state": "actioned", "changed": False}
    assert await redis_client.exists(admin.keys.stream) == 0


async def test_an_unknown_flag_is_404(admin: Admin, redis_client: redis.asyncio.Redis) -> None:
    for flag in ("424242", "0", "999999999999999999", "000001"):
        assert is_problem(await admin.dismiss(flag), 404, "unknown-flag")
    assert await redis_client.exists(admin.keys.stream) == 0


@pytest.mark.parametrize(
    "flag",
    [
        "1%3Bdrop%20table%20user_flags",
        "1;drop",
        "abc",
        "-1",
        "1e3",
        "0x10",
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE
        "%C2%B2",
        "1%20",
        "9" * 19,
        "9" * 5000,
    ],
)
async def test_hostile_flag_ids_are_422(
    admin: Admin, redis_client: redis.asyncio.Redis, flag: str
) -> None:
    await add_flag(admin, "cheater")
    assert is_problem(await admin.dismiss(flag), 422, "invalid-parameter")
    assert await redis_client.exists(admin.keys.stream) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"not json", "application/json", 422),
        (b"", "application/json", 422),
        (b"[]", "application/json", 422),
        (b'"tournament"', "application/json", 422),
        (b"null", "application/json", 422),
        (b"{}", "application/json", 422),
        (b'{"reason": "ok", "extra": 1}', "application/json", 422),
        (b'{"why": "ok"}', "application/json", 422),
        (b'{"reason": ""}', "application/json", 422),
        (b'{"reason": "   "}', "application/json", 422),
        (b'{"reason": 42}', "application/json", 422),
        (b'{"reason": null}', "application/json", 422),
        (b'{"reason": ["a"]}', "application/json", 422),
        (b'{"reason": "line\\nbreak"}', "application/json", 422),
        (b'{"reason": "nul\\u0000"}', "application/json", 422),
        (b'{"reason": "bell\\u0007"}', "application/json", 422),
        (b'{"reason": "del\\u007f"}', "application/json", 422),
        (b'{"reason": "bidi \\u202e"}', "application/json", 422),
        (b'{"reason": "sep \\u2028"}', "application/json", 422),
        (b'{"reason": "\\ud800"}', "application/json", 422),
        (('{"reason": "' + "x" * 501 + '"}').encode(), "application/json", 422),
        (b'{"reason": "ok"}', "text/plain", 415),
        (b'{"reason": "ok"}', "", 415),
        (b'{"reason": "' + b"x" * 16_400 + b'"}', "application/json", 413),
    ],
)
async def test_hostile_dismissal_bodies_are_refused_and_change_nothing(
    admin: Admin, redis_client: redis.asyncio.Redis, content: bytes, content_type: str, status: int
) -> None:
    flag = await add_flag(admin, "cheater")
    headers = admin.headers() | ({"Content-Type": content_type} if content_type else {})
    response = await admin.http.post(
        f"/api/admin/flags/{flag}/dismiss", content=content, headers=headers
    )
    assert is_problem(response, status)
    assert [r["state"] for r in await sql(admin, "SELECT state FROM user_flags")] == ["open"]
    assert await redis_client.exists(admin.keys.stream) == 0


async def test_a_reason_of_500_characters_is_accepted(admin: Admin) -> None:
    flag = await add_flag(admin, "cheater")
    escaped = ('{"reason": "' + "\\u00e9" * 500 + '"}').encode()  # 3,000+ bytes
    response = await admin.http.post(
        f"/api/admin/flags/{flag}/dismiss",
        content=escaped,
        headers=admin.headers() | {"Content-Type": "application/json"},
    )
    assert response.json()["changed"] is True
    [row] = await sql(admin, "SELECT decision FROM user_flags")
    assert row["decision"] == "é" * 500


async def test_redis_away_is_503_and_the_flag_stays_open(
    redis_url: str, key_prefix: str, database_url: str
) -> None:
    await migrate(database_url)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with running_admin(dead, key_prefix, database_url, api_board_cache_seconds=0) as admin:
        flag = await add_flag(admin, "cheater")
        assert is_problem(await admin.dismiss(flag), 503, "unavailable")
        [row] = await sql(admin, "SELECT state, decided_by FROM user_flags")
        assert tuple(row) == ("open", None)


async def test_postgres_away_is_503_everywhere(redis_url: str, key_prefix: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    async with running_admin(redis_url, key_prefix, dead) as admin:
        for method, path, kwargs in endpoint_calls(1):
            response = await admin.http.request(method, path, headers=admin.headers(), **kwargs)
            assert is_problem(response, 503, "unavailable")
            assert response.headers["retry-after"] == "1"


# ---- GET /api/admin/audit


async def test_the_audit_lists_moderation_events_newest_first(admin: Admin) -> None:
    await add_event(admin, "cheater", "score", T0)
    ban = await add_event(
        admin, "cheater", "ban", T0 + timedelta(seconds=1), moderator="mod", reason="bot",
        request_id="r1",
    )  # fmt: skip
    revoke = await add_event(
        admin, "cheater", "revoke", T0 + timedelta(seconds=2), moderator="mod",
        reason="farmed", revocation="rev-1",
    )  # fmt: skip
    await add_event(admin, "someone-else", "ban", T0 + timedelta(seconds=3))
    body = (await admin.get("/api/admin/audit?user_id=cheater")).json()
    assert body["user_id"] == "cheater"
    assert [a["event_id"] for a in body["actions"]] == [revoke, ban]
    assert body["actions"][1] == {
        "event_id": ban,
        "type": "ban",
        "by": "mod",
        "reason": "bot",
        "at": "2026-11-30T12:00:01.000Z",
        "request_id": "r1",
        "revocation": None,
        "flag": None,
        "score": body["actions"][1]["score"],
    }
    assert body["actions"][0]["revocation"] == "rev-1"
    limited = (await admin.get("/api/admin/audit?user_id=cheater&limit=1")).json()
    assert [a["event_id"] for a in limited["actions"]] == [revoke]
    assert (await admin.get("/api/admin/audit?user_id=nobody")).json() == {
        "user_id": "nobody",
        "actions": [],
    }


@pytest.mark.parametrize(
    "query",
    [
        "",
        "limit=5",
        "user_id=",
        "user_id=a%0a",
        "user_id=a%00b",
        "user_id=' OR 1=1 --",
        "user_id=" + "u" * 65,
        "user_id=cheater&limit=0",
        "user_id=cheater&limit=501",
        "user_id=cheater&limit=-1",
        "user_id=cheater&limit=1e3",
    ],
)
async def test_hostile_audit_queries_are_422(admin: Admin, query: str) -> None:
    assert is_problem(await admin.get(f"/api/admin/audit?{query}"), 422, "invalid-parameter")


# ---- GET /api/admin/users/{user_id}/events


async def test_a_users_events_come_newest_first_with_their_audit_fields(admin: Admin) -> None:
    first = await add_event(admin, "player", "score", T0, user_agent="game/1", jti="j1")
    second = await add_event(
        admin, "player", "score", T0 + timedelta(seconds=5), ticket="t" * 32, duration_ms=31000,
        reporter="game-server", periods="daily=2026-11-30", revoked_by="rev-1", iss="https://id",
    )  # fmt: skip
    quarantine = await add_event(
        admin, "player", "quarantine", T0 + timedelta(seconds=9), moderator="auto:flags",
        reason="outlier",
    )  # fmt: skip
    await add_event(admin, "other", "score", T0 + timedelta(seconds=10))
    body = (await admin.get("/api/admin/users/player/events")).json()
    assert body["user_id"] == "player"
    assert [e["event_id"] for e in body["events"]] == [quarantine, second, first]
    assert body["events"][1] == {
        "event_id": second,
        "type": "score",
        "action": "quest_complete",
        "points": 10,
        "score_after": body["events"][1]["score_after"],
        "at": "2026-11-30T12:00:05.000Z",
        "client_ip": "192.0.2.7",
        "user_agent": None,
        "request_id": None,
        "jti": None,
        "iss": "https://id",
        "ticket": "t" * 32,
        "duration_ms": 31000,
        "reporter": "game-server",
        "periods": "daily=2026-11-30",
        "revoked_by": "rev-1",
        "by": None,
        "reason": None,
    }
    assert body["events"][0]["by"] == "auto:flags"
    assert body["events"][2]["jti"] == "j1"
    assert len((await admin.get("/api/admin/users/player/events?limit=2")).json()["events"]) == 2
    assert (await admin.get("/api/admin/users/nobody/events")).json()["events"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/users/a%0a/events",
        "/api/admin/users/a%20b/events",
        "/api/admin/users/" + "u" * 65 + "/events",
        "/api/admin/users/%E2%80%AE/events",
        "/api/admin/users/player/events?limit=0",
        "/api/admin/users/player/events?limit=501",
        "/api/admin/users/player/events?limit=1e3",
        "/api/admin/users/player/events?limit=" + "9" * 400,
    ],
)
async def test_hostile_event_queries_are_422(admin: Admin, path: str) -> None:
    assert is_problem(await admin.get(path), 422, "invalid-parameter")


def test_the_score_api_routes_every_admin_read() -> None:
    app = create_app(ApiSettings())
    assert isinstance(app.state.api, AdminReads)
    routed = {
        (route.path, method)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
    }
    assert {(path, method) for path, _name, method in ROUTES} <= routed


async def test_concurrent_dismissals_change_the_flag_once(
    admin: Admin, redis_client: redis.asyncio.Redis
) -> None:
    flag = await add_flag(admin, "cheater")
    answers = await asyncio.gather(*(admin.dismiss(flag) for _ in range(8)))
    assert sorted(r.json()["changed"] for r in answers) == [False] * 7 + [True]
    assert {r.json()["state"] for r in answers} == {"dismissed"}
    assert await redis_client.xlen(admin.keys.stream) == 1


async def test_the_dismiss_event_carries_the_score_wherever_the_user_is(
    admin: Admin, redis_client: redis.asyncio.Redis
) -> None:
    hidden, banned, unknown = [await add_flag(admin, u) for u in ("hidden", "banned", "gone")]
    member = encode_member(3, "hidden")
    await redis_client.zadd(admin.keys.hidden_board, {member: -640})
    await redis_client.hset(admin.keys.members, "hidden", member)
    await redis_client.hset(admin.keys.banned, "banned", f"75|{encode_member(4, 'banned')}")
    for flag in (hidden, banned, unknown):
        assert (await admin.dismiss(flag)).json()["changed"] is True
    events = await stream_events(redis_client, admin.keys.stream)
    assert [(e["user_id"], e["name"], e["score"]) for e in events] == [
        ("hidden", "hidden", "640"),
        ("banned", "banned", "75"),
        ("gone", "gone", "0"),
    ]
