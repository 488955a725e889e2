"""The server-side action catalogue: the client names an action, never a number of points.

``ACTIONS`` maps each action either to its points (the short form: a ``client`` action with
no cooldown) or to an object with these fields:

- ``points``: a positive integer;
- ``mode``: who may complete it. ``ticket``: a player, with a ticket started at least
  ``min_seconds`` earlier (services.score_api.tickets); ``server``: only a trusted reporter
  (a game server's ``score:report`` token); ``client``: a player, whenever the limits allow;
- ``cooldown_seconds``: the least time between two completions by one user;
- ``max_per_day``: completions per user per UTC day (0: no cap);
- ``min_seconds``, ``max_seconds``, ``max_open`` (ticket mode only): the earliest completion
  after the start, the ticket's lifetime, and the open tickets one user may hold for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal, cast

from shared.formats import ACTION

ActionSpec = int | dict[str, int | str]
Mode = Literal["ticket", "server", "client"]
MODES: tuple[Mode, ...] = ("ticket", "server", "client")

# Safe by default: what a player's token alone can earn is bounded by tickets, caps and
# cooldowns; the actions a client cannot witness are the game server's to report.
DEFAULT_ACTIONS: dict[str, ActionSpec] = {
    "quest_complete": {"points": 10, "mode": "ticket", "min_seconds": 30, "max_seconds": 3600},
    "level_up": {"points": 25, "mode": "ticket", "min_seconds": 60, "max_seconds": 3600},
    "match_win": {"points": 20, "mode": "server"},
    "achievement_unlocked": {"points": 50, "mode": "server"},
    "daily_login": {
        "points": 5,
        "mode": "client",
        "cooldown_seconds": 20 * 3600,
        "max_per_day": 1,
    },
}
MAX_POINTS = 1_000_000
MAX_COOLDOWN = 7 * 24 * 3600
MAX_PER_DAY = 100_000
MAX_TICKET_SECONDS = 7 * 24 * 3600
MAX_OPEN = 16
DEFAULT_MAX_SECONDS = 3600
_TICKET_FIELDS = frozenset({"min_seconds", "max_seconds", "max_open"})
_FIELDS = frozenset({"points", "mode", "cooldown_seconds", "max_per_day"}) | _TICKET_FIELDS


class UnknownAction(LookupError):
    """The action is not in the catalogue (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Action:
    points: int
    cooldown_seconds: int = 0
    mode: Mode = "client"
    max_per_day: int = 0
    min_seconds: int = 0
    max_seconds: int = 0
    max_open: int = 0

    @property
    def unbounded(self) -> bool:
        """A client action that a player may repeat as fast as the request limits allow."""
        return self.mode == "client" and not self.cooldown_seconds and not self.max_per_day

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class ActionCatalogue:
    actions: Mapping[str, Action]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, ActionSpec]) -> ActionCatalogue:
        if not raw:
            raise ValueError("the action catalogue is empty")
        return cls({name: _action(name, spec) for name, spec in raw.items()})

    def get(self, action: str) -> Action:
        try:
            return self.actions[action]
        except KeyError:
            raise UnknownAction(action) from None

    def points_for(self, action: str) -> int:
        return self.get(action).points

    def unbounded(self) -> list[str]:
        """Client actions with neither a cooldown nor a daily cap."""
        return [name for name, action in self.actions.items() if action.unbounded]

    def max_points(self) -> int:
        return max(action.points for action in self.actions.values())


def _action(name: str, spec: object) -> Action:
    if not ACTION.matches(name):
        raise ValueError(f"action {name!r}: the name must be {ACTION.describe()}")
    if not isinstance(spec, dict):
        spec = {"points": spec}
    unknown = set(spec) - _FIELDS
    if unknown:
        raise ValueError(f"action {name!r}: unknown fields {sorted(unknown)}")
    mode = spec.get("mode", "client")
    if mode not in MODES:
        raise ValueError(f"action {name!r}: mode must be one of {', '.join(MODES)}")
    if mode != "ticket" and set(spec) & _TICKET_FIELDS:
        raise ValueError(f"action {name!r}: min_seconds, max_seconds, max_open need mode ticket")
    default_max = DEFAULT_MAX_SECONDS if mode == "ticket" else 0
    default_open = 1 if mode == "ticket" else 0
    bounds = {
        "points": (None, 1, MAX_POINTS),
        "cooldown_seconds": (0, 0, MAX_COOLDOWN),
        "max_per_day": (0, 0, MAX_PER_DAY),
        "min_seconds": (0, 0, MAX_TICKET_SECONDS - 1),
        "max_seconds": (default_max, 1, MAX_TICKET_SECONDS),
        "max_open": (default_open, 1, MAX_OPEN),
    }
    values: dict[str, int] = {}
    for field, (default, low, high) in bounds.items():
        value = spec.get(field, default)
        if field in _TICKET_FIELDS and mode != "ticket":
            values[field] = cast(int, default)
            continue
        if not _int_in(value, low, high):
            raise ValueError(f"action {name!r}: {field} must be an integer in {low}..{high}")
        values[field] = cast(int, value)
    if mode == "ticket" and values["min_seconds"] >= values["max_seconds"]:
        raise ValueError(f"action {name!r}: min_seconds must be less than max_seconds")
    return Action(mode=cast(Mode, mode), **values)


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
