"""The action catalogue: points, trust modes, caps and ticket timing, validated at start-up."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from pydantic import ValidationError

from services.score_api.actions import (
    DEFAULT_ACTIONS,
    MAX_OPEN,
    MAX_POINTS,
    MAX_TICKET_SECONDS,
    Action,
    ActionCatalogue,
    ActionSpec,
    UnknownAction,
)
from services.score_api.settings import ApiSettings


def test_the_default_catalogue_is_safe() -> None:
    catalogue = ActionCatalogue.from_mapping(DEFAULT_ACTIONS)
    assert catalogue.get("quest_complete") == Action(
        10, mode="ticket", min_seconds=30, max_seconds=3600, max_open=1
    )
    assert catalogue.get("level_up") == Action(
        25, mode="ticket", min_seconds=60, max_seconds=3600, max_open=1
    )
    assert catalogue.get("match_win") == Action(20, mode="server")
    assert catalogue.get("achievement_unlocked") == Action(50, mode="server")
    assert catalogue.get("daily_login") == Action(
        5, cooldown_seconds=72000, mode="client", max_per_day=1
    )
    assert catalogue.unbounded() == []


def test_unknown_action_is_refused() -> None:
    with pytest.raises(UnknownAction):
        ActionCatalogue.from_mapping(DEFAULT_ACTIONS).points_for("free_points")


@pytest.mark.parametrize("points", [0, -5, MAX_POINTS + 1, True, 2.5, "10", None])
def test_non_positive_or_non_integer_points_are_refused(points: object) -> None:
    with pytest.raises(ValueError, match="points"):
        ActionCatalogue.from_mapping({"x": points})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="points"):
        ActionCatalogue.from_mapping({"x": {"points": points}})  # type: ignore[dict-item]


def test_empty_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        ActionCatalogue.from_mapping({})


def test_the_short_form_is_an_unbounded_client_action() -> None:
    catalogue = ActionCatalogue.from_mapping(
        {"boss": {"points": 40, "cooldown_seconds": 300}, "coin": 1}
    )
    assert catalogue.get("boss") == Action(40, 300)
    assert catalogue.get("coin") == Action(1, 0, "client")
    assert catalogue.unbounded() == ["coin"]


def test_a_ticket_action_defaults_to_an_hour_and_one_open_ticket() -> None:
    action = ActionCatalogue.from_mapping({"q": {"points": 1, "mode": "ticket"}}).get("q")
    assert (action.min_seconds, action.max_seconds, action.max_open) == (0, 3600, 1)


# Every combination of mode and one field at its bounds: valid exactly where documented.
MODES = ("ticket", "server", "client")
VALUES = {
    "cooldown_seconds": (-1, 0, 7 * 24 * 3600, 7 * 24 * 3600 + 1),
    "max_per_day": (-1, 0, 100_000, 100_001),
    "min_seconds": (-1, 0, 3599, 3600),  # with max_seconds 3600: must stay below it
    "max_seconds": (0, 1, MAX_TICKET_SECONDS, MAX_TICKET_SECONDS + 1),
    "max_open": (0, 1, MAX_OPEN, MAX_OPEN + 1),
}
TICKET_ONLY = {"min_seconds", "max_seconds", "max_open"}


@pytest.mark.parametrize(
    ("mode", "field", "position"),
    list(itertools.product(MODES, VALUES, range(4))),
)
def test_each_field_is_accepted_exactly_within_its_bounds(
    mode: str, field: str, position: int
) -> None:
    spec: dict[str, Any] = {"points": 5, "mode": mode, field: VALUES[field][position]}
    if field == "min_seconds":
        spec["max_seconds"] = 3600
    valid = position in (1, 2) and (mode == "ticket" or field not in TICKET_ONLY)
    if field == "max_seconds" and position == 1:
        valid = mode == "ticket"  # min_seconds 0 < max_seconds 1
    if valid:
        assert getattr(ActionCatalogue.from_mapping({"x": spec}).get("x"), field) == spec[field]
    else:
        with pytest.raises(ValueError, match="action 'x'"):
            ActionCatalogue.from_mapping({"x": spec})


@pytest.mark.parametrize(
    "spec",
    [
        {"points": 5, "bonus": 2},
        {"cooldown_seconds": 5},
        {"points": 5, "mode": "trusted"},
        {"points": 5, "mode": None},
        {"points": 5, "mode": "Ticket"},
        {"points": 5, "mode": "ticket", "min_seconds": 60, "max_seconds": 60},
        {"points": 5, "mode": "ticket", "max_seconds": True},
        {"points": 5, "mode": "ticket", "max_open": 1.0},
    ],
)
def test_invalid_action_specs_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="action 'x'"):
        ActionCatalogue.from_mapping({"x": spec})


@pytest.mark.parametrize("name", ["", "a b", "a|b", "{tag}", "quest\n", "é", "x" * 65])
def test_action_names_are_plain_key_parts(name: str) -> None:
    with pytest.raises(ValueError, match="name must be"):
        ActionCatalogue.from_mapping({name: 5})


PRODUCTION: dict[str, Any] = {
    "environment": "production",
    "jwt_secret": "s" * 40,
    "jwt_issuer": "https://issuer.example",
    "jwt_audience": "leaderboard",
}


@pytest.mark.parametrize(
    "spec",
    [5, {"points": 5}, {"points": 5, "mode": "client"}, {"points": 5, "cooldown_seconds": 0}],
)
def test_production_refuses_unbounded_client_actions_unless_allowed(spec: Any) -> None:
    with pytest.raises(ValidationError, match="ALLOW_UNBOUNDED_CLIENT_ACTIONS"):
        ApiSettings(**PRODUCTION, actions={"coin": spec})
    allowed = ApiSettings(**PRODUCTION, actions={"coin": spec}, allow_unbounded_client_actions=True)
    assert allowed.catalogue().unbounded() == ["coin"]
    # Development starts with it; bounded client actions and the default start anywhere.
    assert ApiSettings(actions={"coin": spec}).catalogue().unbounded() == ["coin"]
    bounded: list[ActionSpec] = [
        {"points": 5, "max_per_day": 3},
        {"points": 5, "cooldown_seconds": 60},
    ]
    for spec_ in bounded:
        ApiSettings(**PRODUCTION, actions={"coin": spec_})
    ApiSettings(**PRODUCTION)


@pytest.mark.parametrize("budget", ["points_per_user_per_hour", "points_per_user_per_day"])
def test_a_budget_below_an_action_s_points_stops_the_start(budget: str) -> None:
    with pytest.raises(ValidationError, match="could never be awarded"):
        ApiSettings.model_validate({budget: 49})  # achievement_unlocked is worth 50
    assert ApiSettings.model_validate({budget: 50})
    assert ApiSettings.model_validate({budget: 0}).budgets() != ApiSettings().budgets()
