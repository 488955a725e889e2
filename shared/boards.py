"""The configured boards (``BOARDS``): one family of rankings sharing a hash tag, each board
with its reset schedule (shared.periods). Pure: parsing and validation, no I/O.

``all-time`` never resets and is the board of the seed's endpoints and keys; every other
board keeps one sorted set per period (``BoardKeys.period_board``), so a reset is no
operation: the next award simply writes the next period's key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from shared.formats import BOARD_ID
from shared.periods import Period, Schedule

ALL_TIME = "all-time"
MAX_BOARDS = 8
DEFAULT_BOARDS: dict[str, dict[str, str | int]] = {
    ALL_TIME: {"reset": "never"},
    "weekly": {"reset": "weekly"},
    "daily": {"reset": "daily"},
}
_FIELDS = frozenset({"reset", "timezone", "week_start", "interval_seconds"})


@dataclass(frozen=True, slots=True)
class Board:
    board_id: str
    schedule: Schedule

    @property
    def periodic(self) -> bool:
        return self.schedule.reset != "never"

    def period_at(self, ms: int) -> Period:
        return self.schedule.at(ms)


@dataclass(frozen=True)
class Boards:
    """The boards in their configured order; ``all-time`` is always one of them."""

    boards: tuple[Board, ...]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> Boards:
        if not isinstance(raw, Mapping) or not 1 <= len(raw) <= MAX_BOARDS:
            raise ValueError(f"BOARDS must map 1..{MAX_BOARDS} board ids to their schedules")
        boards = tuple(_board(name, spec) for name, spec in raw.items())
        by_id = {b.board_id: b for b in boards}
        if ALL_TIME not in by_id or by_id[ALL_TIME].periodic:
            raise ValueError(f'BOARDS needs "{ALL_TIME}": {{"reset": "never"}}')
        return cls(boards)

    def __iter__(self) -> Iterator[Board]:
        return iter(self.boards)

    def get(self, board_id: str) -> Board | None:
        return next((b for b in self.boards if b.board_id == board_id), None)

    @property
    def periodic(self) -> tuple[Board, ...]:
        return tuple(b for b in self.boards if b.periodic)


def _board(name: object, spec: object) -> Board:
    if not isinstance(name, str) or not BOARD_ID.matches(name):
        raise ValueError(f"board {name!r}: the id must be {BOARD_ID.describe()}")
    if not isinstance(spec, Mapping) or not set(spec) <= _FIELDS or "reset" not in spec:
        raise ValueError(f"board {name!r}: give reset and optionally {sorted(_FIELDS - {'reset'})}")
    try:
        return Board(name, Schedule(**spec))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"board {name!r}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Slot:
    """One period an award may land in, with when its keys expire: ``retention`` periods
    after it starts (the current one and those before stay in Redis)."""

    board_id: str
    period: Period
    expire_at_ms: int


class Slots:
    """For each periodic board, the periods an award at ``now`` may land in by this
    process's clock: the current one, and its neighbour when now is within
    ``MARGIN_MS`` of a boundary. The award script picks the one holding Redis's TIME, so a
    replica's clock decides nothing while it is within the margin of Redis's; further off, it
    gets 503 near a boundary rather than a wrong period. Recomputed only when the set changes
    (zoneinfo arithmetic stays off the hot path), and short: one candidate per board most
    of the time."""

    MARGIN_MS = 60_000

    def __init__(self, boards: Boards, retention: int) -> None:
        self._boards = boards.periodic
        self._retention = retention
        self._valid = (0, 0)  # [from, until): where the candidate set holds
        self._slots: tuple[Slot, ...] = ()

    def at(self, now_ms: int) -> tuple[Slot, ...]:
        if self._boards and not self._valid[0] <= now_ms < self._valid[1]:
            self._compute(now_ms)
        return self._slots

    def _compute(self, now_ms: int) -> None:
        slots = []
        valid_from, valid_until = -(2**63), 2**63
        margin = self.MARGIN_MS
        for board in self._boards:
            schedule = board.schedule
            current = schedule.at(now_ms)
            assert current.start_ms is not None
            assert current.end_ms is not None
            start, end = current.start_ms, current.end_ms
            near_start, near_end = now_ms < start + margin, now_ms >= end - margin
            if near_start:
                slots.append(self._slot(board, schedule.previous(current)))
            slots.append(self._slot(board, current))
            if near_end:
                slots.append(self._slot(board, schedule.following(current)))
            # The set changes where now crosses start + margin or end - margin.
            cuts = sorted({start, min(start + margin, end), max(end - margin, start), end})
            low = max(c for c in cuts if c <= now_ms)
            high = min((c for c in cuts if c > now_ms), default=end)
            valid_from, valid_until = max(valid_from, low), min(valid_until, high)
        self._valid = (valid_from, valid_until)
        self._slots = tuple(slots)

    def current(self, now_ms: int) -> tuple[Slot, ...]:
        """Each periodic board's current period at ``now_ms``."""
        return tuple(self._slot(b, b.period_at(now_ms)) for b in self._boards)

    def retained(self, now_ms: int) -> tuple[Slot, ...]:
        """Every period of each board a user may have an entry in: the retained ones up to
        the current one, and the next (a ban must reach them all). Not cached: bans are rare."""
        slots = []
        for board in self._boards:
            schedule = board.schedule
            period = schedule.following(schedule.at(now_ms))
            for _ in range(self._retention + 1):
                slots.append(self._slot(board, period))
                period = schedule.previous(period)
        return tuple(slots)

    def _slot(self, board: Board, period: Period) -> Slot:
        last = period
        for _ in range(self._retention - 1):
            last = board.schedule.following(last)
        assert last.end_ms is not None
        return Slot(board.board_id, period, last.end_ms)
