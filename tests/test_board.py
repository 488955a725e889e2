"""The board's tie-break encoding, in Python and as Redis actually orders it."""

from __future__ import annotations

import random

import redis.asyncio

from shared.board import entries_from_reply
from shared.board_reader import BoardReader
from shared.formats import MAX_SCORE, decode_member, encode_member
from shared.keys import BoardKeys
from tests.models import ranking_key


def test_member_round_trips_user_ids_with_colons() -> None:
    assert decode_member(encode_member(42, "ns:user@x")) == (42, "ns:user@x")


def test_ranking_orders_by_score_then_arrival_then_user() -> None:
    rows = [(10, 5, "b"), (20, 9, "z"), (10, 3, "c"), (10, 3, "a")]
    ranked = sorted(rows, key=lambda r: ranking_key(*r))
    assert ranked == [(20, 9, "z"), (10, 3, "a"), (10, 3, "c"), (10, 5, "b")]


def test_reply_rows_become_ranked_entries() -> None:
    rows: list[bytes | str] = [encode_member(1, "u1"), "30", "", encode_member(2, "u2"), "7", "Bo"]
    entries = entries_from_reply(rows, first_rank=11)
    assert [(e.rank, e.user_id, e.name, e.score) for e in entries] == [
        (11, "u1", "u1", 30),
        (12, "u2", "Bo", 7),
    ]


async def test_redis_order_matches_python_order_exactly(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    rng = random.Random(7)
    rows = [
        (rng.choice([0, 1, 2, MAX_SCORE, 2**52 + 1]), rng.randrange(10**6), f"u{i}")
        for i in range(300)
    ]
    await redis_client.zadd(keys.board, {encode_member(seq, u): -s for s, seq, u in rows})
    entries, total = await BoardReader(redis_client, keys).page(0, 300)
    expected = sorted(rows, key=lambda r: ranking_key(*r))
    assert total == 300
    assert [(e.score, e.user_id) for e in entries] == [(s, u) for s, _, u in expected]
    assert [e.rank for e in entries] == list(range(1, 301))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_top_at_gives_the_page_with_the_stream_position_it_includes(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    reader = BoardReader(redis_client, keys)
    assert await reader.top_at(10) == ([], "0-0")  # no board, no stream yet
    await redis_client.zadd(keys.board, {encode_member(1, "a"): -5, encode_member(2, "b"): -7})
    await redis_client.hset(keys.names, "a", "Ann")
    first = text(await redis_client.xadd(keys.stream, {"v": "1"}))
    entries, last = await reader.top_at(10)
    assert last == first
    assert [(e.rank, e.user_id, e.name, e.score) for e in entries] == [
        (1, "b", "b", 7),
        (2, "a", "Ann", 5),
    ]
    assert entries == (await reader.page(0, 10))[0]
    second = text(await redis_client.xadd(keys.stream, {"v": "1"}))
    assert (await reader.top_at(1)) == (entries[:1], second)
