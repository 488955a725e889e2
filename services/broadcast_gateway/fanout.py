"""The fan-out policy without I/O: who gets the diff, who is behind and gets the latest snapshot
instead, and who is stuck. A client is a ``Sink``; time is an argument, never read here.

Every client is either *in step* (it holds the previous version and its sink is writable), in
which case the diff is written straight to it, or *behind*, in which case diffs are skipped for
it and the latest snapshot is written as soon as it can take one: at the next broadcast, or
when its sink drains (``catch_up``). The board is state, not a log, so a slow client never
accumulates a backlog: at most the sink's high-water mark plus one snapshot is queued for it.

Each message is framed once (``frame``, given by the I/O layer) and the same bytes are written
to every sink. Every operation returns an ``Outcome`` that says what it wrote, for metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.broadcast_gateway.protocol import (
    PING_MESSAGE,
    Board,
    Diff,
    board_changes,
    diff_message,
    snapshot_message,
)
from shared.boards import ALL_TIME
from shared.periods import ALL_TIME as ALL_PERIOD


class Sink(Protocol):
    """Where one client's frames go. Nothing here blocks: the I/O layer says when it drains."""

    @property
    def writable(self) -> bool:
        """It takes a frame now: open, and not above its high-water mark."""
        ...

    @property
    def unsent(self) -> int:
        """Bytes written to it and not sent yet."""
        ...

    def write(self, frame: bytes) -> bool:
        """Queue one whole frame without waiting; False when it is going away."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake without waiting (and bound it: the sink's business)."""
        ...


class Client:
    """One sink's place in the fan-out."""

    __slots__ = ("closing", "sink", "slow_since", "version")

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.version: int | None = None  # of the last board written to it
        self.slow_since: float | None = None  # since when its unsent bytes exceed the limit
        self.closing: str | None = None  # why it is being closed, once it is (a metric label)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation wrote: frames and bytes of each message type."""

    diff: Diff | None = None  # the version a publish made; None when the board did not change
    diffs: int = 0
    diff_bytes: int = 0
    snapshots: int = 0
    snapshot_bytes: int = 0
    pings: int = 0
    ping_bytes: int = 0
    conflated: int = 0  # clients that held a version and skipped this diff
    events_ms: Sequence[int] = ()  # the ``ts`` of the events a publish carries, passed through


NOTHING = Outcome()


def unframed(message: bytes) -> bytes:
    """The message as its own frame (the unit tests' sinks read messages directly)."""
    return message


class Fanout:
    """The current board and version of one board of the family (in its current period), and
    the clients that follow it."""

    def __init__(
        self,
        frame: Callable[[bytes], bytes] = unframed,
        board_id: str = ALL_TIME,
        period: str = ALL_PERIOD,
    ) -> None:
        self.frame = frame
        self.board_id = board_id
        self.period = period
        self.clients: set[Client] = set()
        self.version = 0
        self.board: Board = ()
        self.loaded = False
        self._snapshot: tuple[int, bytes, bytes] | None = None
        self._ping = frame(PING_MESSAGE)

    def snapshot(self) -> tuple[int, bytes]:
        """The current version and its snapshot message, encoded once per version."""
        version, message, _ = self._snapshot_frame()
        return version, message

    def snapshot_frame(self) -> bytes:
        """The current snapshot as the one frame every sink is given."""
        return self._snapshot_frame()[2]

    def _snapshot_frame(self) -> tuple[int, bytes, bytes]:
        if self._snapshot is None or self._snapshot[0] != self.version:
            message = snapshot_message(self.version, self.board, self.board_id, self.period)
            self._snapshot = (self.version, message, self.frame(message))
        return self._snapshot

    def add(self, client: Client) -> Outcome:
        """Follow from now on: the snapshot at once if the board is loaded, then diffs."""
        self.clients.add(client)
        return self._caught_up(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)

    def resync(self, client: Client) -> Outcome:
        """The client asked for a snapshot (it saw a gap)."""
        client.version = None
        return self._caught_up(client)

    def catch_up(self, client: Client) -> Outcome:
        """Write the latest snapshot to ``client`` if it is behind and can take it now (the
        I/O layer calls this when its sink drains)."""
        return self._caught_up(client)

    # add, resync and catch_up are the public operations; they share this, not each other,
    # so that a subclass that wraps them sees each write once.
    def _caught_up(self, client: Client) -> Outcome:
        written = self._catch_up(client)
        return Outcome(snapshots=1, snapshot_bytes=written) if written else NOTHING

    def _catch_up(self, client: Client) -> int:
        """The bytes of the snapshot written to ``client``, or 0."""
        if (
            not self.loaded
            or client.version == self.version
            or client.closing is not None
            or client not in self.clients  # a drain reported after it left
            or not client.sink.writable
        ):
            return 0
        version, _, frame = self._snapshot_frame()
        if not client.sink.write(frame):
            return 0
        client.version = version
        return len(frame)

    def reset(self, board: Board, period: str | None = None) -> Outcome:
        """Start a new version that every client receives as a snapshot (load, reload, and a
        new ``period``: no diff ever spans two periods)."""
        self.board = board
        if period is not None:
            self.period = period
        self.version += 1
        self.loaded = True
        snapshots = written = 0
        for client in self.clients:
            size = self._catch_up(client)
            snapshots += size > 0
            written += size
        return Outcome(snapshots=snapshots, snapshot_bytes=written)

    def publish(self, board: Board, event_times_ms: Sequence[int] = ()) -> Outcome:
        """Broadcast the change from the current board to ``board`` (``diff`` None if nothing
        changed). ``event_times_ms`` only passes through, for the delay metric."""
        changes = board_changes(self.board, board)
        if not changes and len(board) == len(self.board):
            return NOTHING
        diff = Diff(self.version + 1, changes, len(board))
        self.board, self.version = board, diff.version
        frame = self.frame(diff_message(diff, self.board_id, self.period))
        base, version = diff.base, diff.version
        sent = conflated = snapshots = snapshot_bytes = 0
        # The hot loop: one comparison, one property and one write per in-step client.
        for client in self.clients:
            sink = client.sink
            if client.version == base and sink.writable:
                if sink.write(frame):
                    client.version = version
                    sent += 1
            else:  # behind: the snapshot now if it can take one, else when it drains
                conflated += client.version is not None
                size = self._catch_up(client)
                snapshots += size > 0
                snapshot_bytes += size
        return Outcome(
            diff=diff,
            diffs=sent,
            diff_bytes=sent * len(frame),
            snapshots=snapshots,
            snapshot_bytes=snapshot_bytes,
            conflated=conflated,
            events_ms=event_times_ms,
        )

    def ping(self) -> Outcome:
        """An application-level ping to every client that can take it (browsers see it)."""
        frame = self._ping
        sent = 0
        for client in self.clients:
            if client.closing is None and client.sink.writable and client.sink.write(frame):
                sent += 1
        return Outcome(pings=sent, ping_bytes=sent * len(frame))

    def stuck(self, now: float, limit: int, grace: float) -> list[Client]:
        """Clients whose unsent bytes stayed above ``limit`` for longer than ``grace`` seconds,
        judged at ``now`` (any clock, the same at every call); closing ones are left out."""
        out: list[Client] = []
        for client in self.clients:
            if client.sink.unsent <= limit:
                client.slow_since = None
            elif client.slow_since is None:
                client.slow_since = now
            elif now - client.slow_since > grace and client.closing is None:
                out.append(client)
        return out

    def close(self, client: Client, code: int, reason: str, why: str) -> bool:
        """Start closing ``client`` for ``why``; nothing more is written to it. False if it
        was closing already or has left."""
        if client.closing is not None or client not in self.clients:
            return False
        client.closing = why
        client.version = None  # out of step for good: publish and catch_up pass it by
        client.sink.close(code, reason)
        return True
