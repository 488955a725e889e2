"""One fan-out load process: N WebSocket connections on plain asyncio protocols (uvloop).

``python -m bench.wsload --url URL --count N --out FILE`` connects, prints
``CONNECTED ok failed``, counts frames between ``START`` and ``STOP`` lines on stdin, writes
its figures to FILE and prints ``DONE``. A sample of connections also timestamps every
(user, score) they see, for the POST-to-receive latency.

A full client library costs tens of microseconds of Python per received frame, which at
10,000 connections took more CPU than the gateway it measured and made the clients, not the
gateway, fall behind. Here a frame costs one header check (and a JSON parse on the sampled
connections only): RFC 6455 framing, server to client, is unmasked and needs no state but a
buffer. The handshake is checked (101 and Sec-WebSocket-Accept); pings are answered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import orjson
import uvloop

from bench.stack import raise_fd_limit

CONNECT_CONCURRENCY = 64
SAMPLED_PER_PROCESS = 100
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def scan_frames(buf: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """Complete unmasked frames at the start of ``buf``: ((opcode, start, end) of each
    payload, bytes consumed). What remains is an incomplete frame to wait on."""
    frames: list[tuple[int, int, int]] = []
    pos, size = 0, len(buf)
    while size - pos >= 2:
        length, head = buf[pos + 1] & 0x7F, 2
        if length == 126:
            if size - pos < 4:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
        elif length == 127:
            if size - pos < 10:
                break
            length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
        end = pos + head + length
        if end > size:
            break
        frames.append((buf[pos] & 0x0F, pos + head, end))
        pos = end
    return frames, pos


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked, final client frame (payloads under 126 bytes: pongs and closes)."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


@dataclass
class LoadState:
    counting: bool = False
    frames: int = 0
    connected: int = 0
    failed: int = 0
    closed: int = 0
    records: list[tuple[int, str, int, float]] = field(default_factory=list)


class LoadClient(asyncio.Protocol):
    def __init__(self, index: int, sampled: bool, state: LoadState, request: bytes) -> None:
        self.index, self.sampled, self.state = index, sampled, state
        self.key = base64.b64encode(os.urandom(16))
        self.request = request.replace(b"{key}", self.key)
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.open.done():
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if not sep:
                self.buf = buf
                return
            self._handshake(head)
            buf = rest
        frames, used = scan_frames(buf)
        self.buf = buf[used:]
        state = self.state
        for opcode, start, end in frames:
            if opcode == OP_TEXT:
                if state.counting:
                    state.frames += 1
                    if self.sampled:
                        self._record(buf[start:end])
            elif opcode == OP_PING and self.transport is not None:
                self.transport.write(client_frame(OP_PONG, buf[start:end]))
            elif opcode == OP_CLOSE and self.transport is not None:
                self.transport.write(client_frame(OP_CLOSE, buf[start : start + 2]))
                self.transport.close()

    def _handshake(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        accept = base64.b64encode(hashlib.sha1(self.key + GUID, usedforsecurity=False).digest())
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(b":") for x in lines)}
        if lines[0].split(b" ")[1:2] != [b"101"] or headers.get(b"sec-websocket-accept") != accept:
            self.open.set_exception(ConnectionError(f"handshake refused: {lines[0]!r}"))
            if self.transport is not None:
                self.transport.close()
            return
        self.open.set_result(None)

    def _record(self, payload: bytes) -> None:
        now = time.time()
        body = orjson.loads(payload)
        for row in body.get("changes") or body.get("board") or ():
            self.state.records.append((self.index, row["user_id"], row["score"], now))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))
        elif self.state.counting:
            self.state.closed += 1


async def _connect(
    url: str, index: int, sampled: bool, state: LoadState, gate: asyncio.Semaphore
) -> None:
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: http://bench.invalid\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    async with gate:
        try:
            _, client = await loop.create_connection(
                lambda: LoadClient(index, sampled, state, request), host, port
            )
            async with asyncio.timeout(120):
                await client.open
        except (OSError, TimeoutError):
            state.failed += 1
            return
    state.connected += 1


async def _main(url: str, count: int, base: int, out: Path) -> None:
    state = LoadState()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    every = max(1, count // SAMPLED_PER_PROCESS)
    await asyncio.gather(
        *(_connect(url, base + i, i % every == 0, state, gate) for i in range(count))
    )
    print(f"CONNECTED {state.connected} {state.failed}", flush=True)
    loop = asyncio.get_running_loop()
    started = 0.0
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line == "START":
            state.frames, state.records, state.counting = 0, [], True
            started = time.time()
        elif line in ("STOP", ""):
            state.counting = False
            result = {
                "frames": state.frames,
                "seconds": time.time() - started if started else 0.0,
                "connected": state.connected,
                "failed": state.failed,
                "closed": state.closed,
                "records": state.records,
            }
            out.write_bytes(orjson.dumps(result))  # noqa: ASYNC240 (once, at the end)
            print("DONE", flush=True)
            break
    # Leave without closing handshakes: the gateway sees resets, which is fine here.
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wsload")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--base", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    uvloop.run(_main(args.url, args.count, args.base, args.out))


if __name__ == "__main__":
    main()
