"""The anomaly flag job (services.persister.flags) on the real PostgreSQL and Redis: who is
flagged in a synthetic population, flags updated not duplicated, dismissals respected for a
window, the automatic quarantine off by default and on, the lock, and failures survived."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from services.persister.flagrules import RULE_CEILING, RULE_OUTLIER, FlagRules
from services.persister.flags import (
    AUTO_BY,
    LOCK_KEY,
    FlagJob,
    QuarantineRefused,
    moderator_quarantine,
)
from services.persister.migrate import migrate
from services.persister.service import Service
from services.persister.settings import PersisterSettings
from shared.boards import Slots
from shared.formats import encode_member
from shared.keys import BoardKeys
from shared.moderator import Moderator
from shared.redisconn import connect
from tests.persister_fixtures import wait_until
from tests.support import ManualClock, free_port, stream_events

HOUR = 3600
# The defaults: ceiling 3,000 an hour, outlier factor 5, population 50.
DEFAULT_RULES = FlagRules(HOUR, 3000, 5.0, 50)
_ids = itertools.count()


@dataclass
class Quarantines:
    """A recording ``quarantine``; raises while ``failing``."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    failing: bool = False

    async def __call__(self, user_id: str, reason: str, by: str) -> None:
        if self.failing:
            raise ConnectionError("redis is away")
        self.calls.append((user_id, reason, by))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    await migrate(database_url)
    created = await asyncpg.create_pool(database_url, min_size=0, max_size=3)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def job(
    pool: asyncpg.Pool,
    clock: ManualClock,
    rules: FlagRules = DEFAULT_RULES,
    quarantine: Any = None,
    auto: bool = False,
) -> FlagJob:
    return FlagJob(
        pool, rules, clock, interval_seconds=60, auto_quarantine=auto, quarantine=quarantine
    )


def at(clock: ManualClock, seconds_ago: float = 0.0) -> datetime:
    return datetime.fromtimestamp(clock.time() - seconds_ago, UTC)


async def add_points(
    pool: asyncpg.Pool,
    points: dict[str, int],
    when: datetime,
    *,
    events_each: int = 1,
    revoked_by: str | None = None,
) -> None:
    """Score events giving each user ``points`` (split over ``events_each`` events) at
    ``when``, as the persister stores them."""
    rows = []
    for user, total in points.items():
        for k in range(events_each):
            share = total // events_each + (total % events_each if k == 0 else 0)
            n = next(_ids)
            rows.append(
                (f"e{n}", f"{n}-0", n, "score", user, user, "quest_complete", share, 0,
                 f"k{n}", "127.0.0.1", when, revoked_by)
            )  # fmt: skip
    columns = [
        "event_id", "stream_id", "seq", "type", "user_id", "name", "action", "points",
        "score_after", "idempotency_key", "client_ip", "created_at", "revoked_by",
    ]  # fmt: skip
    async with pool.acquire() as conn:
        await conn.copy_records_to_table("score_events", records=rows, columns=columns)
        await conn.executemany(
            "INSERT INTO users (user_id, name, score) VALUES ($1, $1, $2)"
            " ON CONFLICT (user_id) DO UPDATE SET score = users.score + excluded.score",
            list(points.items()),
        )


async def flags(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM user_flags ORDER BY flag_id"))


def counted(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of the persister's metrics (services.persister.metrics, default registry)."""
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def ordinary(n: int = 200) -> dict[str, int]:
    """``n`` honest users with 20..20+n-1 points: the p99 of any 200 of them is 217."""
    return {f"player{i:03d}": 20 + i for i in range(n)}


async def test_the_outlier_is_flagged_and_the_honest_heavy_player_is_not(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    population = ordinary() | {"heavy": 5 * 218, "cheater": 10 * 218}
    await add_points(pool, population, at(clock, 600), events_each=5)
    before = counted("persister_flags_raised_total", {"rule": RULE_OUTLIER})
    started = time.perf_counter()
    evaluation = await job(pool, clock).evaluate()
    elapsed = time.perf_counter() - started
    assert evaluation is not None
    assert evaluation.population == 202
    [row] = await flags(pool)
    assert {k: row[k] for k in ("user_id", "rule", "observed", "threshold", "state")} == {
        "user_id": "cheater",
        "rule": RULE_OUTLIER,
        "observed": 2180,
        "threshold": 5 * 218,  # the others' p99: 218 (rank 199 of 201), times 5
        "state": "open",
    }
    assert row["window_seconds"] == HOUR
    assert row["first_seen"] == row["last_seen"] == at(clock)
    assert row["decided_by"] is None
    assert counted("persister_flags_raised_total", {"rule": RULE_OUTLIER}) == before + 1
    assert elapsed < 1.0, f"one evaluation of 202 users took {elapsed:.3f} s"


async def test_the_ceiling_counts_only_the_window_and_only_unrevoked_points(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await add_points(pool, {"farmer": 2000, "steady": 3000}, at(clock, 1800))
    await add_points(pool, {"farmer": 1001}, at(clock, 60))
    await add_points(pool, {"steady": 5000}, at(clock, HOUR + 1))  # before the window
    await add_points(pool, {"steady": 5000}, at(clock, 30), revoked_by="r1")
    await add_points(pool, {"steady": 5000}, at(clock, -30))  # after now: not yet
    await job(pool, clock).evaluate()
    rows = await flags(pool)
    assert [(r["user_id"], r["rule"], r["observed"], r["threshold"]) for r in rows] == [
        ("farmer", RULE_CEILING, 3001, 3000)
    ]


async def test_an_event_exactly_one_window_old_still_counts(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await add_points(pool, {"edge": 3001}, at(clock, HOUR))
    await job(pool, clock).evaluate()
    assert [r["user_id"] for r in await flags(pool)] == ["edge"]


async def test_banned_and_quarantined_users_are_neither_flagged_nor_counted(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    population = ordinary(49) | {"cheater": 10**6, "banned": 10**6, "hidden": 10**6}
    await add_points(pool, population, at(clock, 60))
    async with pool.acquire() as conn:
        await conn.execute("UPDATE users SET banned = true WHERE user_id = 'banned'")
        await conn.execute("UPDATE users SET quarantined = true WHERE user_id = 'hidden'")
    evaluation = await job(pool, clock, FlagRules(HOUR, 0, 5.0, 50)).evaluate()
    assert evaluation is not None
    assert evaluation.population == 50
    assert [(r["user_id"], r["rule"]) for r in await flags(pool)] == [("cheater", RULE_OUTLIER)]


async def test_the_next_evaluation_updates_the_open_flag_instead_of_adding_one(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await add_points(pool, {"farmer": 3500}, at(clock, 60))
    flagger = job(pool, clock)
    first = await flagger.evaluate()
    before = counted("persister_flags_raised_total", {"rule": RULE_CEILING})
    clock.advance(60)
    await add_points(pool, {"farmer": 500}, at(clock, 10))
    second = await flagger.evaluate()
    assert first is not None
    assert second is not None
    assert [r.new for r in first.raised] == [True]
    assert [r.new for r in second.raised] == [False]
    assert first.raised[0].flag_id == second.raised[0].flag_id
    [row] = await flags(pool)
    assert row["observed"] == 4000
    assert row["first_seen"] == at(clock, 60)
    assert row["last_seen"] == at(clock)
    assert counted("persister_flags_raised_total", {"rule": RULE_CEILING}) == before


async def test_a_dismissed_flag_is_not_raised_again_within_one_window(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await add_points(pool, {"honest": 4000}, at(clock, 60))
    flagger = job(pool, clock)
    await flagger.evaluate()
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE user_flags SET state = 'dismissed', decided_by = 'mod', decided_at = $1",
            at(clock),
        )
    clock.advance(HOUR - 1)
    await add_points(pool, {"honest": 4000}, at(clock, 60))
    evaluation = await flagger.evaluate()
    assert evaluation is not None
    assert evaluation.raised == []
    assert [r["state"] for r in await flags(pool)] == ["dismissed"]
    clock.advance(1)  # exactly one window after the dismissal: the rule speaks again
    evaluation = await flagger.evaluate()
    assert evaluation is not None
    assert [(r.flag.user_id, r.new) for r in evaluation.raised] == [("honest", True)]
    assert [r["state"] for r in await flags(pool)] == ["dismissed", "open"]


async def test_a_dismissal_suppresses_its_rule_only(pool: asyncpg.Pool, clock: ManualClock) -> None:
    await add_points(pool, ordinary(99) | {"x": 5000}, at(clock, 60))
    flagger = job(pool, clock)
    await flagger.evaluate()
    assert sorted(r["rule"] for r in await flags(pool)) == [RULE_OUTLIER, RULE_CEILING]
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE user_flags SET state = 'dismissed', decided_at = $1 WHERE rule = $2",
            at(clock),
            RULE_CEILING,
        )
    clock.advance(60)
    evaluation = await flagger.evaluate()
    assert evaluation is not None
    assert [(r.flag.rule, r.new) for r in evaluation.raised] == [(RULE_OUTLIER, False)]


async def test_auto_quarantine_is_off_by_default(
    pool: asyncpg.Pool, clock: ManualClock, redis_url: str, key_prefix: str
) -> None:
    settings = PersisterSettings(redis_url=redis_url, redis_key_prefix=key_prefix)
    assert settings.auto_quarantine is False
    recorder = Quarantines()
    await add_points(pool, {"farmer": 10**6}, at(clock, 60))
    await FlagJob.from_settings(settings, pool, clock, recorder).evaluate()
    assert recorder.calls == []
    assert [r["state"] for r in await flags(pool)] == ["open"]


async def test_auto_quarantine_hides_the_flagged_user_and_actions_the_flag(
    pool: asyncpg.Pool,
    clock: ManualClock,
    redis_url: str,
    key_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    settings = PersisterSettings(
        redis_url=redis_url, redis_key_prefix=key_prefix, auto_quarantine=True
    )
    keys = BoardKeys(key_prefix, settings.board_id)
    client = connect(redis_url, timeout=5)
    try:
        for seq, user in enumerate(("farmer", "honest"), start=1):
            member = encode_member(seq, user)
            await client.zadd(keys.board, {member: -(10**6 if user == "farmer" else 10)})
            await client.hset(keys.members, user, member)
        moderator = Moderator(client, keys, clock)
        slots = Slots(settings.board_family(), settings.board_retention_periods)
        quarantine = moderator_quarantine(moderator, slots, clock)
        await add_points(pool, {"farmer": 10**6, "honest": 10}, at(clock, 60))
        evaluation = await FlagJob.from_settings(settings, pool, clock, quarantine).evaluate()
        assert evaluation is not None
        assert evaluation.quarantined == ["farmer"]
        assert await client.hexists(keys.quarantined, "farmer")
        assert not await client.hexists(keys.quarantined, "honest")
        assert await client.zrange(keys.board, 0, -1) == [encode_member(2, "honest").encode()]
        assert await client.zscore(keys.hidden_board, encode_member(1, "farmer")) == -(10**6)
        event = (await stream_events(redis_client, keys.stream))[-1]
        assert (event["type"], event["user_id"], event["by"]) == ("quarantine", "farmer", AUTO_BY)
        assert event["reason"] == "points_per_hour: 1000000 points in 3600 s, above 3000"
        [row] = await flags(pool)
        assert (row["state"], row["decided_by"], row["decided_at"]) == (
            "actioned",
            AUTO_BY,
            at(clock),
        )
        assert row["decision"] == "quarantine: " + event["reason"]
    finally:
        await client.aclose()


async def test_a_refused_quarantine_leaves_the_flag_open(
    pool: asyncpg.Pool, clock: ManualClock, redis_url: str, key_prefix: str
) -> None:
    settings = PersisterSettings(redis_url=redis_url, redis_key_prefix=key_prefix)
    keys = BoardKeys(key_prefix, settings.board_id)
    client = connect(redis_url, timeout=5)
    try:
        moderator = Moderator(client, keys, clock)
        await moderator("ban", "farmer", "", {})  # banned in Redis, not yet in PostgreSQL
        quarantine = moderator_quarantine(moderator, Slots(settings.board_family(), 2), clock)
        with pytest.raises(QuarantineRefused):
            await quarantine("farmer", "why", AUTO_BY)
        await add_points(pool, {"farmer": 10**6}, at(clock, 60))
        evaluation = await job(pool, clock, quarantine=quarantine, auto=True).evaluate()
        assert evaluation is not None
        assert evaluation.quarantined == []
        assert [r["state"] for r in await flags(pool)] == ["open"]
        assert not await client.hexists(keys.quarantined, "farmer")
    finally:
        await client.aclose()


async def test_a_failed_quarantine_is_retried_at_the_next_evaluation(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    recorder = Quarantines(failing=True)
    flagger = job(pool, clock, quarantine=recorder, auto=True)
    await add_points(pool, ordinary(99) | {"x": 5000}, at(clock, 60))
    evaluation = await flagger.evaluate()
    assert evaluation is not None
    assert evaluation.quarantined == []
    assert {r["state"] for r in await flags(pool)} == {"open"}
    recorder.failing = False
    clock.advance(60)
    evaluation = await flagger.evaluate()
    assert evaluation is not None
    assert evaluation.quarantined == ["x"]
    [(user, reason, by)] = recorder.calls  # one call for both rules
    assert (user, by) == ("x", AUTO_BY)
    assert reason == (
        "outlier: 5000 points in 3600 s, above 590; "
        "points_per_hour: 5000 points in 3600 s, above 3000"
    )
    assert {(r["state"], r["decided_by"]) for r in await flags(pool)} == {("actioned", AUTO_BY)}


async def test_an_automatic_quarantine_suppresses_the_rule_for_a_window(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    # A moderator who releases the user is not overruled at the next evaluation.
    recorder = Quarantines()
    flagger = job(pool, clock, quarantine=recorder, auto=True)
    await add_points(pool, {"x": 5000}, at(clock, 60))
    await flagger.evaluate()
    clock.advance(60)
    evaluation = await flagger.evaluate()  # users.quarantined is false: released, say
    assert evaluation is not None
    assert evaluation.raised == []
    assert len(recorder.calls) == 1


async def test_only_one_persister_evaluates_at_a_time(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await add_points(pool, {"farmer": 10**6}, at(clock, 60))
    before = counted("persister_flag_evaluations_total", {"outcome": "locked"})
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        assert await job(pool, clock).evaluate() is None
        assert await job(pool, clock).run_once() is None
    assert counted("persister_flag_evaluations_total", {"outcome": "locked"}) == before + 1
    assert await flags(pool) == []
    assert await job(pool, clock).evaluate() is not None


async def test_postgres_away_is_logged_and_the_loop_keeps_running(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    away = await asyncpg.create_pool(url, min_size=0, max_size=1, timeout=1)
    stopping = asyncio.Event()
    flagger = job(away, clock)
    flagger.interval_seconds = 0.05
    before = counted("persister_flag_evaluations_total", {"outcome": "failed"})
    try:
        with caplog.at_level(logging.WARNING, logger="services.persister.flags"):
            task = asyncio.create_task(flagger.run(stopping))
            await wait_until(
                _more(before + 3, "persister_flag_evaluations_total", {"outcome": "failed"}),
                "three failed evaluations",
            )
            assert not task.done()
            stopping.set()
            await asyncio.wait_for(task, 5)
        assert "flag evaluation failed" in caplog.text
    finally:
        await away.close()


async def test_a_missing_table_is_survived_too(
    database_url: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    bare = await asyncpg.create_pool(database_url, min_size=0, max_size=1)
    try:
        with caplog.at_level(logging.WARNING, logger="services.persister.flags"):
            assert await job(bare, clock).run_once() is None
        assert "score_events" in caplog.text
    finally:
        await bare.close()


def _more(target: float, name: str, labels: dict[str, str]) -> Any:
    async def check() -> bool:
        return counted(name, labels) >= target

    return check


async def test_the_persister_process_runs_the_job_every_interval(
    pool: asyncpg.Pool, database_url: str, redis_url: str, key_prefix: str
) -> None:
    settings = PersisterSettings(
        redis_url=redis_url,
        database_url=database_url,
        redis_key_prefix=key_prefix,
        persister_metrics_host="127.0.0.1",
        persister_metrics_port=0,
        persister_block_ms=20,
        persister_shutdown_seconds=2,
        flag_interval_seconds=1,
    )
    service = Service(settings)
    async with service.running():
        await add_points(pool, {"farmer": 10**6}, datetime.now(UTC) - timedelta(seconds=5))

        async def flagged() -> bool:
            return len(await flags(pool)) == 1

        await wait_until(flagged, "the job to flag the farmer", within=10)
    assert service.exit_code == 0
