"""The server-side action catalogue: the client names an action, never a number of points.

Each action is worth a positive integer of points and may have a cooldown: the minimum time
between two completions of that action by the same user. ``ACTIONS`` maps an action either
to its points (no cooldown) or to ``{"points": P, "cooldown_seconds": C}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ActionSpec = int | dict[str, int]

DEFAULT_ACTIONS: dict[str, ActionSpec] = {
    "quest_complete": 10,
    "daily_login": {"points": 5, "cooldown_seconds": 20 * 3600},
    "level_up": {"points": 25, "cooldown_seconds": 60},
    "match_win": {"points": 20, "cooldown_seconds": 30},
    "achievement_unlocked": 50,
}
MAX_POINTS = 1_000_000
MAX_COOLDOWN = 7 * 24 * 3600


class UnknownAction(LookupError):
    """The action is not in the catalogue (HTTP 422)."""


@dataclass(frozen=True, slots=True)
class Action:
    points: int
    cooldown_seconds: int = 0


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


def _action(name: str, spec: object) -> Action:
    if isinstance(spec, dict):
        if not set(spec) <= {"points", "cooldown_seconds"}:
            raise ValueError(f"action {name!r}: only points and cooldown_seconds are allowed")
        points, cooldown = spec.get("points"), spec.get("cooldown_seconds", 0)
    else:
        points, cooldown = spec, 0
    if not _int_in(points, 1, MAX_POINTS):
        raise ValueError(f"action {name!r}: points must be an integer in 1..{MAX_POINTS}")
    if not _int_in(cooldown, 0, MAX_COOLDOWN):
        raise ValueError(f"action {name!r}: cooldown_seconds must be in 0..{MAX_COOLDOWN}")
    assert isinstance(points, int)
    assert isinstance(cooldown, int)
    return Action(points, cooldown)


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
