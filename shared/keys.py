"""Redis key names of one board; every key shares one hash tag so scripts run on Redis Cluster.

Every key a service writes is declared here, once: ``BoardKeys.<name>`` is the key's full name,
e.g. ``{lb:global}:board``, where the ``{...}`` part is the hash tag. The values' formats are
``shared.formats``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

# How long an hour's refusal counters stay in Redis: the persister copies them within minutes.
REFUSAL_COUNT_TTL_SECONDS = 3 * 86_400


class _Key:
    """A key of the board, ``<tag>:<suffix>``; its docstring says what it holds."""

    def __init__(self, suffix: str, doc: str) -> None:
        self.suffix = suffix
        self.__doc__ = doc

    @overload
    def __get__(self, board: None, owner: type[BoardKeys]) -> _Key: ...
    @overload
    def __get__(self, board: BoardKeys, owner: type[BoardKeys]) -> str: ...
    def __get__(self, board: BoardKeys | None, owner: type[BoardKeys]) -> str | _Key:
        return self if board is None else f"{board.tag}:{self.suffix}"


@dataclass(frozen=True)
class BoardKeys:
    """All keys of one board."""

    prefix: str
    board_id: str

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.board_id}}}"

    # The board: member ``<seq>:<user_id>``, score minus the user's total, so ascending
    # order is the ranking (shared.board).
    board = _Key("board", "Sorted set: the ranking (member <seq>:<user_id>, score -total).")
    members = _Key("members", "Hash user_id -> current board member, to find a user's entry.")
    names = _Key("names", "Hash user_id -> display name.")
    seq = _Key("seq", "Counter giving every accepted update its arrival order (the tie-break).")
    stream = _Key("events", "Stream of events (shared.events): persister and gateways read it.")
    dead_letters = _Key(
        "events:dead", "Stream of events the persister could not parse or store, with the error."
    )
    # Both parts are empty for a user banned before scoring (shared.formats.banned_value).
    banned = _Key("banned", "Hash user_id -> <score>|<member> the user had when banned.")
    banned_periods = _Key(
        "banned:periods",
        "Hash <user_id>|<board_id>|<period_id> -> <score>|<member> the user had there when banned.",
    )
    # Quarantine (a shadow ban): the user's entries move to hidden sorted sets of the same
    # form, where their awards keep scoring; ``members`` / period members still point at them.
    quarantined = _Key("quarantined", "Hash user_id -> ms at which the user was quarantined.")
    hidden_board = _Key("q:board", "Sorted set: quarantined users' all-time entries (as board).")
    revocations = _Key("revocations", "Hash revocation_id -> ms at which Redis applied it.")
    # Staging copies that ``persister rebuild`` fills, then renames into place in one script.
    rebuild_board = _Key("rebuild:board", "Staging copy of ``board`` (persister rebuild).")
    rebuild_members = _Key("rebuild:members", "Staging copy of ``members`` (persister rebuild).")
    rebuild_names = _Key("rebuild:names", "Staging copy of ``names`` (persister rebuild).")
    rebuild_banned = _Key("rebuild:banned", "Staging copy of ``banned`` (persister rebuild).")

    def idempotency(self, user_id: str, key: str) -> str:
        """Hash remembering the result of one (user, Idempotency-Key) pair."""
        # '|' cannot occur in a user id or an idempotency key, so the pair is unambiguous.
        return f"{self.tag}:idem:{user_id}|{key}"

    def cooldown(self, user_id: str, action: str) -> str:
        """Present (with a TTL) while the user may not complete ``action`` again."""
        return f"{self.tag}:cd:{user_id}|{action}"

    def period_board(self, board_id: str, period_id: str) -> str:
        """Sorted set of one period of a periodic board (the same order as ``board``)."""
        return f"{self.tag}:p:{board_id}:{period_id}"

    def period_members(self, board_id: str, period_id: str) -> str:
        """Hash user_id -> that period's board member, to find a user's entry there."""
        return f"{self.tag}:pm:{board_id}:{period_id}"

    def hidden_period_board(self, board_id: str, period_id: str) -> str:
        """Sorted set of quarantined users' entries in one period (expires with the period)."""
        return f"{self.tag}:q:p:{board_id}:{period_id}"

    def period_keys(self, board_id: str, period_id: str) -> tuple[str, str]:
        """``period_board`` and ``period_members`` of one period."""
        return self.period_board(board_id, period_id), self.period_members(board_id, period_id)

    def ticket(self, ticket: str) -> str:
        """Hash of one action ticket: user, action, started/not-before/expiry (ms), state."""
        return f"{self.tag}:ticket:{ticket}"

    def open_tickets(self, user_id: str, action: str) -> str:
        """Sorted set of the user's open tickets for ``action``, scored by their start (ms)."""
        return f"{self.tag}:open:{user_id}|{action}"

    def daily(self, user_id: str, action: str) -> str:
        """``<UTC day number>:<completions>`` of ``action`` by the user; expires at midnight."""
        return f"{self.tag}:day:{user_id}|{action}"

    def refusals(self, hour: int) -> str:
        """Hash reason -> refusals the API answered in one UTC hour (``hour``: epoch seconds
        // 3600); expires after ``REFUSAL_COUNT_TTL_SECONDS``, copied to PostgreSQL's
        ``refusal_counts`` by the persister."""
        return f"{self.tag}:refusals:{hour}"

    def rate(self, limit: str, subject: str) -> str:
        """The GCRA theoretical arrival time of one limit for one user or address."""
        return f"{self.tag}:rl:{limit}:{subject}"
