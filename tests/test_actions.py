"""The action catalogue maps names to positive integer points and nothing else."""

from __future__ import annotations

import pytest

from services.score_api.actions import (
    DEFAULT_ACTIONS,
    MAX_POINTS,
    Action,
    ActionCatalogue,
    UnknownAction,
)


def test_default_catalogue_awards_configured_points() -> None:
    catalogue = ActionCatalogue.from_mapping(DEFAULT_ACTIONS)
    assert catalogue.points_for("quest_complete") == 10
    assert catalogue.points_for("daily_login") == 5


def test_unknown_action_is_refused() -> None:
    with pytest.raises(UnknownAction):
        ActionCatalogue.from_mapping(DEFAULT_ACTIONS).points_for("free_points")


@pytest.mark.parametrize("points", [0, -5, MAX_POINTS + 1, True, 2.5])
def test_non_positive_or_non_integer_points_are_refused(points: object) -> None:
    with pytest.raises(ValueError, match="points"):
        ActionCatalogue.from_mapping({"x": points})  # type: ignore[dict-item]


def test_empty_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ActionCatalogue.from_mapping({})


def test_actions_may_carry_a_cooldown() -> None:
    catalogue = ActionCatalogue.from_mapping(
        {"boss": {"points": 40, "cooldown_seconds": 300}, "coin": 1}
    )
    assert catalogue.get("boss") == Action(40, 300)
    assert catalogue.get("coin") == Action(1, 0)


@pytest.mark.parametrize(
    "spec",
    [
        {"points": 5, "cooldown_seconds": -1},
        {"points": 5, "bonus": 2},
        {"cooldown_seconds": 5},
        {"points": 5, "cooldown_seconds": 10**9},
    ],
)
def test_invalid_action_specs_are_refused(spec: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="action 'x'"):
        ActionCatalogue.from_mapping({"x": spec})
