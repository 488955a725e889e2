"""The gateway's wire protocol without I/O: board diffs, message encoding, inbound parsing.

A board is the ranked list of the top N entries (rank ``i + 1`` at index ``i``). A diff from
board A to board B lists every entry of B that is not already at its rank in A, plus B's size;
``apply_diff`` puts each change at its rank and cuts the board to ``size``. The browser's
``app.js`` applies diffs with the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from shared.board import Entry

Board = tuple[Entry, ...]


class ProtocolError(ValueError):
    """A diff that cannot be applied to the board it claims to follow."""


@dataclass(frozen=True, slots=True)
class Diff:
    version: int
    changes: tuple[Entry, ...]
    size: int

    @property
    def base(self) -> int:
        return self.version - 1


def board_changes(old: Sequence[Entry], new: Sequence[Entry]) -> tuple[Entry, ...]:
    """The entries of ``new`` that differ from what ``old`` holds at the same rank."""
    return tuple(e for i, e in enumerate(new) if i >= len(old) or old[i] != e)


def apply_diff(board: Sequence[Entry], changes: Sequence[Entry], size: int) -> Board:
    """Put each change at its rank, then cut or keep the board at ``size`` entries."""
    rows: list[Entry | None] = list(board)
    for change in changes:
        index = change.rank - 1
        if index < 0:
            raise ProtocolError(f"rank {change.rank} is not positive")
        rows.extend([None] * (index + 1 - len(rows)))
        rows[index] = change
    out = rows[:size]
    if len(out) != size or any(row is None for row in out):
        raise ProtocolError("the diff leaves a gap in the board")
    return tuple(row for row in out if row is not None)


def snapshot_message(version: int, board: Sequence[Entry]) -> bytes:
    return orjson.dumps(
        {"type": "snapshot", "version": version, "board": [e.as_dict() for e in board]}
    )


def diff_message(diff: Diff) -> bytes:
    return orjson.dumps(
        {
            "type": "diff",
            "version": diff.version,
            "base": diff.base,
            "changes": [e.as_dict() for e in diff.changes],
            "size": diff.size,
        }
    )


PING_MESSAGE = orjson.dumps({"type": "ping"})


def is_resync(message: str | bytes) -> bool:
    """Whether an inbound frame is ``{"type": "resync"}``; every other frame is ignored."""
    try:
        body = orjson.loads(message)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("type") == "resync"


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    board: Board


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Message = Snapshot | Diff | Ping


def decode_message(raw: str | bytes) -> Message:
    """Parse an outbound message, as a client does (the tests' clients use this)."""
    try:
        body = orjson.loads(raw)
        kind = body["type"]
        if kind == "ping":
            return Ping()
        if kind == "snapshot":
            return Snapshot(_int(body["version"]), _entries(body["board"]))
        if kind == "diff":
            diff = Diff(_int(body["version"]), _entries(body["changes"]), _int(body["size"]))
            if body["base"] != diff.base:
                raise ProtocolError("a diff's base must be its version - 1")
            return diff
    except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    raise ProtocolError(f"unknown message type {kind!r}")


class ClientView:
    """What a client holds: the board and its version, built from snapshots and diffs."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.board: Board = ()

    def receive(self, message: Message) -> bool:
        """Apply one message; False when a diff does not follow (the client sends ``resync``)."""
        if isinstance(message, Snapshot):
            self.version, self.board = message.version, message.board
        elif isinstance(message, Diff):
            if self.version != message.base:
                return False
            self.board = apply_diff(self.board, message.changes, message.size)
            self.version = message.version
        return True


class RateLimit:
    """Token bucket over inbound messages: ``burst`` at once, ``rate`` per second sustained.

    ``now`` is any monotonic clock's reading in seconds, the same clock at every call.
    """

    __slots__ = ("_at", "_tokens", "burst", "rate")  # one per connection

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def allow(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def event_time_ms(fields: Mapping[bytes, bytes]) -> int | None:
    """The ``ts`` (ms) of a stream entry of any type, or None; the board never depends on it."""
    raw = fields.get(b"ts")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _entries(rows: object) -> Board:
    if not isinstance(rows, list):
        raise ProtocolError("expected a list of entries")
    return tuple(Entry(**row) for row in rows)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("expected an integer")
    return value
