"""The fan-out load client: its frame scanner, and its handshake against a real gateway."""

from __future__ import annotations

import asyncio

import redis.asyncio
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode

from bench.wsload import OP_PING, OP_TEXT, LoadState, _connect, scan_frames
from tests.gateway_fixtures import BoardWriter, run_gateway, wait_until


def server_frame(opcode: Opcode, payload: bytes) -> bytes:
    return Frame(opcode, payload).serialize(mask=False)


@given(
    messages=st.lists(st.binary(max_size=70_000), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=8),
)
def test_frames_split_anywhere_are_read_back_whole_and_in_order(
    messages: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(server_frame(Opcode.TEXT, m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {len(stream)})
    got: list[bytes] = []
    buf, start = b"", 0
    for point in points:
        buf += stream[start:point]
        start = point
        frames, used = scan_frames(buf)
        got += [buf[a:b] for op, a, b in frames if op == OP_TEXT]
        buf = buf[used:]
    assert got == messages
    assert buf == b""


def test_opcodes_are_reported() -> None:
    data = server_frame(Opcode.PING, b"hi") + server_frame(Opcode.TEXT, b"x")
    frames, used = scan_frames(data)
    assert [(op, data[a:b]) for op, a, b in frames] == [(OP_PING, b"hi"), (OP_TEXT, b"x")]
    assert used == len(data)


async def test_load_clients_complete_the_handshake_and_count_real_frames(
    redis_url: str, redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    writer = BoardWriter(redis_client, key_prefix)
    async with run_gateway(
        redis_url, key_prefix, gateway_tick_ms=5, gateway_allowed_origins=["*"]
    ) as gateway:
        state = LoadState(counting=True)
        gate = asyncio.Semaphore(4)
        await asyncio.gather(*(_connect(gateway.url, i, i == 0, state, gate) for i in range(5)))
        assert (state.connected, state.failed) == (5, 0)
        await wait_until(lambda: state.frames == 5, what="five snapshots")
        await writer.set_score("u1", 42, "Ann")
        await wait_until(lambda: state.frames == 10, what="five diffs")
        # Only the sampled connection (index 0) timestamps what it sees.
        assert [(i, user, score) for i, user, score, _ in state.records] == [(0, "u1", 42)]


async def test_a_refused_handshake_counts_as_failed(redis_url: str, key_prefix: str) -> None:
    async with run_gateway(
        redis_url, key_prefix, gateway_allowed_origins=["https://only.example"]
    ) as gateway:
        state = LoadState()
        await _connect(gateway.url, 0, False, state, asyncio.Semaphore(1))
        assert (state.connected, state.failed) == (0, 1)
