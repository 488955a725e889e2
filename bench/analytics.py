"""Scenario 6, the stats query (``GET /api/admin/stats``): 1,000,000 score events in a
database of their own, then ``services.score_api.stats.QUERY`` timed for several windows.

The events are generated on the server (one ``INSERT ... SELECT`` over ``generate_series``):
30 days of awards spread evenly, 100,000 users, five actions, one event in 100 revoked and
one in 200 a moderation event, each user's first award as the persister keeps it, plus a day
of refusal counts. ``VACUUM ANALYZE`` then does
what autovacuum does after a bulk load, so the planner has statistics and the window's index
can be read index-only. The 24 h window (the endpoint's default) is the target: < 200 ms.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.stack import Stack, say
from bench.stats import percentile
from services.persister.migrate import migrate
from services.score_api import stats

EVENTS = 1_000_000
USERS = 100_000
DAYS = 30
WINDOWS = {"24h": 20, "7d": 5, "30d": 5}  # window -> timed runs (after one warm-up)
TARGET_MS = 200.0

_LOAD = """
INSERT INTO score_events (event_id, stream_id, seq, type, user_id, name, action, points,
    score_after, idempotency_key, client_ip, created_at, revoked_by)
SELECT lpad(to_hex(i), 32, '0'), i || '-0', i,
    CASE WHEN i % 200 = 0 THEN 'ban' ELSE 'score' END,
    'u' || ((i::bigint * 7919) % $2), 'u' || ((i::bigint * 7919) % $2),
    (ARRAY['quest_complete', 'daily_login', 'level_up', 'boss_kill', 'coin'])[1 + i % 5],
    (ARRAY[10, 5, 25, 40, 1])[1 + i % 5], i, 'bench-' || i, '127.0.0.1',
    $3::timestamptz - make_interval(secs => i::float8 * $4 / $1),
    CASE WHEN i % 100 = 0 THEN 'bench-revocation' END
FROM generate_series(1, $1) AS i
"""
_USERS = """
INSERT INTO users (user_id, name, score)
SELECT 'u' || u, 'User ' || u, 0 FROM generate_series(0, $1 - 1) AS u
"""
# What the persister's upsert keeps (users.first_award_at): each user's earliest award.
_FIRST_AWARDS = """
UPDATE users u SET first_award_at = f.first
FROM (SELECT user_id, min(created_at) AS first FROM score_events WHERE type = 'score'
      GROUP BY user_id) f
WHERE u.user_id = f.user_id
"""
_REFUSALS = """
INSERT INTO refusal_counts (hour, reason, count)
SELECT date_trunc('hour', $1::timestamptz) - make_interval(hours => h), r, 1 + h
FROM generate_series(0, 23) AS h, unnest(ARRAY['cooldown', 'rate_user', 'banned']) AS r
"""


def database_of(url: str, name: str) -> str:
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{name}"))


async def load(url: str, now: datetime) -> float:
    started = time.perf_counter()
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(_USERS, USERS)
        await conn.execute(_LOAD, EVENTS, USERS, now, DAYS * 86_400.0)
        await conn.execute(_FIRST_AWARDS)
        await conn.execute(_REFUSALS, now)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def measure(url: str, now: datetime) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    now_ms = int(now.timestamp() * 1000)
    out: dict[str, Any] = {}
    try:
        for text, runs in WINDOWS.items():
            span = stats.window({"window": text}, now_ms)
            args = (span.start, span.end, stats.TOP_MOVERS)
            rows = await conn.fetch(stats.QUERY, *args)  # warm-up
            timings = []
            for _ in range(runs):
                started = time.perf_counter()
                await conn.fetch(stats.QUERY, *args)
                timings.append((time.perf_counter() - started) * 1000)
            body = stats.shape(rows, span)
            out[text] = {
                "runs": runs,
                "p50_ms": percentile(timings, 50),
                "p99_ms": percentile(timings, 99),
                "awards": body["awards"],
                "active_users": body["active_users"],
            }
            say(
                f"stats: window {text}: {body['awards']:,} awards, "
                f"p50 {out[text]['p50_ms']:.1f} ms, p99 {out[text]['p99_ms']:.1f} ms"
            )
    finally:
        await conn.close()
    return out


async def _run(stack: Stack) -> dict[str, Any]:
    name = f"bench_stats_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = database_of(stack.database_url, name)
    # Whole hours and a bit: the windows start on an hour, as the endpoint's do.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(minutes=30)
    try:
        say(f"stats: loading {EVENTS:,} events into {name}")
        seconds = await load(url, now)
        say(f"stats: loaded and analysed in {seconds:.1f} s")
        windows = await measure(url, now)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return {"events": EVENTS, "users": USERS, "load_seconds": seconds, "windows": windows}


def run(stack: Stack) -> dict[str, Any]:
    return asyncio.run(_run(stack))
