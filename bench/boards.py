"""Periodic boards on the update path: ``POST /api/score`` with the three default boards
(all-time, weekly, daily) against the all-time board alone, and Redis memory per ranked user
per board.

Two fresh APIs that differ only in ``BOARDS``, started side by side, each on a key prefix of
its own (so neither one's stream follower reads the other's writes). A short warm-up of each
(token cache, the 1,000 users on every board), then saturation runs with the same ``wrk``
settings in the order A B B A (two rounds): a drift of the host over the block weighs on both
alike. The ratio is three boards' mean requests per second over one board's.

Round trips: ``INFO commandstats`` around each run. Script calls (``EVALSHA``) per award are
the award's round trips; the commands the award script runs inside Redis are counted apart
(they cost Redis CPU, not a round trip). ``INFO commandstats`` is server-wide: exact on the
benchmark's embedded Redis, polluted by other clients of a REDIS_URL server (the figures say
which). The API pipelines concurrent award calls (``services/score_api/autopipe.py``), so
network round trips are fewer still than these commands; the commands are what is compared.
Where the time goes: the API process's CPU time (``/proc``) and Redis's (``INFO cpu``), and
the award script's run time (``INFO commandstats``: wall time), each per award.

Memory: ``users`` users bulk-loaded (``bench/reads.py``) in the layout the award script
writes (all-time board, members and names hashes, the same members in the current weekly and
daily periods), then ``MEMORY USAGE <key> SAMPLES 0`` of each key over the number of users.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from bench.fanout import command_calls
from bench.httpload import run_wrk
from bench.procstat import cpu_seconds
from bench.reads import load_board
from bench.stack import Stack, say
from bench.stats import ratio
from bench.update import counted
from shared.boards import ALL_TIME, DEFAULT_BOARDS, Boards
from shared.formats import encode_member
from shared.keys import BoardKeys
from shared.periods import ALL_TIME as ALL_TIME_PERIOD
from shared.redisconn import lua

ONE_BOARD: dict[str, dict[str, str | int]] = {ALL_TIME: {"reset": "never"}}
THREE_BOARDS = DEFAULT_BOARDS
CONFIGS = {"one": ONE_BOARD, "three": THREE_BOARDS}
SCRIPT_CALLS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# What the harness itself sends around a run (this module's INFO, update.counted's XLEN and
# XREVRANGE of the stream): not the API's.
HARNESS_CALLS = frozenset({"info", "xlen", "xrevrange"})
MEMORY_USERS = 100_000
_CALL = re.compile(r"""redis\.p?call\(\s*['"]([A-Za-z_]+)['"]""")


def script_commands(source: str) -> frozenset[str]:
    """The commands a Lua script runs (``redis.call('NAME'`` and ``redis.pcall``), in lower
    case as ``INFO commandstats`` names them."""
    return frozenset(name.lower() for name in _CALL.findall(source))


AWARD_COMMANDS = script_commands(lua("services.score_api", "award", "limits"))


def redis_cost(
    delta: Mapping[str, int], awards: float, in_scripts: frozenset[str] = AWARD_COMMANDS
) -> dict[str, float]:
    """One run's ``INFO commandstats`` delta (calls by command), split: script calls (the
    award's round trips), every command a client sent (script calls, the follower's XREAD,
    connection setup; the harness's own left out), and the commands run inside scripts; each
    also per award."""
    scripts = sum(v for k, v in delta.items() if k in SCRIPT_CALLS)
    inside = sum(v for k, v in delta.items() if k in in_scripts)
    sent = sum(v for k, v in delta.items() if k not in in_scripts and k not in HARNESS_CALLS)
    return {
        "awards": awards,
        "script_calls": scripts,
        "top_level": sent,
        "in_scripts": inside,
        "script_calls_per_post": ratio(scripts, awards),
        "top_level_per_post": ratio(sent, awards),
        "in_scripts_per_post": ratio(inside, awards),
    }


async def redis_cpu_seconds(redis_url: str) -> float:
    """User + system CPU time of the Redis server so far (``INFO cpu``: server-wide)."""
    client = Redis.from_url(redis_url)
    try:
        cpu: dict[str, Any] = await client.info("cpu")
    finally:
        await client.aclose()
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _counters(redis_url: str, pid: int | None) -> dict[str, Any]:
    return {
        "calls": asyncio.run(command_calls(redis_url)),
        "usec": asyncio.run(command_calls(redis_url, "usec")),
        "redis_cpu": asyncio.run(redis_cpu_seconds(redis_url)),
        "api_cpu": cpu_seconds(pid) if pid else math.nan,
    }


def post_run(
    url: str, tokens: Path, redis_url: str, keys: BoardKeys, *, seconds: float, connections: int,
    tag: str, pid: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``POST /api/score`` at saturation (``wrk/post.lua``), counted by the API and the stream
    (``update.counted``) and by Redis (``redis_cost``), with the CPU time the API process
    (``pid``) and Redis spent meanwhile and the time Redis spent in script calls."""
    before = _counters(redis_url, pid)
    figures = counted(
        url,
        redis_url,
        keys,
        lambda: run_wrk(
            url, scenario="post", args=(str(tokens), tag), seconds=seconds, connections=connections
        ),
    )
    after = _counters(redis_url, pid)
    calls, usec = before["calls"], before["usec"]
    delta = {k: v - calls.get(k, 0) for k, v in after["calls"].items() if v != calls.get(k, 0)}
    figures["redis_calls"] = delta
    figures["redis"] = redis_cost(delta, figures["server"]["accepted"])
    figures["cpu"] = {
        "api_s": after["api_cpu"] - before["api_cpu"],
        "redis_s": after["redis_cpu"] - before["redis_cpu"],
        "script_s": sum(after["usec"].get(k, 0) - usec.get(k, 0) for k in SCRIPT_CALLS) / 1e6,
    }
    return figures


def run_order(rounds: int) -> list[str]:
    """A B, then B A, and so on: ``one three three one`` for two rounds."""
    order: list[str] = []
    for r in range(rounds):
        order += ["one", "three"] if r % 2 == 0 else ["three", "one"]
    return order


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One API's runs: mean req/s, the per-run figures, and Redis cost over all its runs."""
    rps = [float(run["rps"]) for run in runs]
    delta: dict[str, int] = {}
    for run in runs:
        for name, calls in run["redis_calls"].items():
            delta[name] = delta.get(name, 0) + calls
    awards = sum(float(run["server"]["accepted"]) for run in runs)
    cpu = {
        name: ratio(sum(float(run["cpu"][name]) for run in runs) * 1e6, awards)
        for name in ("api_s", "redis_s", "script_s")
    }
    return {
        "rps": sum(rps) / len(rps) if rps else float("nan"),
        "rps_runs": rps,
        "p99_us": max((float(run["p99_us"]) for run in runs), default=float("nan")),
        "errors": sum(float(run["errors"]) for run in runs),
        "redis": redis_cost(delta, awards),
        # Microseconds per award: the API process's CPU, Redis's CPU (server-wide), and the
        # time Redis spent running the award script (part of its CPU).
        "api_cpu_us_per_award": cpu["api_s"],
        "redis_cpu_us_per_award": cpu["redis_s"],
        "script_us_per_award": cpu["script_s"],
        "runs": runs,
    }


def boards_figures(
    runs: dict[str, list[dict[str, Any]]],
    order: list[str],
    periods: dict[str, dict[str, int]],
    redis_own: bool,
) -> dict[str, Any]:
    """The comparison's figures: each API's summary, the ratio three / one (means and each
    round's pair), the extra script calls per award, and the check (``problems``)."""
    one, three = summarize(runs["one"]), summarize(runs["three"])
    pairs = [
        ratio(float(t["rps"]), float(o["rps"]))
        for o, t in zip(runs["one"], runs["three"], strict=True)
    ]
    extra = three["redis"]["script_calls_per_post"] - one["redis"]["script_calls_per_post"]
    return {
        "one": one,
        "three": three,
        "order": order,
        "ratio": ratio(three["rps"], one["rps"]),
        "pair_ratios": pairs,
        "extra_script_calls_per_post": extra,
        "periods": periods,
        "redis_own": redis_own,
        "problems": boards_problems(runs, periods),
    }


def boards_problems(
    runs: dict[str, list[dict[str, Any]]], periods: dict[str, dict[str, int]]
) -> list[str]:
    """Why the comparison does not compare what it says ([] if it does): a refused POST, an
    award without its stream event, a period missing on the three-board API (or present on
    the one-board API). ``periods``: entries per board key ``<board>:<period>`` of each API."""
    problems = []
    for name, api_runs in runs.items():
        for i, run in enumerate(api_runs, 1):
            server = run["server"]
            what = f"{name} board{'s' if name != 'one' else ''}, run {i}"
            if server["accepted"] <= 0:
                problems.append(f"{what}: no award landed")
            if not server["score_requests"] == server["score_200"] == server["accepted"]:
                problems.append(
                    f"{what}: {server['score_requests']:.0f} POSTs, {server['score_200']:.0f} "
                    f"answered 200, {server['accepted']:.0f} awarded"
                )
            if server["stream_events"] != server["accepted"]:
                problems.append(
                    f"{what}: {server['stream_events']:.0f} stream events for "
                    f"{server['accepted']:.0f} awards"
                )
            if run.get("errors"):
                problems.append(f"{what}: {run['errors']:.0f} wrk errors")
    for name, config in CONFIGS.items():
        counts = periods.get(name, {})
        ranked = counts.get(f"{ALL_TIME}:{ALL_TIME_PERIOD}", 0)
        for board_id, spec in config.items():
            if spec.get("reset") == "never":
                continue
            held = [n for key, n in counts.items() if key.split(":", 1)[0] == board_id]
            # A period boundary inside the block splits the users over two periods.
            if not held or sum(held) < ranked or max(held) > ranked:
                problems.append(
                    f"{name} boards: {board_id} periods hold {held} entries for {ranked} "
                    "ranked users: every award must land in the current period"
                )
        strays = sorted(key for key in counts if key.split(":", 1)[0] not in config)
        if strays:
            problems.append(f"{name} board: periods of boards it does not have: {strays}")
    return problems


async def period_counts(redis_url: str, keys: BoardKeys) -> dict[str, int]:
    """Entries of the all-time board and of every period (``<board>:<period>``) under keys."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        counts = {f"{ALL_TIME}:{ALL_TIME_PERIOD}": int(await client.zcard(keys.board))}
        head = keys.period_board("", "")[: -len("::")] + ":"
        async for key in client.scan_iter(match=f"{head}*", count=1000):
            counts[key.removeprefix(head)] = int(await client.zcard(key))
    finally:
        await client.aclose()
    return counts


def compare(
    stack: Stack, tokens: Path, *, seconds: float, connections: int, rounds: int = 2
) -> dict[str, Any]:
    """Saturation runs of a one-board and a three-board API, interleaved (module doc)."""
    apis, keys = {}, {}
    try:
        for name, config in CONFIGS.items():
            prefix = f"{stack.prefix}-{name}"
            keys[name] = BoardKeys(prefix, "global")
            apis[name] = stack.start(
                "score_api", prefix=prefix, BOARDS=orjson.dumps(config).decode()
            )
        say(f"boards: APIs with one board ({apis['one'].url}) and three ({apis['three'].url})")
        for name, api in apis.items():
            run_wrk(
                api.url,
                scenario="post",
                args=(str(tokens), f"warm-{name}"),
                seconds=max(1.0, seconds / 5),
                connections=connections,
            )
        order = run_order(rounds)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
        for i, name in enumerate(order):
            run = post_run(
                apis[name].url,
                tokens,
                stack.redis_url,
                keys[name],
                seconds=seconds,
                connections=connections,
                tag=f"boards-{name}-{i}",
                pid=apis[name].pid,
            )
            runs[name].append(run)
            awards = run["server"]["accepted"]
            say(
                f"boards: POST with {name} board(s) {run['rps']:.0f} req/s, "
                f"{run['redis']['script_calls_per_post']:.3f} script calls per award, "
                f"CPU per award: API {ratio(run['cpu']['api_s'] * 1e6, awards):.0f} us, "
                f"Redis {ratio(run['cpu']['redis_s'] * 1e6, awards):.0f} us"
            )
        periods = {name: asyncio.run(period_counts(stack.redis_url, keys[name])) for name in keys}
    finally:
        for api in apis.values():
            stack.stop(api)
    figures = boards_figures(runs, order, periods, stack.owns_redis)
    say(f"boards: three / one = {figures['ratio']:.2f}x")
    for problem in figures["problems"]:
        say(f"boards: check FAILED: {problem}")
    return figures


async def board_memory(redis_url: str, keys: BoardKeys, users: int) -> dict[str, Any]:
    """Load ``users`` users into the three default boards' layout, measure every key with
    ``MEMORY USAGE ... SAMPLES 0`` (exact: every element), then delete them."""
    family = Boards.from_mapping(THREE_BOARDS)
    now_ms = int(time.time() * 1000)
    boards = [(ALL_TIME, ALL_TIME_PERIOD, keys.board, keys.members)]
    for board in family.periodic:
        period = board.period_at(now_ms).id
        boards.append(
            (
                board.board_id,
                period,
                keys.period_board(board.board_id, period),
                keys.period_members(board.board_id, period),
            )
        )
    load_seconds = await load_board(
        redis_url, keys, users, periods=[(zset, hash_) for _, _, zset, hash_ in boards[1:]]
    )
    client = Redis.from_url(redis_url, decode_responses=True)
    every = [keys.names, keys.seq, *(key for b in boards for key in b[2:])]
    try:
        sizes = {key: int(await client.memory_usage(key, samples=0) or 0) for key in every}
        encodings = {key: str(await client.object("encoding", key)) for key in every}
    finally:
        await client.unlink(*every)
        await client.aclose()
    return {
        "users": users,
        "load_seconds": load_seconds,
        # The loaded users' ids (reads.load_board: u0000000..) and their board members: a
        # longer id costs more on every board, being in the sorted set's member and twice in
        # the members hash (field and value).
        "user_id_chars": len("u0000000"),
        "member_chars": len(encode_member(1, "u0000000")),
        "boards": [
            {
                "board_id": board_id,
                "period": period,
                "zset_bytes": sizes[zset],
                "members_bytes": sizes[hash_],
                "zset_encoding": encodings[zset],
                "members_encoding": encodings[hash_],
                "bytes_per_user": ratio(sizes[zset] + sizes[hash_], users),
            }
            for board_id, period, zset, hash_ in boards
        ],
        "names_bytes": sizes[keys.names],
        "names_encoding": encodings[keys.names],
        "names_per_user": ratio(sizes[keys.names], users),
    }


def memory(stack: Stack, users: int) -> dict[str, Any]:
    keys = BoardKeys(f"{stack.prefix}-mem", "global")
    say(f"boards: Redis memory of {users:,} ranked users on each of the three default boards")
    figures = asyncio.run(board_memory(stack.redis_url, keys, users))
    say(
        "boards: bytes per ranked user: "
        + ", ".join(f"{b['board_id']} {b['bytes_per_user']:.0f}" for b in figures["boards"])
        + f"; names {figures['names_per_user']:.0f}"
    )
    return figures


def run(
    stack: Stack,
    tokens: Path,
    *,
    seconds: float,
    connections: int,
    memory_users: int = MEMORY_USERS,
) -> dict[str, Any]:
    figures = compare(stack, tokens, seconds=seconds, connections=connections)
    figures["memory"] = memory(stack, memory_users)
    return figures
