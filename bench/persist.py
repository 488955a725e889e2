"""Scenario 5, the persist path: drain a preloaded stream, then the lag at a sustained rate.

Events are valid version-1 entries (shared/events.py, written as award.lua writes them),
appended with pipelined XADD into a stream of their own key prefix, so nothing else reads it.
They carry the proof of action as today's awards do: three in four a redeemed ticket and its
duration_ms (a player's ticket-mode action), one in four the reporter that awarded it (a
game server). The COPY ceiling copies the rows the persister makes of these same events
(``services.persister.batch.parse_entry``), every column of ``score_events`` it writes.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from redis.asyncio import Redis

from bench.stack import Service, Stack, metric, say
from bench.stats import percentile
from services.persister.batch import EventRow, StreamEntry, parse_entry
from shared.keys import BoardKeys

PERSISTED = "persister_events_persisted_total"
USERS = 50_000


def event_fields(i: int, now_ms: int) -> dict[str, str]:
    user = f"p{i % USERS:06d}"
    return {
        "v": "2",
        "type": "score",
        "event_id": f"{now_ms:012x}{os.urandom(10).hex()}",
        "user_id": user,
        "name": user,
        "action": "quest_complete",
        "points": "10",
        "score": str(10 * (i // USERS + 1)),
        "seq": str(i + 1),
        "idempotency_key": f"bench-{i}",
        "ts": str(now_ms),
        "client_ip": "127.0.0.1",
        "request_id": os.urandom(8).hex(),
        "user_agent": "bench",
        # Event version 2: the default boards' periods, as the award script writes them.
        "periods": "weekly=2026-W49 daily=2026-12-01",
    } | proof_of_action(i)


def proof_of_action(i: int) -> dict[str, str]:
    """A ticket and its duration (3 in 4 events), or the reporter that awarded it (1 in 4)."""
    if i % 4 == 3:
        return {"reporter": "bench-game-server"}
    return {"ticket": os.urandom(16).hex(), "duration_ms": str(30_000 + i % 5000)}


async def append(client: Redis, stream: str, first: int, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    now_ms = time.time_ns() // 1_000_000
    for i in range(first, first + count):
        pipe.xadd(stream, event_fields(i, now_ms))  # type: ignore[arg-type]
    await pipe.execute()


async def preload(redis_url: str, stream: str, events: int) -> float:
    started = time.perf_counter()
    client = Redis.from_url(redis_url)
    try:
        for first in range(0, events, 5000):
            await append(client, stream, first, min(5000, events - first))
    finally:
        await client.aclose()
    return time.perf_counter() - started


def wait_persisted(persister: Service, target: float, timeout: float) -> list[tuple[float, float]]:
    """(monotonic time, persisted count) samples until ``target`` is reached."""
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = metric(persister, PERSISTED)
        samples.append((time.monotonic(), count))
        if count >= target:
            return samples
        time.sleep(0.1)
    raise RuntimeError(f"persister stuck at {samples[-1][1]:.0f} of {target:.0f} events")


def steady_rate(samples: list[tuple[float, float]], total: float) -> float:
    """Events/s between 10 % and 90 % of the drain (start-up and tail excluded)."""
    low = next(s for s in samples if s[1] >= 0.1 * total)
    high = next(s for s in samples if s[1] >= 0.9 * total)
    return (high[1] - low[1]) / (high[0] - low[0]) if high[0] > low[0] else float("nan")


async def sustain(
    redis_url: str, stream: str, persister: Service, first: int, rate: float, seconds: float
) -> dict[str, Any]:
    """Append ``rate`` events/s for ``seconds`` while sampling how far the persister lags."""
    client = Redis.from_url(redis_url)
    loop = asyncio.get_running_loop()
    written_at: list[float] = []  # monotonic time when cumulative count len(...)*step was reached
    step = max(1, round(rate / 100))  # 10 ms batches
    base = metric(persister, PERSISTED)
    lags: list[float] = []
    try:
        start = loop.time()
        batches = round(rate * seconds / step)
        next_poll = start
        for b in range(batches):
            delay = start + b * step / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await append(client, stream, first + b * step, step)
            written_at.append(time.monotonic())
            if loop.time() >= next_poll:
                next_poll = loop.time() + 0.25
                lags.append(_lag(written_at, step, metric(persister, PERSISTED) - base))
        end = time.monotonic() + 10
        while time.monotonic() < end:
            done = metric(persister, PERSISTED) - base
            lags.append(_lag(written_at, step, done))
            if done >= batches * step:
                break
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    settled = lags[len(lags) // 5 :]  # skip the first fifth: the consumer warms up
    return {
        "rate": rate,
        "seconds": seconds,
        "lag_p50_s": percentile(settled, 50),
        "lag_p99_s": percentile(settled, 99),
        "lag_max_s": max(lags) if lags else float("nan"),
        "samples": len(lags),
        "appended": batches * step,
    }


def _lag(written_at: list[float], step: int, persisted: float) -> float:
    """Seconds since the oldest batch not fully persisted was written (0 when all are)."""
    index = int(persisted // step)
    if index >= len(written_at):
        return 0.0
    return time.monotonic() - written_at[index]


def ceiling_rows(events: int) -> list[EventRow]:
    """The ``score_events`` rows the persister writes for ``events`` preloaded events."""
    now_ms = time.time_ns() // 1_000_000
    return [
        parse_entry(
            StreamEntry(
                f"{now_ms}-{i}",
                {k.encode(): v.encode() for k, v in event_fields(i, now_ms).items()},
            )
        )
        for i in range(events)
    ]


async def copy_ceiling(database_url: str, events: int) -> float:
    """Rows/s of a bare COPY of the same rows into a temporary copy of ``score_events``."""
    import asyncpg

    rows = ceiling_rows(events)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMP TABLE ceiling (LIKE score_events INCLUDING ALL)")
        started = time.perf_counter()
        for first in range(0, events, 1000):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "ceiling", records=rows[first : first + 1000], columns=EventRow._fields
                )
        return events / (time.perf_counter() - started)
    finally:
        await conn.close()


def run(stack: Stack, events: int, rate: float, seconds: float) -> dict[str, Any]:
    say(f"persist: ceiling, COPY of {events:,} rows in batches of 1000 from one connection")
    ceiling = asyncio.run(copy_ceiling(stack.database_url, events))
    say(f"persist: COPY ceiling {ceiling:.0f} rows/s")
    prefix = stack.prefix + "p"
    keys = BoardKeys(prefix, "global")
    say(f"persist: preloading {events:,} events into {keys.stream}")
    preload_seconds = asyncio.run(preload(stack.redis_url, keys.stream, events))
    say(f"persist: preloaded in {preload_seconds:.1f} s; starting the persister")
    started = time.monotonic()
    persister = stack.start("persister", prefix=prefix, PERSISTER_CONSUMER="bench")
    samples = wait_persisted(persister, events, timeout=600)
    total_seconds = samples[-1][0] - started
    rate_all = events / total_seconds
    rate_steady = steady_rate(samples, events)
    say(
        f"persist: {events:,} events in {total_seconds:.1f} s "
        f"({rate_all:.0f}/s, steady {rate_steady:.0f}/s)"
    )
    say(f"persist: lag at {rate:.0f} events/s for {seconds:.0f} s")
    lag = asyncio.run(sustain(stack.redis_url, keys.stream, persister, events, rate, seconds))
    say(f"persist: lag p50 {lag['lag_p50_s']:.2f} s, p99 {lag['lag_p99_s']:.2f} s")
    stack.stop(persister)
    return {
        "events": events,
        "copy_ceiling_per_second": ceiling,
        "ratio": rate_steady / ceiling if ceiling else float("nan"),
        "preload_seconds": preload_seconds,
        "drain_seconds": total_seconds,
        "events_per_second": rate_all,
        "events_per_second_steady": rate_steady,
        "lag": lag,
    }
