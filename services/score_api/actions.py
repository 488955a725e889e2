"""The server-side action catalogue: the client names an action, never a number of points."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ACTIONS: dict[str, int] = {
    "quest_complete": 10,
    "daily_login": 5,
    "level_up": 25,
    "match_win": 20,
    "achievement_unlocked": 50,
}
MAX_POINTS = 1_000_000


class UnknownAction(LookupError):
    """The action is not in the catalogue (HTTP 422)."""


@dataclass(frozen=True)
class ActionCatalogue:
    points: Mapping[str, int]

    @classmethod
    def from_mapping(cls, raw: Mapping[str, int]) -> ActionCatalogue:
        if not raw:
            raise ValueError("the action catalogue is empty")
        for name, points in raw.items():
            if not isinstance(points, int) or isinstance(points, bool):
                raise ValueError(f"action {name!r}: points must be an integer")
            if not 1 <= points <= MAX_POINTS:
                raise ValueError(f"action {name!r}: points must be in 1..{MAX_POINTS}")
        return cls(dict(raw))

    def points_for(self, action: str) -> int:
        try:
            return self.points[action]
        except KeyError:
            raise UnknownAction(action) from None
