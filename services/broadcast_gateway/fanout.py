"""Fan-out of board versions to clients: one encoding per change, never waiting for a client.

Every client is either *in step* (it holds the previous version and its write buffer is below
the high-water mark), in which case a diff is written straight into its buffer, or *behind*,
in which case diffs are skipped for it and its own sender task writes the latest snapshot as
soon as its buffer drains. The board is state, not a log, so a slow client never accumulates
a backlog: at most the high-water mark plus one snapshot is ever buffered for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from services.broadcast_gateway import metrics
from services.broadcast_gateway.protocol import (
    PING_MESSAGE,
    Board,
    Diff,
    RateLimit,
    board_changes,
    diff_message,
    snapshot_message,
)


class Client:
    """One connection's place in the fan-out."""

    __slots__ = ("close_reason", "connection", "limiter", "slow_since", "version", "wake")

    def __init__(self, connection: ServerConnection, limiter: RateLimit) -> None:
        self.connection = connection
        self.limiter = limiter
        self.version: int | None = None  # version of the last board written to it
        self.wake = asyncio.Event()
        self.slow_since: float | None = None
        self.close_reason: str | None = None  # set by whoever closes it, for metrics

    @property
    def writable(self) -> bool:
        # ``paused`` is the transport's flow control: above the high-water mark until the
        # buffer falls below the low-water mark.
        return self.connection.protocol.state is State.OPEN and not self.connection.paused

    @property
    def unsent(self) -> int:
        return self.connection.transport.get_write_buffer_size()

    def write(self, data: bytes) -> bool:
        """Queue one text frame without waiting; False when the connection is going away."""
        try:
            self.connection.protocol.send_text(data)
            self.connection.send_data()
        except Exception:  # the connection is closing; its handler cleans up
            return False
        return True


class Fanout:
    """The current board and version of this instance, and the clients that follow it."""

    def __init__(self) -> None:
        self.clients: set[Client] = set()
        self.version = 0
        self.board: Board = ()
        self.loaded = False
        self._snapshot: tuple[int, bytes] | None = None

    def snapshot(self) -> tuple[int, bytes]:
        """The current version and its snapshot, encoded once per version."""
        if self._snapshot is None or self._snapshot[0] != self.version:
            self._snapshot = (self.version, snapshot_message(self.version, self.board))
        return self._snapshot

    def reset(self, board: Board) -> None:
        """Start a new version that every client receives as a snapshot (load, reload)."""
        self.board = board
        self.version += 1
        self.loaded = True
        metrics.VERSION.set(self.version)
        for client in self.clients:
            client.wake.set()

    def publish(self, board: Board, event_times_ms: Sequence[int] = ()) -> Diff | None:
        """Broadcast the change from the current board to ``board``; None if nothing changed."""
        changes = board_changes(self.board, board)
        if not changes and len(board) == len(self.board):
            return None
        started = time.perf_counter()
        diff = Diff(self.version + 1, changes, len(board))
        self.board, self.version = board, diff.version
        data = diff_message(diff)
        sent = 0
        for client in self.clients:
            if client.version == diff.base and client.writable:
                if client.write(data):
                    client.version = diff.version
                    sent += 1
            elif client.version is not None:
                metrics.CONFLATED.inc()
                client.wake.set()
        metrics.MESSAGES.labels("diff").inc(sent)
        metrics.BYTES.labels("diff").inc(sent * len(data))
        metrics.VERSION.set(self.version)
        now = time.perf_counter()
        metrics.BROADCAST.observe(now - started)
        now_ms = time.time() * 1000
        for ts in event_times_ms:
            metrics.EVENT_DELAY.observe(max(0.0, now_ms - ts) / 1000)
        return diff

    def ping(self) -> None:
        """An application-level ping to every client that can take it (browsers see it)."""
        sent = sum(client.write(PING_MESSAGE) for client in self.clients if client.writable)
        metrics.MESSAGES.labels("ping").inc(sent)
        metrics.BYTES.labels("ping").inc(sent * len(PING_MESSAGE))

    async def feed(self, client: Client) -> None:
        """Send ``client`` the latest snapshot whenever it is behind, once it can take it.

        Runs for the life of the connection; ends with ConnectionClosed when it closes.
        """
        while True:
            await client.wake.wait()
            client.wake.clear()
            if not self.loaded or client.version == self.version:
                continue
            await client.connection.drain()  # returns once the buffer fell below low water
            version, data = self.snapshot()
            # Set before the write: later diffs may follow the snapshot in the same buffer.
            client.version = version
            await client.connection.send(data, text=True)
            metrics.MESSAGES.labels("snapshot").inc()
            metrics.BYTES.labels("snapshot").inc(len(data))

    def slow_clients(self, now: float, limit: int, grace: float) -> list[Client]:
        """Clients whose unsent bytes stayed above ``limit`` for longer than ``grace``."""
        out: list[Client] = []
        for client in self.clients:
            if client.unsent <= limit:
                client.slow_since = None
            elif client.slow_since is None:
                client.slow_since = now
            elif now - client.slow_since > grace:
                out.append(client)
        return out


def batches(clients: Iterable[Client], size: int) -> list[list[Client]]:
    items = list(clients)
    return [items[i : i + size] for i in range(0, len(items), size)]
