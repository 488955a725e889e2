"""Which board and period a read asks for (``?board=&period=``), decided without I/O.

The default board is ``all-time``; the default period is the current one. An unknown board,
a malformed period id or a future period is 422. A past period is read from Redis while it
keeps it (``BOARD_RETENTION_PERIODS``), then from the archives (services.score_api.archives);
one never archived is 404 (``not_kept``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.score_api.problems import Problem
from services.score_api.tickets import rfc3339
from shared.boards import ALL_TIME, Board, Boards
from shared.formats import BOARD_ID
from shared.keys import BoardKeys
from shared.periods import Period


@dataclass(frozen=True, slots=True)
class View:
    board: Board
    period: Period
    ended: bool = False  # the period is over: its archive may be final
    kept: bool = True  # Redis still keeps it; else only the archives have it

    @property
    def all_time(self) -> bool:
        return not self.board.periodic

    def keys(self, keys: BoardKeys) -> tuple[str, str]:
        """The sorted set and the members hash this view reads."""
        if self.all_time:
            return keys.board, keys.members
        return keys.period_keys(self.board.board_id, self.period.id)

    def hidden_key(self, keys: BoardKeys) -> str:
        """The hidden sorted set of quarantined users' entries that goes with ``keys``."""
        if self.all_time:
            return keys.hidden_board
        return keys.hidden_period_board(self.board.board_id, self.period.id)

    def fields(self, final: bool = False) -> dict[str, object]:
        """What a response says about the board and period it shows."""
        return {
            "board_id": self.board.board_id,
            "period": self.period.id,
            "starts_at": _time(self.period.start_ms),
            "ends_at": _time(self.period.end_ms),
            "final": final,
        }


def view(boards: Boards, params: Mapping[str, str], now_ms: int, retention: int) -> View:
    """The view ``params`` name, or the Problem that refuses them."""
    board_id = params.get("board", ALL_TIME)
    board = boards.get(board_id) if BOARD_ID.matches(board_id) else None
    if board is None:
        raise _invalid(f"board must be one of {', '.join(b.board_id for b in boards)}")
    schedule = board.schedule
    current = schedule.at(now_ms)
    period_id = params.get("period")
    if period_id is None:
        return View(board, current)
    try:
        period = schedule.named(period_id)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    if (period.start_ms or 0) > now_ms:
        raise _invalid(f"period {period_id!r} has not started")
    kept = current
    for _ in range(retention):
        if kept == period:
            return View(board, period, ended=period != current)
        kept = schedule.previous(kept)
    return View(board, period, ended=True, kept=False)


def not_kept(view: View, retention: int) -> Problem:
    return Problem(
        404,
        "period-not-kept",
        f"period {view.period.id!r} of {view.board.board_id!r} is older than the {retention}"
        " periods kept and was never archived",
        reason="period_not_kept",
    )


def all_time(boards: Boards) -> View:
    """The all-time board's one period: what a read without ``board`` and ``period`` shows."""
    board = boards.get(ALL_TIME)
    assert board is not None
    return View(board, board.period_at(0))


def board_list(boards: Boards, now_ms: int) -> list[dict[str, object]]:
    """``GET /api/boards``: every board with its schedule and its current period."""
    out: list[dict[str, object]] = []
    for board in boards:
        schedule, period = board.schedule, board.period_at(now_ms)
        out.append(
            {
                "board_id": board.board_id,
                "reset": schedule.reset,
                "timezone": schedule.timezone,
                "period": period.id,
                "starts_at": _time(period.start_ms),
                "ends_at": _time(period.end_ms),
            }
        )
    return out


def _time(ms: int | None) -> str | None:
    return None if ms is None else rfc3339(ms)


def _invalid(detail: str) -> Problem:
    return Problem(422, "invalid-parameter", detail, reason="query")
