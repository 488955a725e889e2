"""Fan-out of board versions to clients: one encoding per change, never waiting for a client.

Every client is either *in step* (it holds the previous version and its write buffer is below
the high-water mark), in which case a diff is written straight into its buffer, or *behind*,
in which case diffs are skipped for it and the latest snapshot is written as soon as it can
take one: at the next broadcast, or when its transport resumes writing (``resume_writing``,
below the low-water mark). The board is state, not a log, so a slow client never accumulates
a backlog: at most the high-water mark plus one snapshot is ever buffered for it.

No task or waiter is kept per client. Each message becomes one WebSocket frame, serialized
once per broadcast and written as the same bytes to every transport: server frames are not
masked and the gateway runs without extensions, so they are identical for all clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode
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


def text_frame(message: bytes) -> bytes:
    """``message`` as one unmasked, unfragmented text frame, ready for any client's socket."""
    return Frame(Opcode.TEXT, message).serialize(mask=False)


PING_FRAME = text_frame(PING_MESSAGE)


class FanoutConnection(ServerConnection):
    """A server connection that says when its write buffer has drained (``on_resume``)."""

    on_resume: Callable[[], None] | None = None

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_resume is not None:
            # Not from inside the transport's own write path: on the next loop iteration.
            self.loop.call_soon(self.on_resume)


class Client:
    """One connection's place in the fan-out."""

    __slots__ = ("close_reason", "connection", "limiter", "slow_since", "version")

    def __init__(self, connection: ServerConnection, limiter: RateLimit) -> None:
        self.connection = connection
        self.limiter = limiter
        self.version: int | None = None  # version of the last board written to it
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

    def write(self, frame: bytes) -> bool:
        """Queue one serialized frame without waiting; False when the connection is going away.

        Straight to the transport, past the protocol object: it keeps no state about outgoing
        data frames, and frames are written whole, so they never interleave with its own
        control frames (pong, close).
        """
        try:
            self.connection.transport.write(frame)
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
        self._snapshot: tuple[int, bytes, bytes] | None = None

    def snapshot(self) -> tuple[int, bytes]:
        """The current version and its snapshot message, encoded once per version."""
        version, message, _ = self._snapshot_frame()
        return version, message

    def _snapshot_frame(self) -> tuple[int, bytes, bytes]:
        if self._snapshot is None or self._snapshot[0] != self.version:
            message = snapshot_message(self.version, self.board)
            self._snapshot = (self.version, message, text_frame(message))
        return self._snapshot

    def add(self, client: Client) -> None:
        """Follow from now on: the snapshot at once if the board is loaded, then diffs."""
        self.clients.add(client)
        connection = client.connection
        if isinstance(connection, FanoutConnection):
            connection.on_resume = lambda: self.catch_up(client)
        self.catch_up(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        if isinstance(client.connection, FanoutConnection):
            client.connection.on_resume = None

    def resync(self, client: Client) -> None:
        """The client asked for a snapshot (it saw a gap)."""
        client.version = None
        self.catch_up(client)

    def catch_up(self, client: Client) -> None:
        """Write the latest snapshot to ``client`` if it is behind and can take it now."""
        if not self.loaded or client.version == self.version or not client.writable:
            return
        version, _, frame = self._snapshot_frame()
        if client.write(frame):
            client.version = version
            metrics.MESSAGES.labels("snapshot").inc()
            metrics.BYTES.labels("snapshot").inc(len(frame))

    def reset(self, board: Board) -> None:
        """Start a new version that every client receives as a snapshot (load, reload)."""
        self.board = board
        self.version += 1
        self.loaded = True
        metrics.VERSION.set(self.version)
        for client in self.clients:
            self.catch_up(client)

    def publish(self, board: Board, event_times_ms: Sequence[int] = ()) -> Diff | None:
        """Broadcast the change from the current board to ``board``; None if nothing changed."""
        changes = board_changes(self.board, board)
        if not changes and len(board) == len(self.board):
            return None
        started = time.perf_counter()
        diff = Diff(self.version + 1, changes, len(board))
        self.board, self.version = board, diff.version
        frame = text_frame(diff_message(diff))
        sent = conflated = 0
        for client in self.clients:
            if client.version == diff.base and client.writable:
                if client.write(frame):
                    client.version = diff.version
                    sent += 1
            else:  # behind: the snapshot now if it can take one, else when it drains
                conflated += client.version is not None
                self.catch_up(client)
        metrics.CONFLATED.inc(conflated)
        metrics.MESSAGES.labels("diff").inc(sent)
        metrics.BYTES.labels("diff").inc(sent * len(frame))
        metrics.VERSION.set(self.version)
        now = time.perf_counter()
        metrics.BROADCAST.observe(now - started)
        now_ms = time.time() * 1000
        for ts in event_times_ms:
            metrics.EVENT_DELAY.observe(max(0.0, now_ms - ts) / 1000)
        return diff

    def ping(self) -> None:
        """An application-level ping to every client that can take it (browsers see it)."""
        sent = sum(client.write(PING_FRAME) for client in self.clients if client.writable)
        metrics.MESSAGES.labels("ping").inc(sent)
        metrics.BYTES.labels("ping").inc(sent * len(PING_FRAME))

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
