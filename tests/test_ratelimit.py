"""GCRA arithmetic and headers, and the award script's limits held to that model in Redis."""

from __future__ import annotations

import random

import redis.asyncio

from services.score_api.ratelimit import (
    Limit,
    policy_header,
    ratelimit_header,
    retry_after_seconds,
)
from services.score_api.store import AwardRequest, ScoreStore
from shared.keys import BoardKeys
from tests.models import gcra

FIVE_PER_SECOND = Limit("user-second", 5, 1000)


def test_burst_of_quota_is_allowed_then_refused_until_one_interval_passes() -> None:
    tat = None
    for expected_remaining in (4, 3, 2, 1, 0):
        decision = gcra(FIVE_PER_SECOND, tat, 10_000)
        assert (decision.allowed, decision.remaining) == (True, expected_remaining)
        tat = decision.tat_us
    refused = gcra(FIVE_PER_SECOND, tat, 10_000)
    assert (refused.allowed, refused.wait_ms) == (False, 200)
    assert gcra(FIVE_PER_SECOND, tat, 10_199).allowed is False
    assert gcra(FIVE_PER_SECOND, tat, 10_200).allowed is True


def test_steady_rate_at_quota_is_always_allowed() -> None:
    tat = None
    for i in range(100):
        decision = gcra(FIVE_PER_SECOND, tat, 10_000 + 200 * i)
        assert decision.allowed
        tat = decision.tat_us


def test_idle_time_restores_the_full_burst() -> None:
    tat = None
    for _ in range(5):
        tat = gcra(FIVE_PER_SECOND, tat, 0).tat_us
    assert gcra(FIVE_PER_SECOND, tat, 1000).remaining == 4


def test_headers_follow_the_ratelimit_draft() -> None:
    limits = [FIVE_PER_SECOND, Limit("user-minute", 120, 60_000)]
    assert policy_header(limits) == '"user-second";q=5;w=1, "user-minute";q=120;w=60'
    assert ratelimit_header("user-second", 3, 401) == '"user-second";r=3;t=1'
    assert retry_after_seconds(0) == 1
    assert retry_after_seconds(1001) == 2


async def test_award_script_limits_match_the_model(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    store = ScoreStore(redis_client, BoardKeys(key_prefix, "global"), 3600)
    limits = [Limit("user-second", 3, 1000), Limit("user-minute", 10, 60_000)]
    rng = random.Random(3)
    now = 1_000_000
    tats: list[int | None] = [None, None]
    for i in range(60):
        now += rng.choice([0, 0, 50, 120, 400, 1500])
        decisions = [gcra(limit, tat, now) for limit, tat in zip(limits, tats, strict=True)]
        request = AwardRequest(
            "alice", "Alice", "quest_complete", 10, 0, f"k{i}", "10.0.0.1", limits, [], {}
        )
        result = await store.award(request, now_ms=now)
        refused = next((d for d in decisions if not d.allowed), None)
        if refused is None:
            assert result.status == "new", i
            tats = [d.tat_us for d in decisions]
            tightest = min(decisions, key=lambda d: d.remaining)
            assert (result.remaining, result.reset_ms) == (tightest.remaining, tightest.reset_ms)
        else:
            assert result.status == "limited", i
            assert result.wait_ms == refused.wait_ms
