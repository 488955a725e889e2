"""User analytics (GET /api/admin/stats): the window grammar and the shaping of the rows
exhaustively, then end to end on the real PostgreSQL and Redis with a pinned clock: a seeded
set of events, refusal counts flowing API -> Redis -> persister -> PostgreSQL -> endpoint,
hostile windows, the scope, and PostgreSQL away."""

from __future__ import annotations

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

from devstack.devtoken import issue
from services.persister.batch import StreamEntry, parse
from services.persister.migrate import migrate
from services.persister.refusalcounts import copy_refusal_counts
from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from services.persister.worker import Persister
from services.score_api import stats
from services.score_api.app import create_app
from services.score_api.problems import Problem
from services.score_api.settings import ApiSettings
from services.score_api.statsreads import StatsReads
from services.score_api.tokens import SCOPE_ADMIN, SCOPE_WRITE
from shared.keys import REFUSAL_COUNT_TTL_SECONDS, BoardKeys
from shared.redisconn import connect
from tests.support import (
    ManualClock,
    admin_api_settings,
    free_port,
    serve,
)
from tests.test_persister_batch import entry

# 12:34:56.789 UTC: a 3h window is [10:00, 12:34:56.789).
NOW = datetime(2026, 11, 30, 12, 34, 56, 789000, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
H10 = datetime(2026, 11, 30, 10, tzinfo=UTC)
_ids = itertools.count(1)


def ms_of(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# ---- the window


@pytest.mark.parametrize(
    ("value", "hours"),
    [("1h", 1), ("24h", 24), ("720h", 720), ("1d", 24), ("7d", 168), ("30d", 720), ("99h", 99)],
)
def test_windows_in_the_grammar(value: str, hours: int) -> None:
    assert stats.window_hours(value) == hours


HOSTILE_WINDOWS = [
    "0h", "0d", "31d", "721h", "999d", "24H", "1D", "1e3h", "\u0662h", "\uff12\uff14h", "24h\n",
    "\n24h", " 24h", "24h ", "", "h", "d", "24", "-1h", "+1h", "1.5h", "01h", "024h", "24hh",
    "1d1h", "24m", "24s", "1w", "24h\x00", "9" * 5000 + "h", "24h'; DROP TABLE users--", "0x10h",
]  # fmt: skip


@pytest.mark.parametrize("value", HOSTILE_WINDOWS)
def test_windows_outside_the_grammar_are_422(value: str) -> None:
    with pytest.raises(Problem) as refused:
        stats.window_hours(value)
    assert refused.value.status == 422
    assert refused.value.reason == "query"


def test_the_window_is_whole_hours_ending_with_the_current_one() -> None:
    span = stats.window({"window": "3h"}, NOW_MS)
    assert (span.start, span.end, span.hours) == (H10, NOW, 3)
    assert span.first_hour == ms_of(H10) // 3_600_000
    assert stats.window({}, NOW_MS).hours == 24
    on_the_hour = stats.window({"window": "1h"}, ms_of(H10))
    assert (on_the_hour.start, on_the_hour.end) == (H10, H10)
    assert stats.window({"window": "1d"}, NOW_MS).start == NOW.replace(
        minute=0, second=0, microsecond=0
    ) - timedelta(hours=23)


# ---- shaping the rows (pure)


def span(hours: int = 3) -> stats.Window:
    return stats.window({"window": f"{hours}h"}, NOW_MS)


def test_no_rows_is_zeros_with_every_hour_present() -> None:
    body = stats.shape([], span(3))
    assert body == {
        "window": "3h",
        "from": "2026-11-30T10:00:00.000Z",
        "to": "2026-11-30T12:34:56.789Z",
        "active_users": 0,
        "new_users": 0,
        "awards": 0,
        "points": 0,
        "by_action": [],
        "points_by_hour": [
            {"hour": f"2026-11-30T{h}:00:00.000Z", "awards": 0, "points": 0}
            for h in ("10", "11", "12")
        ],
        "top_movers": [],
        "refusals": [],
    }


@pytest.mark.parametrize("hours", [1, 2, 23, 24, 25, 167, 719, 720])
def test_every_hour_of_the_window_is_present_once_in_order(hours: int) -> None:
    by_hour = stats.shape([], span(hours))["points_by_hour"]
    assert isinstance(by_hour, list)
    assert len(by_hour) == hours <= stats.MAX_HOURS
    moments = [datetime.fromisoformat(b["hour"]) for b in by_hour]
    assert moments[-1] == NOW.replace(minute=0, second=0, microsecond=0)
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(moments))


def test_rows_are_placed_sorted_and_bounded() -> None:
    first = span(3).first_hour
    rows = [
        stats.Row("action", "coin", n=7, points=7),
        stats.Row("action", "boss", n=1, points=40),
        stats.Row("action", "alpha", n=4, points=40),  # a tie on points: by name
        stats.Row("hour", hour=first + 2, n=3, points=50),
        stats.Row("hour", hour=first, n=9, points=37),
        stats.Row("hour", hour=first - 1, n=1, points=1),  # outside: ignored
        stats.Row("hour", hour=first + 3, n=1, points=1),  # outside: ignored
        stats.Row("active", n=12),
        stats.Row("new", n=5),
        *(stats.Row("mover", f"u{i:02d}", n=1, points=i, name=f"User {i}") for i in range(12)),
        stats.Row("mover", "tie", n=2, points=11, name=None),
        stats.Row("refusal", "cooldown", n=3),
        stats.Row("refusal", "banned", n=3),
        stats.Row("refusal", "rate_user", n=30),
        stats.Row("unknown-kind", "x", n=99),
    ]
    body = stats.shape(rows, span(3))
    assert (body["active_users"], body["new_users"], body["awards"], body["points"]) == (
        12,
        5,
        12,
        87,
    )
    assert body["by_action"] == [
        {"action": "alpha", "awards": 4, "points": 40},
        {"action": "boss", "awards": 1, "points": 40},
        {"action": "coin", "awards": 7, "points": 7},
    ]
    assert [(b["awards"], b["points"]) for b in body["points_by_hour"]] == [  # type: ignore[attr-defined]
        (9, 37),
        (0, 0),
        (3, 50),
    ]
    movers = body["top_movers"]
    assert isinstance(movers, list)
    assert len(movers) == stats.TOP_MOVERS
    assert [m["user_id"] for m in movers[:3]] == ["tie", "u11", "u10"]
    assert movers[0] == {"user_id": "tie", "name": "tie", "awards": 2, "points": 11}
    assert movers[1] == {"user_id": "u11", "name": "User 11", "awards": 1, "points": 11}
    assert body["refusals"] == [
        {"reason": "rate_user", "count": 30},
        {"reason": "banned", "count": 3},
        {"reason": "cooldown", "count": 3},
    ]


def test_records_are_read_by_column_name() -> None:
    record = {"kind": "active", "key": None, "hour": None, "n": 4, "points": None, "name": None}
    assert stats.shape([record], span(1))["active_users"] == 4


# ---- end to end


@dataclass
class Stats:
    http: httpx.AsyncClient
    api: StatsReads
    settings: ApiSettings
    keys: BoardKeys
    database_url: str
    clock: ManualClock

    def headers(self, scopes: tuple[str, ...] = (SCOPE_ADMIN,)) -> dict[str, str]:
        token = issue(self.settings, "analyst", scopes=scopes, now=self.clock.time())
        return {"Authorization": f"Bearer {token}"}

    async def get(self, query: str = "") -> httpx.Response:
        return await self.http.get(f"/api/admin/stats{query}", headers=self.headers())


@asynccontextmanager
async def running_stats(
    redis_url: str, key_prefix: str, database_url: str, clock: ManualClock
) -> AsyncIterator[Stats]:
    config = admin_api_settings(redis_url, key_prefix, database_url)
    app = create_app(config, clock)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        keys = BoardKeys(config.redis_key_prefix, config.board_id)
        yield Stats(http, app.state.api, config, keys, database_url, clock)


async def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def add_event(
    url: str, user: str, created: datetime, action: str = "quest_complete", points: int = 10,
    kind: str = "score", revoked_by: str | None = None,
) -> None:  # fmt: skip
    n = next(_ids)
    await sql(
        url,
        "INSERT INTO score_events (event_id, stream_id, seq, type, user_id, name, action,"
        " points, score_after, idempotency_key, client_ip, created_at, revoked_by)"
        " VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $7, $8, '192.0.2.7', $9, $10)",
        f"{n:032x}", f"{n}-0", n, kind, user, action, points, f"k{n}", created, revoked_by,
    )  # fmt: skip


@pytest.fixture
async def seeded(redis_url: str, key_prefix: str, database_url: str) -> AsyncIterator[Stats]:
    await migrate(database_url)
    # Hour buckets are UTC whatever the session's time zone (a half-hour offset here).
    name = database_url.rsplit("/", 1)[1]
    await sql(database_url, f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kolkata'")
    await sql(database_url, "INSERT INTO users (user_id, name) VALUES ('alice', 'Alice')")
    before = H10 - timedelta(milliseconds=1)
    await add_event(database_url, "alice", before)  # alice: not new
    await add_event(database_url, "alice", H10)
    await add_event(database_url, "alice", H10 + timedelta(minutes=90), "level_up", 25)
    await add_event(database_url, "bob", H10 + timedelta(hours=2))
    await add_event(database_url, "bob", NOW - timedelta(milliseconds=1), "daily_login", 5)
    await add_event(database_url, "bob", NOW)  # the end is excluded
    await add_event(database_url, "bob", NOW + timedelta(hours=1))
    # carol's only award in the window is revoked: not active.
    await add_event(database_url, "carol", H10 + timedelta(minutes=15), "level_up", 25,
                    revoked_by="rev-1")  # fmt: skip
    await add_event(database_url, "dave", H10 + timedelta(minutes=5), "ban", 0, kind="ban")
    # erin's first award, before the window, was revoked: she arrived then, not new.
    await add_event(database_url, "erin", H10 - timedelta(days=3), revoked_by="rev-2")
    await add_event(database_url, "erin", H10 + timedelta(hours=1))
    await add_event(database_url, "frank", H10 - timedelta(days=40))  # long ago only
    # What the persister keeps (tested below): each user's first stored award, even revoked.
    await sql(
        database_url,
        "INSERT INTO users (user_id, name, first_award_at) SELECT user_id, user_id,"
        " min(created_at) FROM score_events WHERE type = 'score' GROUP BY user_id"
        " ON CONFLICT (user_id) DO UPDATE SET first_award_at = excluded.first_award_at",
    )
    clock = ManualClock(NOW.timestamp())
    async with running_stats(redis_url, key_prefix, database_url, clock) as running:
        yield running


async def test_the_stats_of_a_seeded_window(seeded: Stats) -> None:
    response = await seeded.get("?window=3h")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "window": "3h",
        "from": "2026-11-30T10:00:00.000Z",
        "to": "2026-11-30T12:34:56.789Z",
        "active_users": 3,
        "new_users": 1,
        "awards": 5,
        "points": 60,
        "by_action": [
            {"action": "quest_complete", "awards": 3, "points": 30},
            {"action": "level_up", "awards": 1, "points": 25},
            {"action": "daily_login", "awards": 1, "points": 5},
        ],
        "points_by_hour": [
            {"hour": "2026-11-30T10:00:00.000Z", "awards": 1, "points": 10},
            {"hour": "2026-11-30T11:00:00.000Z", "awards": 2, "points": 35},
            {"hour": "2026-11-30T12:00:00.000Z", "awards": 2, "points": 15},
        ],
        "top_movers": [
            {"user_id": "alice", "name": "Alice", "awards": 2, "points": 35},
            {"user_id": "bob", "name": "bob", "awards": 2, "points": 15},
            {"user_id": "erin", "name": "erin", "awards": 1, "points": 10},
        ],
        "refusals": [],
    }


async def test_windows_of_one_hour_a_day_and_thirty_days(seeded: Stats) -> None:
    one = (await seeded.get("?window=1h")).json()
    assert [b["points"] for b in one["points_by_hour"]] == [15]
    assert (one["active_users"], one["new_users"]) == (1, 1)  # bob
    day = (await seeded.get()).json()
    assert day["window"] == "24h"
    assert len(day["points_by_hour"]) == 24
    assert (day["active_users"], day["new_users"], day["points"]) == (
        3,
        2,
        70,
    )  # alice (09:59), bob
    month = (await seeded.get("?window=30d")).json()
    assert len(month["points_by_hour"]) == 720
    assert (month["active_users"], month["new_users"], month["points"]) == (3, 3, 70)


async def test_refusals_flow_from_redis_through_the_persister_to_the_endpoint(
    seeded: Stats, redis_client: redis.asyncio.Redis, redis_url: str, key_prefix: str
) -> None:
    hour = int(NOW.timestamp()) // 3600
    player = seeded.headers((SCOPE_WRITE,)) | {"Idempotency-Key": "r1"}
    body = {"action": "no_such_action"}
    for _ in range(3):
        response = await seeded.http.post("/api/score", json=body, headers=player)
        assert response.status_code == 422
    assert (await seeded.http.post("/api/score", json=body)).status_code == 401
    accepted = await seeded.http.post(
        "/api/score", json={"action": "quest_complete"}, headers=player | {"Idempotency-Key": "a1"}
    )
    assert accepted.status_code == 200, accepted.text
    await seeded.api.refusal_counter.flushed()
    key = seeded.keys.refusals(hour)
    assert await redis_client.hgetall(key) == {b"unknown_action": b"3", b"token_missing": b"1"}
    assert 0 < await redis_client.ttl(key) <= REFUSAL_COUNT_TTL_SECONDS
    # A refusal of the previous hour arrives late; one two hours back is not copied.
    await redis_client.hset(seeded.keys.refusals(hour - 1), "banned", 2)
    await redis_client.hset(seeded.keys.refusals(hour - 2), "cooldown", 9)
    assert (await seeded.get("?window=3h")).json()["refusals"] == []

    settings = PersisterSettings(
        redis_url=redis_url,
        database_url=seeded.database_url,
        redis_key_prefix=key_prefix,
        persister_consumer="w1",
        persister_block_ms=20,
    )
    store = await EventStore.open(settings.database_url, 5.0)
    worker = Persister(settings, connect(redis_url, timeout=5.0), store, seeded.clock)
    try:
        await worker.step()  # persists the award; its first trim pass copies the counts
        await worker.trim()  # again: idempotent
        rows = await sql(seeded.database_url, "SELECT hour, reason, count FROM refusal_counts")
        assert sorted((r["hour"], r["reason"], r["count"]) for r in rows) == [
            (H10 + timedelta(hours=1), "banned", 2),
            (H10 + timedelta(hours=2), "token_missing", 1),
            (H10 + timedelta(hours=2), "unknown_action", 3),
        ]
        stats_body = (await seeded.get("?window=3h")).json()
        assert stats_body["refusals"] == [
            {"reason": "unknown_action", "count": 3},
            {"reason": "banned", "count": 2},
            {"reason": "token_missing", "count": 1},
        ]
        # The pass persisted the award too (timed by Redis's clock, outside the pinned one),
        # and the user's first award stays the earliest.
        persisted = "SELECT created_at FROM score_events WHERE idempotency_key = 'a1'"
        [award] = await sql(seeded.database_url, persisted)
        first = "SELECT first_award_at FROM users WHERE user_id = 'analyst'"
        assert [r["first_award_at"] for r in await sql(seeded.database_url, first)] == [
            award["created_at"]
        ]
        # Counted since (the stats call above with a bad window), copied on the next pass.
        assert (await seeded.get("?window=0h")).status_code == 422
        await seeded.api.refusal_counter.flushed()
        await worker.trim()
        refusals = (await seeded.get("?window=1h")).json()["refusals"]
        assert {"reason": "query", "count": 1} in refusals
        # The next hour: the old current hour is now the previous one and still copied.
        seeded.clock.advance(3600)
        await redis_client.hincrby(seeded.keys.refusals(hour), "unknown_action", 1)
        await worker.trim()
        [row] = await sql(
            seeded.database_url,
            "SELECT count FROM refusal_counts WHERE reason = 'unknown_action'",
        )
        assert row["count"] == 4
    finally:
        await store.close()
        await worker.redis.aclose()


async def test_accepted_awards_write_no_refusal_counter(
    seeded: Stats, redis_client: redis.asyncio.Redis
) -> None:
    player = seeded.headers((SCOPE_WRITE,))
    for n in range(3):
        response = await seeded.http.post(
            "/api/score", json={"action": "quest_complete"},
            headers=player | {"Idempotency-Key": f"ok{n}"},
        )  # fmt: skip
        assert response.status_code == 200
    await seeded.api.refusal_counter.flushed()
    pattern = seeded.keys.refusals(0).rsplit(":", 1)[0] + ":*"
    assert [k async for k in redis_client.scan_iter(match=pattern)] == []


async def test_hostile_rows_copied_from_redis_are_stored_as_given(
    seeded: Stats, redis_client: redis.asyncio.Redis
) -> None:
    """The copy trusts only Redis's hash shape: an odd reason is data, never SQL."""
    hour = int(NOW.timestamp()) // 3600
    hostile = "x'); DROP TABLE users;--"
    await redis_client.hset(seeded.keys.refusals(hour), hostile, 1)
    users = len(await sql(seeded.database_url, "SELECT * FROM users"))
    pool = await asyncpg.create_pool(seeded.database_url, min_size=0)
    client = connect(seeded.settings.redis_url, timeout=5.0)
    try:
        assert await copy_refusal_counts(client, pool, seeded.keys, NOW.timestamp()) == 1
    finally:
        await client.aclose()
        await pool.close()
    assert len(await sql(seeded.database_url, "SELECT * FROM users")) == users
    [row] = await sql(seeded.database_url, "SELECT reason FROM refusal_counts")
    assert row["reason"] == hostile


async def test_the_persister_keeps_each_users_first_award(database_url: str) -> None:
    await migrate(database_url)
    store = await EventStore.open(database_url, 5.0)

    def at(ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=UTC)

    def award(n: int, ts: int, user: str = "alice") -> StreamEntry:
        return entry(
            f"{n}-0", f"e{n}", ts=str(ts), seq=str(n), user_id=user, idempotency_key=f"k{n}"
        )

    first = "SELECT user_id, first_award_at FROM users ORDER BY user_id"
    try:
        # bob was banned before he ever scored: a row without a first award.
        await sql(
            database_url, "INSERT INTO users (user_id, name, banned) VALUES ('bob', 'bob', true)"
        )
        await store.write(parse([award(2, 2_000)]).rows)
        assert [tuple(r) for r in await sql(database_url, first)] == [
            ("alice", at(2_000)),
            ("bob", None),
        ]
        # An earlier award in a later batch (another persister's), a later one, bob's first.
        await store.write(parse([award(1, 1_000), award(3, 5_000), award(4, 9_000, "bob")]).rows)
        await store.write(parse([award(1, 1_000)]).rows)  # a replay changes nothing
        assert [tuple(r) for r in await sql(database_url, first)] == [
            ("alice", at(1_000)),
            ("bob", at(9_000)),
        ]
    finally:
        await store.close()


def is_problem(response: httpx.Response, status: int, slug: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith(f":{slug}")


@pytest.mark.parametrize("value", HOSTILE_WINDOWS)
async def test_hostile_windows_over_http_are_422(seeded: Stats, value: str) -> None:
    response = await seeded.http.get(
        "/api/admin/stats", params={"window": value}, headers=seeded.headers()
    )
    is_problem(response, 422, "invalid-parameter")


async def test_the_stats_need_the_admin_scope(seeded: Stats) -> None:
    is_problem(await seeded.http.get("/api/admin/stats"), 401, "invalid-token")
    bad = {"Authorization": "Bearer not-a-token"}
    is_problem(await seeded.http.get("/api/admin/stats", headers=bad), 401, "invalid-token")
    player = seeded.headers((SCOPE_WRITE,))
    is_problem(await seeded.http.get("/api/admin/stats", headers=player), 403, "insufficient-scope")


async def test_postgres_away_is_503(redis_url: str, key_prefix: str) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    clock = ManualClock(NOW.timestamp())
    async with running_stats(redis_url, key_prefix, dead, clock) as running:
        response = await running.get()
        is_problem(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"


def metric_value(text: str, name: str, action: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{action="{action}"}} '):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_awards_and_points_are_counted_by_catalogue_action_only(seeded: Stats) -> None:
    before = (await seeded.http.get("/metrics")).text
    player = seeded.headers((SCOPE_WRITE,))
    for n, action in enumerate(("quest_complete", "quest_complete", "level_up")):
        response = await seeded.http.post(
            "/api/score", json={"action": action}, headers=player | {"Idempotency-Key": f"m{n}"}
        )
        assert response.status_code == 200, response.text
    replay = await seeded.http.post(
        "/api/score", json={"action": "level_up"}, headers=player | {"Idempotency-Key": "m2"}
    )
    assert replay.status_code == 200  # a duplicate: not counted again
    for hostile in ("no_such_action", "x" * 65, "quest_complete\n", "QUEST_COMPLETE"):
        response = await seeded.http.post(
            "/api/score", json={"action": hostile}, headers=player | {"Idempotency-Key": "h1"}
        )
        assert 400 <= response.status_code < 500
    after = (await seeded.http.get("/metrics")).text
    for name, action, delta in [
        ("score_api_awards_total", "quest_complete", 2),
        ("score_api_awards_total", "level_up", 1),
        ("score_api_points_total", "quest_complete", 20),
        ("score_api_points_total", "level_up", 25),
    ]:
        assert metric_value(after, name, action) - metric_value(before, name, action) == delta
    # The registry is the process's, shared with other tests' catalogues: the refused actions
    # must have no label, whatever else is there.
    labels = {
        line.split('action="', 1)[1].split('"', 1)[0]
        for line in after.splitlines()
        if line.startswith(("score_api_awards_total{", "score_api_points_total{"))
    }
    assert {"quest_complete", "level_up"} <= labels
    assert not labels & {"no_such_action", "x" * 65, "quest_complete\\n", "QUEST_COMPLETE"}
