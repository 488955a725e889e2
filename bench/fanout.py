"""Scenarios 3 and 4, fan-out and Redis cost: many WebSocket clients on one gateway process.

``python -m bench.wsload`` is one load process holding N connections (plain asyncio
protocols on uvloop; it raises its RLIMIT_NOFILE to the hard limit). The orchestrator spreads
the clients over one or two such processes, then drives the top 10
through the real API at a steady rate while they count frames. A sample of connections also
timestamps every (user, score) they see, which joined with the driver's POST times gives the
POST-to-receive latency (both clocks are this machine's ``time.time()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio

from bench.procstat import cpu_seconds, rss_bytes
from bench.stack import ROOT, Service, metric, raise_fd_limit, say
from bench.stats import summary_ms
from devstack.devtoken import issue
from services.score_api.settings import TokenSettings

DRIVER_USERS = 10
FULL_GC = 'python_gc_collections_total{generation="2"}'


# The orchestrator


class LoadProcess:
    """One client process, spoken to over its stdin/stdout."""

    def __init__(self, url: str, count: int, base: int, out: Path) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.wsload", "--url", url,
             "--count", str(count), "--base", str(base), "--out", str(out)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip

    def expect(self, word: str, timeout: float) -> list[str]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 1.0)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith(word):
                    return line.split()[1:]
        raise RuntimeError(f"load process: no {word} within {timeout:.0f} s")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        self.expect("DONE", 60)
        figures: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return figures

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


async def drive(api_url: str, rate: float, seconds: float) -> list[tuple[str, int, float]]:
    """POST ``rate`` big awards per second to the driver users; (user, score, sent at) each."""
    settings = TokenSettings()
    users = [f"fan{i}" for i in range(DRIVER_USERS)]
    tokens = {u: issue(settings, u, ttl=3600) for u in users}
    sent: list[tuple[str, int, float]] = []
    errors = 0
    loop = asyncio.get_running_loop()
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=10) as client:

        async def post(user: str) -> None:
            nonlocal errors
            headers = {
                "Authorization": f"Bearer {tokens[user]}",
                "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": "application/json",
            }
            at = time.time()
            response = await client.post(
                "/api/score", headers=headers, content=b'{"action": "bench_big"}'
            )
            if response.status_code != 200:
                errors += 1
                return
            sent.append((user, int(response.json()["score"]), at))

        pending: set[asyncio.Task[None]] = set()
        start = loop.time()
        for i in range(round(rate * seconds)):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(users[i % DRIVER_USERS]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
    if errors:
        say(f"fan-out: driver got {errors} non-200 answers")
    return sent


async def command_calls(redis_url: str, field: str = "calls") -> dict[str, int]:
    """``INFO commandstats`` by command: its ``calls`` (or ``usec``, the time spent in it)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        stats: dict[str, Any] = await client.info("commandstats")
    finally:
        await client.aclose()
    return {k.removeprefix("cmdstat_"): int(v[field]) for k, v in stats.items()}


def latencies(sent: list[tuple[str, int, float]], records: list[list[Any]]) -> list[float]:
    """Seconds from each POST to the first time each sampled connection saw its result."""
    posted = {(user, score): at for user, score, at in sent}
    first: dict[tuple[int, str, int], float] = {}
    for conn, user, score, at in records:
        key = (conn, user, score)
        if (user, score) in posted and (key not in first or at < first[key]):
            first[key] = at
    return [at - posted[(user, score)] for (_, user, score), at in first.items()]


def wait_connections(gateway: Service, target: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if metric(gateway, "gateway_connections") <= target:
                return
        time.sleep(0.25)


def run_level(
    api: Service, gateway: Service, redis_url: str, workdir: Path, clients: int,
    seconds: float, rate: float, baseline: int,
) -> dict[str, Any]:  # fmt: skip
    url = gateway.url.replace("http://", "ws://") + "/ws/score"
    processes = 1 if clients <= 1000 else 2
    wait_connections(gateway, 0, 30)
    rss_before = rss_bytes(gateway.pid)
    say(f"fan-out: connecting {clients:,} clients from {processes} process(es)")
    started = time.monotonic()
    share = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    loads = [
        LoadProcess(url, n, sum(share[:i]), workdir / f"fanout-{clients}-{i}.json")
        for i, n in enumerate(share)
    ]
    try:
        connected = failed = 0
        for load in loads:
            ok, bad = load.expect("CONNECTED", 300)
            connected, failed = connected + int(ok), failed + int(bad)
        connect_seconds = time.monotonic() - started
        say(f"fan-out: {connected:,} connected ({failed} failed) in {connect_seconds:.1f} s")
        time.sleep(1.0)  # every snapshot delivered
        rss_after = rss_bytes(gateway.pid)
        calls_before = asyncio.run(command_calls(redis_url))
        messages_before = metric(gateway, "gateway_messages_sent_total")
        version_before = metric(gateway, "gateway_board_version")
        broadcast_before = metric(gateway, "gateway_broadcast_seconds_sum")
        full_gc_before = metric(gateway, FULL_GC)
        cpu_before, wall_before = cpu_seconds(gateway.pid), time.monotonic()
        for load in loads:
            load.send("START")
        sent = asyncio.run(drive(api.url, rate, seconds))
        time.sleep(0.5)  # the last changes arrive
        for load in loads:
            load.send("STOP")
        cpu_after, wall_after = cpu_seconds(gateway.pid), time.monotonic()
        calls_after = asyncio.run(command_calls(redis_url))
        messages_after = metric(gateway, "gateway_messages_sent_total")
        version_after = metric(gateway, "gateway_board_version")
        broadcast_after = metric(gateway, "gateway_broadcast_seconds_sum")
        full_gc_after = metric(gateway, FULL_GC)
        results = [load.result() for load in loads]
    finally:
        for load in loads:
            load.kill()
    window = wall_after - wall_before
    frames = sum(r["frames"] for r in results)
    window_client = max(r["seconds"] for r in results) or window
    lat = latencies(sent, [rec for r in results for rec in r["records"]])
    delta = {k: calls_after.get(k, 0) - calls_before.get(k, 0) for k in calls_after}
    changes = version_after - version_before
    # Top-level commands only: the gateway sends XREAD, EVALSHA (board + stream position) and
    # PING; the driver API one EVALSHA per POST. Commands run inside scripts (ZRANGE, HGET,
    # XREVRANGE...) are counted by Redis too but are not round trips.
    gateway_calls = delta.get("xread", 0) + delta.get("evalsha", 0) - len(sent)
    gateway_calls += delta.get("ping", 0)
    figures: dict[str, Any] = {
        "clients": clients,
        "connected": connected,
        "failed": failed,
        "load_processes": processes,
        "connect_seconds": connect_seconds,
        "window_seconds": window,
        "posts": len(sent),
        "rate": rate,
        "board_versions": changes,
        "frames_received": frames,
        "frames_per_second": frames / window_client,
        "gateway_messages_per_second": (messages_after - messages_before) / window,
        "closed_early": sum(r["closed"] for r in results),
        "latency": summary_ms(lat),
        "rss_before_bytes": rss_before,
        "rss_after_bytes": rss_after,
        # Against the fresh gateway's RSS: memory freed by a previous level is reused, so a
        # delta against this level's start would under-count.
        "rss_baseline_bytes": baseline,
        "rss_per_connection_bytes": (rss_after - baseline) / max(1, connected),
        "rss_level_delta_per_connection_bytes": (rss_after - rss_before) / max(1, connected),
        "rss_total_per_connection_bytes": rss_after / max(1, connected),
        "gateway_cpu_percent": (cpu_after - cpu_before) / window * 100,
        # Wall time of one broadcast (writing a version to every client), in the gateway.
        "broadcast_ms": (broadcast_after - broadcast_before) / changes * 1000 if changes else 0.0,
        "gateway_full_gc": full_gc_after - full_gc_before,
        "redis_calls": {k: v for k, v in delta.items() if v},
        "redis_gateway_calls": gateway_calls,
        "redis_calls_per_change": gateway_calls / changes if changes else float("nan"),
        "redis_calls_per_post": gateway_calls / len(sent) if sent else float("nan"),
    }
    lat_s = figures["latency"]
    say(
        f"fan-out {clients:,}: {figures['frames_per_second']:.0f} frames/s received, "
        f"p50 {lat_s['p50_ms']:.0f} ms p99 {lat_s['p99_ms']:.0f} ms, "
        f"{figures['rss_per_connection_bytes'] / 1024:.1f} KiB/conn, "
        f"CPU {figures['gateway_cpu_percent']:.0f} %, "
        f"{figures['broadcast_ms']:.1f} ms/broadcast, "
        f"{figures['redis_calls_per_change']:.2f} Redis calls/change"
    )
    wait_connections(gateway, 0, 30)
    return figures


def run(
    api: Service, gateway: Service, redis_url: str, workdir: Path, levels: list[int],
    seconds: float, rate: float,
) -> dict[str, Any]:  # fmt: skip
    limit = raise_fd_limit()
    say(f"fan-out: RLIMIT_NOFILE soft limit raised to {limit} (load processes do the same)")
    baseline = rss_bytes(gateway.pid)
    return {
        "levels": [
            run_level(api, gateway, redis_url, workdir, n, seconds, rate, baseline) for n in levels
        ],
        "fd_limit": limit,
        "seconds": seconds,
        "rate": rate,
    }
