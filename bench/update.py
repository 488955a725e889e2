"""Scenario 1, the update path: ``POST /api/score`` at saturation and at half of it, and the
same award with a ticket (``POST /api/actions``, then ``POST /api/score`` redeeming it).

Ceiling: ``GET /healthz`` of the same worker, measured in the same run with the same load
generator settings. The ticket run follows the plain POST run at once, with the same ``wrk``
settings, so their ratio compares like with like. Both runs are counted on the server too
(the API's request and award counters, the stream's length), and the ticket run is checked
from those counts: each award cost exactly one start and one redeem (``ticket_problems``).
The same POST with the three default periodic boards against one board: ``bench/boards.py``,
run by ``python -m bench`` right after this scenario.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis

from bench.httpload import run_wrk
from bench.stack import Service, metric_sum, say, scrape
from bench.stats import ratio
from devstack.devtoken import issue
from services.score_api.settings import TokenSettings
from shared.formats import Field
from shared.keys import BoardKeys

TOKEN_USERS = 1000
# The ticket-mode action of bench/stack.py's catalogue (min_seconds 0: redeemable at once).
TICKET_ACTION = "bench_quest"
# The tokens file in the run's directory (bench/boards.py reuses it).
TOKENS_FILE = "tokens.txt"
REQUESTS = "score_api_requests_total"
ACCEPTED = "score_api_updates_accepted_total"


def write_tokens(path: Path, count: int = TOKEN_USERS, prefix: str = "w") -> Path:
    """``count`` valid write tokens (development secret), one a line, for the Lua scripts."""
    settings = TokenSettings()
    lines = [issue(settings, f"{prefix}{i:05d}", ttl=4 * 3600) for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


def server_counts(metrics: str) -> dict[str, float]:
    """What the API counted so far (its ``/metrics`` text): starts and awards by outcome."""
    return {
        "start_requests": metric_sum(metrics, REQUESTS, route="start_action", method="POST"),
        "start_201": metric_sum(metrics, REQUESTS, route="start_action", status="201"),
        "score_requests": metric_sum(metrics, REQUESTS, route="post_score", method="POST"),
        "score_200": metric_sum(metrics, REQUESTS, route="post_score", status="200"),
        "accepted": metric_sum(metrics, ACCEPTED),
    }


def settled_counts(url: str, timeout: float = 10.0) -> dict[str, float]:
    """The API's counts once they stop moving: wrk stops with requests still in flight, which
    the API finishes (and counts) after wrk has printed its summary."""
    counts = server_counts(scrape(url))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = server_counts(scrape(url))
        if again == counts:
            break
        counts = again
    return counts


def counted(
    url: str, redis_url: str, keys: BoardKeys, load: Callable[[], dict[str, float]]
) -> dict[str, Any]:
    """Run ``load`` (one wrk run) and add what the server counted meanwhile: the API's
    counters and the events appended to the board's stream, as deltas, and the newest event."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        before, stream_before = settled_counts(url), client.xlen(keys.stream)
        figures: dict[str, Any] = dict(load())
        after, stream_after = settled_counts(url), client.xlen(keys.stream)
        newest = client.xrevrange(keys.stream, count=1)
    finally:
        client.close()
    figures["server"] = {name: after[name] - before[name] for name in after}
    figures["server"]["stream_events"] = stream_after - stream_before
    figures["newest_event"] = newest[0][1] if newest else {}
    return figures


def ticket_figures(wrk: dict[str, Any], connections: int) -> dict[str, Any]:
    """A ticket run's figures (``counted`` wrk figures) with its rates and its check."""
    server = wrk["server"]
    seconds = wrk["duration_us"] / 1e6
    accepted = server["accepted"]
    requests = server["start_requests"] + server["score_requests"]
    out = dict(wrk)
    out["actions_per_second"] = wrk["count_redeemed"] / seconds if seconds else float("nan")
    out["requests_per_action"] = ratio(requests, accepted)
    out["open_at_stop"] = server["start_201"] - accepted
    out["problems"] = ticket_problems(out, connections)
    return out


def ticket_problems(t: dict[str, Any], connections: int) -> list[str]:
    """Why a ticket run does not show exactly one start and one redeem per award ([] if it
    does). ``connections`` bounds the tail: tickets started but not yet redeemed at the stop,
    and responses in flight that wrk never read, are at most one per connection."""
    server = t["server"]
    accepted = server["accepted"]
    problems = []
    if accepted <= 0:
        problems.append("no award landed")
    client = {
        name: t.get(f"count_{name}", 0) for name in ("start_refused", "redeem_refused", "unmatched")
    }
    client["wrk errors"] = t.get("errors", 0)
    problems += [f"{name}: {count:.0f}" for name, count in client.items() if count]
    if server["start_requests"] != server["start_201"]:
        refused = server["start_requests"] - server["start_201"]
        problems.append(f"{refused:.0f} starts refused by the API")
    if not server["score_requests"] == server["score_200"] == accepted:
        problems.append(
            f"{server['score_requests']:.0f} redeems sent, {server['score_200']:.0f} answered "
            f"200, {accepted:.0f} awarded: a redeem must be one request and one award"
        )
    if not 0 <= t["open_at_stop"] <= connections:
        problems.append(
            f"{server['start_201']:.0f} tickets started for {accepted:.0f} awards: more than "
            f"one start per award beyond the {connections} left open at the stop"
        )
    if not t.get("count_redeemed", 0) <= accepted <= t.get("count_redeemed", 0) + connections:
        problems.append(
            f"wrk read {t.get('count_redeemed', 0):.0f} awards, the API made {accepted:.0f}"
        )
    if server["stream_events"] != accepted:
        problems.append(f"{server['stream_events']:.0f} stream events for {accepted:.0f} awards")
    newest = t.get("newest_event", {})
    if accepted > 0 and not (newest.get(Field.TICKET) and newest.get(Field.DURATION_MS)):
        problems.append("the newest stream event carries no ticket and duration_ms")
    return problems


def run_ticket(
    url: str,
    tokens: Path,
    redis_url: str,
    keys: BoardKeys,
    *,
    seconds: float,
    connections: int,
    tag: str = "ticket",
) -> dict[str, Any]:
    """Start and redeem ``TICKET_ACTION`` at saturation (``wrk/ticket.lua``), counted and
    checked."""
    figures = counted(
        url,
        redis_url,
        keys,
        lambda: run_wrk(
            url,
            scenario="ticket",
            args=(str(tokens), tag, TICKET_ACTION),
            seconds=seconds,
            connections=connections,
        ),
    )
    return ticket_figures(figures, connections)


def run(
    api: Service,
    workdir: Path,
    seconds: float,
    connections: int,
    redis_url: str,
    keys: BoardKeys,
) -> dict[str, Any]:
    tokens = write_tokens(workdir / TOKENS_FILE)
    say(f"update: ceiling GET /healthz, {seconds:.0f} s, {connections} connections")
    ceiling = run_wrk(f"{api.url}/healthz", seconds=seconds, connections=connections)
    say(f"update: /healthz {ceiling['rps']:.0f} req/s")
    say("update: POST /api/score at saturation")
    saturated = counted(
        api.url,
        redis_url,
        keys,
        lambda: run_wrk(
            api.url,
            scenario="post",
            args=(str(tokens), "sat"),
            seconds=seconds,
            connections=connections,
        ),
    )
    saturated["requests_per_action"] = ratio(
        saturated["server"]["score_requests"], saturated["server"]["accepted"]
    )
    say(f"update: POST {saturated['rps']:.0f} req/s, p99 {saturated['p99_us'] / 1000:.1f} ms")
    say("update: POST with a ticket (POST /api/actions, then POST /api/score) at saturation")
    ticket = run_ticket(api.url, tokens, redis_url, keys, seconds=seconds, connections=connections)
    say(
        f"update: with a ticket {ticket['actions_per_second']:.0f} actions/s "
        f"({ticket['rps']:.0f} req/s), {ticket['requests_per_action']:.3f} requests per action"
    )
    for problem in ticket["problems"]:
        say(f"update: ticket check FAILED: {problem}")
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
        "ticket": ticket,
        "ticket_ratio": ratio(ticket["actions_per_second"], saturated["rps"]),
        "half": half,
        "half_target_rps": target,
        "ratio": ratio(saturated["rps"], ceiling["rps"]),
        "connections": connections,
        "seconds": seconds,
    }
