"""Budgets on points, not only on requests: the Lua held to the Python reference, daily caps at
the UTC boundary, and the budgets shared by two API processes."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import redis.asyncio

from devstack.devtoken import issue
from services.score_api.ratelimit import Limit
from services.score_api.settings import ApiSettings
from services.score_api.store import AwardRequest, ScoreStore
from shared.keys import BoardKeys
from tests.models import gcra
from tests.support import api_process, stream_events
from tests.test_score_api import running_api

DAY_MS = 86_400_000


async def test_points_budgets_and_request_limits_in_lua_match_the_model(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    store = ScoreStore(redis_client, BoardKeys(key_prefix, "global"), 3600)
    limits = [
        Limit("user-minute", 4, 60_000),
        Limit("points-hour", 300, 3_600_000, counts_points=True),
        Limit("points-day", 1000, DAY_MS, counts_points=True),
    ]
    rng = random.Random(5)
    now = 1_000_000
    tats: list[int | None] = [None] * len(limits)
    seen = set()
    for i in range(300):
        now += rng.choice([0, 10, 1_000, 12_000, 60_000, 400_000])
        points = rng.choice([1, 10, 50, 120])
        decisions = [
            gcra(limit, tat, now, limit.cost(points))
            for limit, tat in zip(limits, tats, strict=True)
        ]
        request = AwardRequest(
            "alice", "Alice", f"a{points}", points, 0, f"k{i}", "10.0.0.1", limits, [], {}
        )
        result = await store.award(request, now_ms=now)
        refused = next((d for d, lim in zip(decisions, limits, strict=True) if not d.allowed), None)
        if refused is None:
            assert result.status == "new", i
            tats = [d.tat_us for d in decisions]
            pairs = zip(decisions, limits, strict=True)
            left = [d.remaining // limit.cost(points) for d, limit in pairs]
            tightest = decisions[left.index(min(left))]
            assert (result.remaining, result.reset_ms) == (tightest.remaining, tightest.reset_ms)
            seen.add("new")
        else:
            name = limits[decisions.index(refused)].name
            assert (result.status, result.limit, result.wait_ms) == (
                "limited",
                name,
                refused.wait_ms,
            ), i
            seen.add(name)
    assert seen == {"new", "user-minute", "points-hour", "points-day"}


async def test_the_daily_cap_counts_per_utc_day_and_consumes_nothing_when_refused(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    store = ScoreStore(redis_client, BoardKeys(key_prefix, "global"), 3600)
    # Redis's clock decides the day; the script takes an override for this timeline only.
    midnight = (int(time.time() * 1000) // DAY_MS + 1) * DAY_MS

    def request(key: str) -> AwardRequest:
        return AwardRequest(
            "alice", "Alice", "login", 5, 0, key, "10.0.0.1", [], [], {}, max_per_day=2
        )

    outcomes = []
    for key, at in [("a", -5000), ("b", -4000), ("c", -1), ("d", 0), ("e", 1), ("f", 2)]:
        result = await store.award(request(key), now_ms=midnight + at)
        outcomes.append((result.status, result.wait_ms))
    assert outcomes == [
        ("new", 0),
        ("new", 0),
        ("daily-cap", 1),  # until midnight UTC
        ("new", 0),
        ("new", 0),
        ("daily-cap", DAY_MS - 2),
    ]


async def test_a_spent_budget_is_a_429_that_names_it(redis_url: str, key_prefix: str) -> None:
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        actions={"coin": 40, "pebble": 1, "login": {"points": 1, "max_per_day": 1}},
        points_per_user_per_hour=100,
        rate_limit_user_per_hour=4,
    ) as api:
        statuses = [(await api.post("alice", f"k{i}", "coin")).status_code for i in range(3)]
        assert statuses == [200, 200, 429]
        spent = await api.post("alice", "k9", "coin")
        problem = spent.json()
        assert problem["type"].endswith("points-budget")
        assert problem["budget"] == "points-hour"
        assert "points-hour" in problem["detail"]
        # 40 points over 100 per hour: the next 20 are earned in 12 minutes.
        assert 700 <= int(spent.headers["retry-after"]) <= 721
        assert spent.headers["ratelimit"].startswith('"points-hour";r=0;')
        assert '"points-hour";q=100;w=3600' in spent.headers["ratelimit-policy"]
        # The daily cap of an action, then the request window per hour: four accepted
        # requests (refused ones consume nothing), then a 429.
        assert (await api.post("alice", "l1", "login")).status_code == 200
        capped = await api.post("alice", "l2", "login")
        assert capped.json()["type"].endswith("daily-cap")
        assert capped.json()["budget"] == "login-day"
        assert 1 <= int(capped.headers["retry-after"]) <= 86_400
        assert (await api.post("alice", "l3", "pebble")).status_code == 200
        limited = await api.post("alice", "l4", "pebble")
        assert limited.json()["type"].endswith("rate-limited")
        assert limited.json()["budget"] == "user-hour"


async def test_budgets_hold_across_two_api_processes(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    token = issue(ApiSettings(), "alice")
    budgets = {"POINTS_PER_USER_PER_HOUR": "100", "POINTS_PER_USER_PER_DAY": "150"}
    async with (
        api_process(redis_url, key_prefix, None, **budgets) as first,
        api_process(redis_url, key_prefix, None, **budgets) as second,
        httpx.AsyncClient(timeout=10) as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{(first, second)[i % 2]}/api/score",
                    json={"action": "quest_complete"},  # 10 points, no cooldown
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
                )
                for i in range(40)
            )
        )
    statuses = [r.status_code for r in responses]
    # The hour's burst is 100 points: 10 awards; the rest refused, naming the budget.
    assert statuses.count(200) == 10
    assert {r.json()["budget"] for r in responses if r.status_code == 429} == {"points-hour"}
    keys = BoardKeys(key_prefix, "global")
    assert len(await stream_events(redis_client, keys.stream)) == 10
