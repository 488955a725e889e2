"""The gateway's wire protocol without I/O: board diffs, message encoding, inbound parsing.

A board is the ranked list of the top N entries (rank ``i + 1`` at index ``i``). A diff from
board A to board B lists every entry of B that is not already at its rank in A, plus B's size;
a client puts each change at its rank and cuts the board to ``size`` (the browser's ``app.js``;
the tests' reference client is ``tests/models.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from shared.board import Entry
from shared.boards import ALL_TIME
from shared.periods import ALL_TIME as ALL_PERIOD

Board = tuple[Entry, ...]


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


def snapshot_message(
    version: int, board: Sequence[Entry], board_id: str = ALL_TIME, period: str = ALL_PERIOD
) -> bytes:
    return orjson.dumps(
        {
            "type": "snapshot",
            "version": version,
            "board_id": board_id,
            "period": period,
            "board": [e.as_dict() for e in board],
        }
    )


def diff_message(diff: Diff, board_id: str = ALL_TIME, period: str = ALL_PERIOD) -> bytes:
    """A diff within one period of one board (a new period always starts with a snapshot)."""
    return orjson.dumps(
        {
            "type": "diff",
            "version": diff.version,
            "base": diff.base,
            "board_id": board_id,
            "period": period,
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
