"""Reference models the tests hold the real code to; no service imports them.

``gcra`` is the rate arithmetic ``limits.lua`` runs inside Redis (``cost`` 1 for a request,
the points for a budget); ``TicketBook`` the ticket rules of ``ticket.lua`` and ``award.lua``
(services.score_api.tickets); ``ranking_key`` is the order
Redis gives the board's sorted set; ``decode_message``, ``apply_diff`` and ``ClientView`` are a
gateway client, following the rule the browser's ``app.js`` applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from services.broadcast_gateway.protocol import Board, Diff
from services.score_api.actions import Action
from services.score_api.ratelimit import Limit
from services.score_api.settings import ApiSettings
from shared.board import Entry
from shared.formats import encode_member


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    tat_us: int  # the new TAT to store when allowed; the old one otherwise
    remaining: int
    wait_ms: int  # refused: until this request would be allowed
    reset_ms: int  # allowed: until the limit is fully available again


def gcra(limit: Limit, stored_tat_us: int | None, now_ms: int, cost: int = 1) -> Decision:
    now = now_ms * 1000
    tat = max(stored_tat_us or now, now)
    new_tat = tat + limit.interval_us * cost
    allow_at = new_tat - limit.window_us
    if now < allow_at:
        return Decision(False, tat, 0, _ceil_ms(allow_at - now), 0)
    remaining = (limit.window_us - (new_tat - now)) // limit.interval_us
    return Decision(True, new_tat, remaining, 0, _ceil_ms(new_tat - now))


def gcra_bound(limit: Limit, span_ms: int) -> int:
    """The most units a GCRA limit grants in a span of ``span_ms`` from cold: the TAT can
    reach at most the span's end plus one window, one interval per unit (about the quota's
    burst plus quota x span / window)."""
    return (span_ms + limit.window_ms) * 1000 // limit.interval_us


@dataclass
class ModelTicket:
    user: str
    action: str
    started: int
    not_before: int
    expires: int
    redeemed: bool = False


@dataclass
class TicketBook:
    """The ticket rules, as plain Python: what each start and redeem must answer."""

    tickets: dict[str, ModelTicket]
    open: dict[tuple[str, str], list[str]]  # (user, action) -> open tickets, oldest first

    @classmethod
    def empty(cls) -> TicketBook:
        return cls({}, {})

    def start(self, ticket: str, user: str, action: str, now: int, spec: TicketSpec) -> int:
        """Issue ``ticket``; returns how many older tickets it cancelled."""
        # Expired tickets leave the open set first; then the oldest make room.
        opened = [t for t in self.open.get((user, action), []) if self.tickets[t].expires > now]
        cancelled = max(0, len(opened) - spec.max_open + 1)
        opened = opened[cancelled:]
        self.tickets[ticket] = ModelTicket(user, action, now, now + spec.min_ms, now + spec.max_ms)
        self.open[(user, action)] = [*opened, ticket]
        return cancelled

    def redeem(self, ticket: str, user: str, action: str, now: int) -> str:
        """'new' | 'ticket-invalid' | 'ticket-used' | 'too-early' (without other limits)."""
        t = self.tickets.get(ticket)
        if t is None or t.user != user or t.action != action or now >= t.expires:
            return "ticket-invalid"
        if t.redeemed:
            return "ticket-used"
        if ticket not in self.open.get((user, action), []):
            return "ticket-invalid"  # cancelled
        if now < t.not_before:
            return "too-early"
        t.redeemed = True
        self.open[(user, action)].remove(ticket)
        return "new"


@dataclass(frozen=True, slots=True)
class TicketSpec:
    min_ms: int
    max_ms: int
    max_open: int


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


def ranking_key(score: int, seq: int, user_id: str) -> tuple[int, str]:
    """Python mirror of the Redis order: sort ascending by this key to get the ranking."""
    return (-score, encode_member(seq, user_id))


class ProtocolError(ValueError):
    """A diff that cannot be applied to the board it claims to follow."""


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


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    board: Board


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Message = Snapshot | Diff | Ping


def decode_message(raw: str | bytes) -> Message:
    """Parse an outbound message, as a client does (the tests' clients)."""
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


def _entries(rows: object) -> Board:
    if not isinstance(rows, list):
        raise ProtocolError("expected a list of entries")
    return tuple(Entry(**row) for row in rows)


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError("expected an integer")
    return value


def completions_bound(action: Action, span_ms: int, days: int, cold: bool) -> int | None:
    """The most completions of ``action`` one player's token can get in a span of
    ``span_ms`` touching ``days`` UTC days; None when only the request limits bound it.
    ``cold``: the span starts with no ticket open and no cooldown running."""
    bounds = []
    if action.mode == "server":
        return 0
    if action.mode == "ticket" and action.min_seconds:
        # Each ticket is open at least min_seconds, at most max_open at once; from cold the
        # first completes min_seconds in, otherwise one opened before may complete at once.
        per = action.min_seconds * 1000
        bounds.append(action.max_open * span_ms // per + (0 if cold else action.max_open))
    if action.cooldown_seconds:
        bounds.append(span_ms // (action.cooldown_seconds * 1000) + 1)
    if action.max_per_day:
        bounds.append(action.max_per_day * days)
    return min(bounds) if bounds else None


def farming_bound(settings: ApiSettings, span_ms: int, days: int, cold: bool = False) -> int:
    """The most points one valid player token can gain in ``span_ms`` under ``settings``:
    per action its completions, then the points budgets and the request limits over all."""
    if not settings.player_writes:
        return 0
    catalogue = settings.catalogue()
    per_action = 0
    unbounded = False
    for action in catalogue.actions.values():
        count = completions_bound(action, span_ms, days, cold)
        if count is None:
            unbounded = True
        else:
            per_action += count * action.points
    requests = [gcra_bound(limit, span_ms) for limit in settings.user_limits()]
    budgets = [gcra_bound(limit, span_ms) for limit in settings.budgets()]
    candidates = list(budgets)
    if requests:
        # Every award is one request (starting a ticket is another): the most points is
        # the request bound times the largest action.
        candidates.append(min(requests) * catalogue.max_points())
    if not unbounded:
        candidates.append(per_action)
    if not candidates:
        raise ValueError("nothing bounds a player's points under these settings")
    return min(candidates)
