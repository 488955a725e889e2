"""Periodic boards in the award script and the API: every award lands in exactly one period of
each board, chosen by Redis's clock; reads by board and period; the configuration refused
when it is wrong. The timeline is the script's ``now_ms`` override: nothing waits for a
real boundary."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio
from pydantic import ValidationError
from pydantic_settings import SettingsError

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.score_api.settings import ApiSettings
from services.score_api.store import AwardRequest, ScoreStore
from shared.boards import ALL_TIME, Boards, Slots
from shared.formats import EVENT_VERSION
from shared.keys import BoardKeys
from shared.periods import Schedule
from tests.support import api_process, stream_events
from tests.test_periods import ms
from tests.test_score_api import Api, running_api

BOARDS: dict[str, Any] = {
    ALL_TIME: {"reset": "never"},
    "daily": {"reset": "daily"},
    "weekly": {"reset": "weekly", "timezone": "Europe/Berlin"},
    "tens": {"reset": "interval", "interval_seconds": 10},
}
FAMILY = Boards.from_mapping(BOARDS)


async def scores(client: redis.asyncio.Redis, key: str) -> dict[str, int]:
    rows: list[tuple[bytes, float]] = await client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
    return {m.decode().split(":", 1)[1]: -int(s) for m, s in rows}


async def test_an_award_lands_in_the_period_that_redis_time_holds_on_every_board(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    last = ms("2026-12-31T23:59:59.999")  # Thursday; 2026-W53; the last ms of the year
    first = last + 1

    def award(key: str, user: str, points: int, clock_at: int) -> AwardRequest:
        # The API's clock may sit in the neighbouring period: the slots offer both.
        return AwardRequest(
            user, user, "coin", points, 0, key, "10.0.0.1", [], [], {},
            slots=Slots(FAMILY, 2).at(clock_at),
        )  # fmt: skip

    before = await store.award(award("a", "ann", 10, first + 500), now_ms=last)
    after = await store.award(award("b", "ann", 5, last - 500), now_ms=first)
    assert before.status == after.status == "new"
    assert [b[:2] for b in before.boards] == [
        ("daily", "2026-12-31"),
        ("weekly", "2026-W53"),
        ("tens", "2026-12-31T23:59:50Z"),
    ]
    assert [b[:2] for b in after.boards] == [
        ("daily", "2027-01-01"),
        ("weekly", "2026-W53"),  # Berlin's week runs on to Monday 4 January
        ("tens", "2027-01-01T00:00:00Z"),
    ]
    assert [b[2] for b in after.boards] == [5, 15, 5]
    assert (after.score, after.rank) == (15, 1)
    assert await scores(redis_client, keys.period_board("daily", "2026-12-31")) == {"ann": 10}
    assert await scores(redis_client, keys.period_board("daily", "2027-01-01")) == {"ann": 5}
    assert await scores(redis_client, keys.period_board("weekly", "2026-W53")) == {"ann": 15}
    # Events (version 2 on) name the periods they counted in.
    events = await stream_events(redis_client, keys.stream)
    assert [(e["v"], e["periods"]) for e in events] == [
        (EVENT_VERSION, "daily=2026-12-31 weekly=2026-W53 tens=2026-12-31T23:59:50Z"),
        (EVENT_VERSION, "daily=2027-01-01 weekly=2026-W53 tens=2027-01-01T00:00:00Z"),
    ]
    # A replay answers the standings it first answered.
    again = await store.award(award("a", "ann", 10, first), now_ms=first + 10)
    assert (again.status, again.boards) == ("duplicate", before.boards)


async def test_a_clock_further_off_than_one_period_is_refused_and_writes_nothing(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    now = ms("2026-12-01T12:00")
    slots = Slots(FAMILY, 2).at(now - 30_000)  # the 10 s board: three periods back
    request = AwardRequest("ann", "ann", "coin", 1, 0, "k", "10.0.0.1", [], [], {}, slots=slots)
    assert (await store.award(request, now_ms=now)).status == "clock-skew"
    assert await redis_client.exists(keys.board, keys.stream) == 0


async def test_ties_in_a_period_go_to_who_reached_the_score_first(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    # Redis's own time: a period already over would have its keys expire at once.
    now = int((await redis_client.time())[0]) // 3600 * 3_600_000 + 1_800_000
    slots = Slots(FAMILY, 2).at(now)
    for i, (user, points) in enumerate([("zed", 5), ("amy", 10), ("bob", 5), ("zed", 5)]):
        request = AwardRequest(
            user, user, "coin", points, 0, f"k{i}", "10.0.0.1", [], [], {}, slots=slots
        )
        await store.award(request, now_ms=now + i)
    ranked = await scores(redis_client, keys.period_board("daily", Schedule("daily").at(now).id))
    # amy reached 10 before zed did; bob's 5 stays below.
    assert list(ranked.items()) == [("amy", 10), ("zed", 10), ("bob", 5)]


async def test_period_keys_expire_after_the_retained_periods(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    now = int((await redis_client.time())[0]) * 1000
    request = AwardRequest(
        "ann", "ann", "coin", 1, 0, "k", "10.0.0.1", [], [], {}, slots=Slots(FAMILY, 3).at(now)
    )
    await store.award(request)
    period = Schedule("daily").at(now)
    expire_at = await redis_client.pexpiretime(keys.period_board("daily", period.id))
    # The current period and the two before it are kept: gone two days after it ends.
    assert expire_at == (period.end_ms or 0) + 2 * 86_400_000


@pytest.fixture
async def api(redis_url: str, database_url: str, key_prefix: str) -> AsyncIterator[Api]:
    await migrate(database_url)
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, boards=BOARDS, database_url=database_url
    ) as running:
        yield running


async def test_reads_by_board_and_period_and_the_list_of_boards(api: Api) -> None:
    response = await api.post("ann", "k1")
    assert response.status_code == 200
    standings = response.json()["boards"]
    assert [s["board_id"] for s in standings] == [ALL_TIME, "daily", "weekly", "tens"]
    assert all((s["score"], s["rank"]) == (10, 1) for s in standings)
    listed = (await api.http.get("/api/boards")).json()["boards"]
    assert [b["board_id"] for b in listed] == [ALL_TIME, "daily", "weekly", "tens"]
    assert listed[0] | {} == {
        "board_id": ALL_TIME,
        "reset": "never",
        "timezone": "UTC",
        "period": "all",
        "starts_at": None,
        "ends_at": None,
    }
    daily = next(b for b in listed if b["board_id"] == "daily")
    for params in ({"board": "daily"}, {"board": "daily", "period": daily["period"]}):
        page = (await api.http.get("/api/score-board", params=params)).json()
        assert page["board"] == [{"rank": 1, "user_id": "ann", "name": "ann", "score": 10}]
        assert (page["board_id"], page["period"], page["final"]) == (
            "daily",
            daily["period"],
            False,
        )
        assert (page["starts_at"], page["ends_at"]) == (daily["starts_at"], daily["ends_at"])
    rank = (await api.http.get("/api/users/ann/rank", params={"board": "weekly"})).json()
    assert (rank["rank"], rank["score"], rank["board_id"]) == (1, 10, "weekly")
    # Yesterday is kept (retention 2) and empty; the day before is not kept.
    yesterday = Schedule("daily").previous(Schedule("daily").named(daily["period"]))
    kept = await api.http.get("/api/score-board", params={"board": "daily", "period": yesterday.id})
    assert (kept.status_code, kept.json()["board"]) == (200, [])
    older = Schedule("daily").previous(yesterday)
    gone = await api.http.get("/api/score-board", params={"board": "daily", "period": older.id})
    assert gone.status_code == 404
    assert gone.json()["type"].endswith("period-not-kept")


@pytest.mark.parametrize(
    "params",
    [
        {"board": "monthly"},
        {"board": "ALL-TIME"},
        {"board": "daily\n"},
        {"board": "x" * 5000},
        {"board": "daily", "period": "2026-13-01"},
        {"board": "daily", "period": "2999-01-01"},
        {"board": "weekly", "period": "2026-12-01"},
        {"board": "all-time", "period": "2026"},
        {"board": "tens", "period": "2026-12-01T00:00:05Z"},
        {"board": "daily", "period": "\u0662\u0660\u0662\u0666-01-01"},
        {"board": "daily\x00"},
        {"board": "daily", "period": "2026-12-01\x00"},
        {"board": "daily", "period": "2026-12-01\n"},
        {"board": "daily", "period": "9" * 5000},
        {"board": "tens", "period": "\uff12026-12-01T00:00:00Z"},
    ],
)
async def test_unknown_boards_malformed_or_future_periods_are_422(
    api: Api, params: dict[str, str]
) -> None:
    for path in ("/api/score-board", "/api/users/ann/rank"):
        response = await api.http.get(path, params=params)
        assert response.status_code == 422, (path, params)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "boards",
    [
        {"daily": {"reset": "daily"}},
        {ALL_TIME: {"reset": "daily"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "timezone": "Nowhere/City"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "interval", "interval_seconds": 5}},
        {ALL_TIME: {"reset": "never"}, "D": {"reset": "daily"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "extra": 1}},
        {ALL_TIME: {"reset": "never"}, "d": {"timezone": "UTC"}},
        {ALL_TIME: {"reset": "never"}, **{f"b{i}": {"reset": "daily"} for i in range(8)}},
        {},
        # Hostile spellings: trailing newline, NUL, Unicode digits, wrong types, oversize.
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "timezone": "UTC\n"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "timezone": "Europe/Berlin\x00"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "timezone": "x" * 5000}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "daily", "week_start": "monday\n"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "interval", "interval_seconds": "10"}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "interval", "interval_seconds": 10.5}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": "interval", "interval_seconds": 10**30}},
        {ALL_TIME: {"reset": "never"}, "d": {"reset": ["daily"]}},
        {ALL_TIME: {"reset": "never"}, "d\x00": {"reset": "daily"}},
        {ALL_TIME: {"reset": "never"}, "daily\n": {"reset": "daily"}},
        {ALL_TIME: {"reset": "never"}, "d": "daily"},
    ],
)
def test_a_wrong_board_configuration_stops_the_start(boards: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"BOARDS|board"):
        ApiSettings(boards=boards)


async def test_awards_from_two_api_processes_count_once_per_board(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    env = {"BOARDS": json.dumps(BOARDS)}
    token = issue(ApiSettings(), "ann")
    async with (
        api_process(redis_url, key_prefix, None, **env) as first,
        api_process(redis_url, key_prefix, None, **env, CLOCK_OFFSET_SECONDS="4") as second,
        httpx.AsyncClient(timeout=10) as http,
    ):
        # Race a boundary of the 10 s board: start 0.3 s before one, by Redis's clock.
        seconds, micros = await redis_client.time()
        now = seconds + micros / 1e6
        await asyncio.sleep((-now - 0.3) % 10)

        async def post(i: int) -> httpx.Response:
            await asyncio.sleep(i * 0.01)
            return await http.post(
                f"{(first, second)[i % 2]}/api/score",
                json={"action": "quest_complete"},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
            )

        responses = await asyncio.gather(*(post(i) for i in range(60)))
    assert [r.status_code for r in responses] == [200] * 60
    keys = BoardKeys(key_prefix, "global")
    assert len(await stream_events(redis_client, keys.stream)) == 60
    for board_id in ("daily", "weekly", "tens"):
        periods = {
            s["period"]: s["score"]
            for r in responses
            for s in r.json()["boards"]
            if s["board_id"] == board_id
        }
        stored = 0
        for period in periods:
            stored += (await scores(redis_client, keys.period_board(board_id, period)))["ann"]
        assert stored == 600, board_id  # every award in exactly one period of each board
        if board_id == "tens":
            assert len(periods) == 2  # the race crossed the boundary


async def test_a_ban_applies_to_every_board_and_an_unban_restores_each_place(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    for i, user in enumerate(["ann", "bob", "cid"]):
        assert (await api.post(user, f"k{i}")).status_code == 200
    await api.post("bob", "k9")  # bob: 20, ann and cid: 10 (ann first)

    async def ranking(board: str) -> list[str]:
        page = (await api.http.get("/api/score-board", params={"board": board})).json()
        return [e["user_id"] for e in page["board"]]

    expected = {b: await ranking(b) for b in BOARDS}
    assert set(map(tuple, expected.values())) == {("bob", "ann", "cid")}
    admin = {"Authorization": f"Bearer {api.token('mod', scopes=('score:admin',))}"}
    assert (await api.http.delete("/api/admin/users/bob", headers=admin)).status_code == 200
    for board in BOARDS:
        assert await ranking(board) == ["ann", "cid"], board
        rank = await api.http.get("/api/users/bob/rank", params={"board": board})
        assert rank.status_code == 404, board
    refused = await api.post("bob", "k10")
    assert refused.status_code == 403
    unban = await api.http.post("/api/admin/users/bob/unban", headers=admin)
    assert unban.status_code == 200
    assert {b: await ranking(b) for b in BOARDS} == expected
    # Restored with the keys' expiry, so a restored period still leaves Redis on time.
    daily = (await api.http.get("/api/boards")).json()["boards"][1]["period"]
    ttl = await redis_client.pttl(api.keys.period_board("daily", daily))
    assert 0 < ttl <= 2 * 86_400_000


async def test_archived_periods_are_final_and_served_from_postgres_past_retention(
    api: Api, database_url: str
) -> None:
    daily = Schedule("daily")
    today = daily.at(int(time.time() * 1000))
    yesterday, older = daily.previous(today), daily.previous(daily.previous(today))
    conn = await asyncpg.connect(database_url)
    try:
        for period, rows in ((yesterday, [("ann", 30)]), (older, [("bob", 50), ("ann", 20)])):
            for rank, (user, score) in enumerate(rows, 1):
                await conn.execute(
                    "INSERT INTO board_archives VALUES ('daily', $1, $2, $3, $4, $5, now())",
                    period.id, rank, user, user.title(), score,
                )  # fmt: skip
            await conn.execute(
                "INSERT INTO board_periods_closed (board_id, period, starts_at, ends_at, entries)"
                " VALUES ('daily', $1, now(), now(), $2)",
                period.id,
                len(rows),
            )
    finally:
        await conn.close()
    kept = await api.http.get("/api/score-board", params={"board": "daily", "period": yesterday.id})
    assert kept.json()["final"] is True  # archived; still read from Redis while kept
    past = await api.http.get("/api/score-board", params={"board": "daily", "period": older.id})
    assert past.status_code == 200
    body = past.json()
    assert (body["final"], body["total"]) == (True, 2)
    assert [(e["rank"], e["user_id"], e["name"], e["score"]) for e in body["board"]] == [
        (1, "bob", "Bob", 50),
        (2, "ann", "Ann", 20),
    ]
    page = await api.http.get(
        "/api/score-board", params={"board": "daily", "period": older.id, "offset": 1}
    )
    assert [e["user_id"] for e in page.json()["board"]] == ["ann"]
    ranked = await api.http.get(
        "/api/users/ann/rank", params={"board": "daily", "period": older.id, "around": 1}
    )
    assert (ranked.json()["rank"], [e["user_id"] for e in ranked.json()["around"]]) == (
        2,
        ["bob"],
    )
    missing = await api.http.get(
        "/api/users/cid/rank", params={"board": "daily", "period": older.id}
    )
    assert missing.status_code == 404
    current = await api.http.get("/api/score-board", params={"board": "daily"})
    assert current.json()["final"] is False


async def test_without_postgres_kept_periods_are_served_and_archived_ones_are_503(
    redis_url: str, key_prefix: str
) -> None:
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        boards=BOARDS,
        database_url="postgresql://postgres@127.0.0.1:9/none",
        redis_timeout_seconds=0.5,
    ) as api:
        daily = Schedule("daily")
        today = daily.at(int(time.time() * 1000))
        yesterday, older = daily.previous(today), daily.previous(daily.previous(today))
        kept = await api.http.get(
            "/api/score-board", params={"board": "daily", "period": yesterday.id}
        )
        assert (kept.status_code, kept.json()["final"]) == (200, False)
        past = await api.http.get("/api/score-board", params={"board": "daily", "period": older.id})
        assert past.status_code == 503
        assert past.headers["retry-after"] == "1"
        assert (await api.post("ann", "k1")).status_code == 200  # writes never need it


def test_slots_offer_the_neighbour_only_within_a_minute_of_a_boundary() -> None:
    family = Boards.from_mapping({ALL_TIME: {"reset": "never"}, "daily": {"reset": "daily"}})
    slots = Slots(family, 2)
    midnight = ms("2026-12-02T00:00")
    for at, expected in [
        (midnight - 3_600_000, ["2026-12-01"]),
        (midnight - 60_000, ["2026-12-01", "2026-12-02"]),
        (midnight - 1, ["2026-12-01", "2026-12-02"]),
        (midnight, ["2026-12-01", "2026-12-02"]),
        (midnight + 59_999, ["2026-12-01", "2026-12-02"]),
        (midnight + 60_000, ["2026-12-02"]),
    ]:
        assert [s.period.id for s in slots.at(at)] == expected, at


def test_cached_slots_are_always_what_a_fresh_computation_gives() -> None:
    rng = random.Random(11)
    cached = Slots(FAMILY, 2)
    at = ms("2026-12-31T23:55")
    for _ in range(3000):
        at += rng.choice([1, 250, 1_000, 7_000, 30_000])
        assert cached.at(at) == Slots(FAMILY, 2).at(at), at


@pytest.mark.parametrize("value", ["0", "101", "\u00b2", "\u0661", "", "1e1", "nan", "2.5", "-1"])
def test_hostile_board_retention_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("BOARD_RETENTION_PERIODS", value)
    with pytest.raises(ValidationError):
        ApiSettings()


@pytest.mark.parametrize(
    "raw", ['{"all-time": {"reset": "never"}', '["all-time"]', '"all-time"', "7"]
)
def test_a_boards_variable_that_is_no_mapping_stops_the_start(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("BOARDS", raw)
    with pytest.raises((ValidationError, SettingsError)):
        ApiSettings()
