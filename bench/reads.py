"""Scenario 2, board reads on a large board: ``/api/score-board`` and ``/rank?around=5``.

The board is bulk-loaded straight into Redis in the layout the API uses (board sorted set,
members and names hashes, arrival counter), with pipelined ZADD/HSET: fast, not through the API.
``bench/boards.py`` loads periods of periodic boards the same way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from bench.httpload import run_wrk
from bench.stack import Service, say
from bench.stats import ratio
from shared.formats import encode_member
from shared.keys import BoardKeys

MAX_PRELOADED_SCORE = 1_000_000
CHUNK = 10_000


async def load_board(
    redis_url: str,
    keys: BoardKeys,
    users: int,
    seed: int = 7,
    periods: Sequence[tuple[str, str]] = (),
) -> float:
    """Rank ``users`` users u0000000.. with random scores; returns the seconds it took.

    ``periods``: (sorted set, members hash) of periods that get the same entries, as the
    award script writes them (one member per award on every board: a user's first period)."""
    rng = random.Random(seed)
    started = time.perf_counter()
    client = Redis.from_url(redis_url)
    try:
        base = int(await client.incrby(keys.seq, users)) - users
        for first in range(0, users, CHUNK):
            board: dict[str, float] = {}
            members: dict[FieldT, EncodableT] = {}
            names: dict[FieldT, EncodableT] = {}
            for i in range(first, min(users, first + CHUNK)):
                user = f"u{i:07d}"
                member = encode_member(base + i + 1, user)
                board[member] = -rng.randint(1, MAX_PRELOADED_SCORE)
                members[user] = member
                names[user] = f"User {i}"
            pipe = client.pipeline(transaction=False)
            pipe.zadd(keys.board, board)
            pipe.hset(keys.members, mapping=members)
            pipe.hset(keys.names, mapping=names)
            for period_board, period_members in periods:
                pipe.zadd(period_board, board)
                pipe.hset(period_members, mapping=members)
            await pipe.execute()
    finally:
        await client.aclose()
    return time.perf_counter() - started


def run(
    api: Service, redis_url: str, keys: BoardKeys, users: int, seconds: float, connections: int
) -> dict[str, object]:
    say(f"reads: loading {users:,} ranked users into Redis")
    load_seconds = asyncio.run(load_board(redis_url, keys, users))
    say(f"reads: board loaded in {load_seconds:.1f} s")
    ceiling = run_wrk(f"{api.url}/healthz", seconds=seconds, connections=connections)
    say(f"reads: /healthz {ceiling['rps']:.0f} req/s")
    board = run_wrk(f"{api.url}/api/score-board", seconds=seconds, connections=connections)
    say(f"reads: /api/score-board {board['rps']:.0f} req/s")
    rank = run_wrk(
        api.url, scenario="rank", args=(str(users),), seconds=seconds, connections=connections
    )
    say(f"reads: /rank?around=5 {rank['rps']:.0f} req/s")
    return {
        "users": users,
        "load_seconds": load_seconds,
        "ceiling": ceiling,
        "board": board,
        "rank": rank,
        "board_ratio": ratio(board["rps"], ceiling["rps"]),
        "rank_ratio": ratio(rank["rps"], ceiling["rps"]),
        "connections": connections,
        "seconds": seconds,
    }
