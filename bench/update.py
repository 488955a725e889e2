"""Scenario 1, the update path: ``POST /api/score`` at saturation and at half of it.

Ceiling: ``GET /healthz`` of the same worker, measured in the same run with the same load
generator settings.
"""

from __future__ import annotations

from pathlib import Path

from bench.httpload import run_wrk
from bench.stack import Service, say
from bench.stats import ratio
from devstack.devtoken import issue
from services.score_api.settings import TokenSettings

TOKEN_USERS = 1000


def write_tokens(path: Path, count: int = TOKEN_USERS, prefix: str = "w") -> Path:
    """``count`` valid write tokens (development secret), one a line, for the Lua scripts."""
    settings = TokenSettings()
    lines = [issue(settings, f"{prefix}{i:05d}", ttl=4 * 3600) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(api: Service, workdir: Path, seconds: float, connections: int) -> dict[str, object]:
    tokens = write_tokens(workdir / "tokens.txt")
    say(f"update: ceiling GET /healthz, {seconds:.0f} s, {connections} connections")
    ceiling = run_wrk(f"{api.url}/healthz", seconds=seconds, connections=connections)
    say(f"update: /healthz {ceiling['rps']:.0f} req/s")
    say("update: POST /api/score at saturation")
    saturated = run_wrk(
        api.url,
        scenario="post",
        args=(str(tokens), "sat"),
        seconds=seconds,
        connections=connections,
    )
    say(f"update: POST {saturated['rps']:.0f} req/s, p99 {saturated['p99_us'] / 1000:.1f} ms")
    # Half of saturation: each of `half_conns` connections pauses so that together they
    # offer rps/2 (closed loop with think time; wrk 4 has no constant-rate mode).
    target = saturated["rps"] / 2
    half_conns = 16
    pace_ms = max(0.0, half_conns / target * 1000 - saturated["p50_us"] / 1000 / 4)
    say(f"update: POST at half of saturation (~{target:.0f} req/s)")
    half = run_wrk(
        api.url,
        scenario="post",
        args=(str(tokens), "half"),
        seconds=seconds,
        connections=half_conns,
        pace_ms=pace_ms,
    )
    say(f"update: half load {half['rps']:.0f} req/s, p99 {half['p99_us'] / 1000:.1f} ms")
    return {
        "ceiling": ceiling,
        "saturation": saturated,
        "half": half,
        "half_target_rps": target,
        "ratio": ratio(saturated["rps"], ceiling["rps"]),
        "connections": connections,
        "seconds": seconds,
    }
