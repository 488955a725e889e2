"""The anomaly flag rules (services.persister.flagrules), and their settings, without I/O."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from pydantic import ValidationError

from services.persister.flagrules import (
    RULE_CEILING,
    RULE_OUTLIER,
    Flag,
    FlagRules,
    evaluate,
    is_suppressed,
    nearest_rank,
    p99,
    p99_of_others,
)
from services.persister.settings import PersisterSettings
from services.score_api.settings import ApiSettings
from tests.models import farming_bound, gcra_bound

HOUR = 3600
OUTLIER_ONLY = FlagRules(
    window_seconds=HOUR, points_per_hour=0, outlier_factor=5.0, min_population=50
)
CEILING_ONLY = FlagRules(
    window_seconds=HOUR, points_per_hour=3000, outlier_factor=0, min_population=50
)


def population(n: int, points: int = 100, prefix: str = "u") -> dict[str, int]:
    return {f"{prefix}{i}": points for i in range(n)}


def rules(**changes: Any) -> FlagRules:
    values = {"window_seconds": HOUR, "points_per_hour": 0, "outlier_factor": 5.0}
    return FlagRules(**(values | {"min_population": 50} | changes))


# ---- p99, nearest rank


@pytest.mark.parametrize(
    ("m", "rank"), [(1, 1), (2, 2), (50, 50), (99, 99), (100, 99), (101, 100), (200, 198)]
)
def test_the_nearest_rank_is_the_ceiling_of_99_percent(m: int, rank: int) -> None:
    assert nearest_rank(m) == rank == math.ceil(0.99 * m - 1e-9)


def test_p99_is_the_value_at_the_nearest_rank() -> None:
    assert p99([7]) == 7
    assert p99(list(range(1, 101))) == 99
    assert p99(list(range(200, 0, -1))) == 198
    assert p99([5] * 300) == 5


def test_p99_of_the_others_leaves_exactly_one_value_out() -> None:
    rng = random.Random(7)
    for _ in range(300):
        values = sorted(rng.randint(1, 50) for _ in range(rng.randint(2, 250)))
        for index in range(len(values)):
            others = values[:index] + values[index + 1 :]
            assert p99_of_others(values, index) == p99(others)


# ---- the outlier rule


def test_an_empty_population_raises_nothing() -> None:
    assert evaluate({}, OUTLIER_ONLY) == []
    assert evaluate({}, CEILING_ONLY) == []
    assert evaluate({}, rules(points_per_hour=1, min_population=2)) == []


def test_one_outlier_among_200_is_flagged_and_no_one_else() -> None:
    points = {f"u{i}": 50 + i for i in range(200)}  # 50..249: p99 of the others is 247
    points["cheater"] = 10 * 247
    assert evaluate(points, OUTLIER_ONLY) == [Flag("cheater", RULE_OUTLIER, 2470, 5 * 247)]


def test_exactly_at_the_threshold_is_not_flagged_one_above_is() -> None:
    base = population(99, 100)
    assert evaluate(base | {"x": 500}, OUTLIER_ONLY) == []
    assert evaluate(base | {"x": 501}, OUTLIER_ONLY) == [Flag("x", RULE_OUTLIER, 501, 500)]


def test_below_the_minimum_population_the_outlier_rule_is_silent() -> None:
    base = population(48, 10)
    assert evaluate(base | {"x": 10**9}, OUTLIER_ONLY) == []  # 49 active users
    assert evaluate(base | {"x": 10**9, "y": 10}, OUTLIER_ONLY) == [
        Flag("x", RULE_OUTLIER, 10**9, 50)
    ]  # 50 active users: the others' p99 is their maximum, 10


def test_the_smallest_population_compares_two_users() -> None:
    two = rules(min_population=2)
    assert evaluate({"a": 10, "b": 51}, two) == [Flag("b", RULE_OUTLIER, 51, 50)]
    assert evaluate({"a": 10, "b": 50}, two) == []
    assert evaluate({"a": 10}, two) == []  # one user: no others to compare with


def test_users_without_points_are_not_active() -> None:
    points = population(48, 10) | {"x": 10**6, "zero": 0, "negative": -5}
    assert evaluate(points, OUTLIER_ONLY) == []  # 51 entries, 49 active: 50 needed
    assert evaluate(points | {"y": 10}, OUTLIER_ONLY)[0].user_id == "x"


def test_factor_one_flags_whoever_is_strictly_above_the_others_p99() -> None:
    one = rules(outlier_factor=1.0)
    assert evaluate(population(60, 100), one) == []  # all equal: nobody above
    assert evaluate(population(60, 100) | {"x": 101}, one) == [Flag("x", RULE_OUTLIER, 101, 100)]


def test_ties_are_flagged_together_or_not_at_all() -> None:
    # Two equal cheaters among 100: each one's others include the other cheater, whose
    # points are the others' maximum (p99 of 100 others: rank 99, below the top one).
    honest = population(99, 10)
    assert evaluate(honest | {"a": 1000}, OUTLIER_ONLY) == [Flag("a", RULE_OUTLIER, 1000, 50)]
    pair = evaluate(population(200, 10) | {"a": 1000, "b": 1000}, OUTLIER_ONLY)
    assert pair == [Flag("a", RULE_OUTLIER, 1000, 50), Flag("b", RULE_OUTLIER, 1000, 50)]
    # Among 60 users two equal cheaters shield each other: neither exceeds 5x the other.
    assert evaluate(population(58, 10) | {"a": 1000, "b": 1000}, OUTLIER_ONLY) == []


def test_an_honest_heavy_player_just_under_the_threshold_is_not_flagged() -> None:
    points = {f"u{i}": 20 + i for i in range(200)}  # p99 of the others: 217
    points["heavy"] = 5 * 217
    assert evaluate(points, OUTLIER_ONLY) == []
    points["cheater"] = 10 * 217
    assert [f.user_id for f in evaluate(points, OUTLIER_ONLY)] == ["cheater"]


def test_the_factor_is_read_as_the_decimal_written() -> None:
    # 1.1 * 10 is 11.000000000000002 in binary floating point.
    assert rules(outlier_factor=1.1).outlier_threshold(10) == 11
    assert rules(outlier_factor=2.5).outlier_threshold(3) == 7
    assert rules(outlier_factor=1000).outlier_threshold(2**53) == 1000 * 2**53
    assert evaluate(population(60, 10) | {"x": 11}, rules(outlier_factor=1.1)) == []
    assert evaluate(population(60, 10) | {"x": 12}, rules(outlier_factor=1.1)) == [
        Flag("x", RULE_OUTLIER, 12, 11)
    ]


def test_the_rule_matches_a_brute_force_model() -> None:
    rng = random.Random(15)
    for _ in range(200):
        n = rng.randint(0, 160)
        points = {f"u{i}": rng.choice([1, 2, 5, 10, 50, 400, 5000]) for i in range(n)}
        factor = rng.choice([1.0, 1.5, 5.0, 20.0])
        r = rules(outlier_factor=factor, min_population=rng.randint(2, 80))
        expected = []
        if len(points) >= r.min_population:
            for user, p in points.items():
                others = sorted(v for u, v in points.items() if u != user)
                bar = math.floor(factor * others[math.ceil(0.99 * len(others)) - 1])
                if p > bar:
                    expected.append(Flag(user, RULE_OUTLIER, p, bar))
        assert evaluate(points, r) == sorted(expected)


def test_the_outlier_rule_is_off_with_factor_zero() -> None:
    assert evaluate(population(200, 1) | {"x": 10**12}, rules(outlier_factor=0)) == []


# ---- the ceiling rule


def test_the_ceiling_flags_strictly_above_and_is_scaled_to_the_window() -> None:
    assert evaluate({"a": 3000, "b": 3001}, CEILING_ONLY) == [Flag("b", RULE_CEILING, 3001, 3000)]
    ten_minutes = FlagRules(600, 3000, 0, 50)
    assert ten_minutes.ceiling == 500
    assert evaluate({"a": 500, "b": 501}, ten_minutes) == [Flag("b", RULE_CEILING, 501, 500)]
    # Rounded down: points are whole, so "more than 1000/60" is "more than 16".
    assert FlagRules(60, 1000, 0, 50).ceiling == 16
    assert FlagRules(86_400, 3000, 0, 50).ceiling == 72_000


def test_the_ceiling_needs_no_population_and_is_off_at_zero() -> None:
    assert evaluate({"solo": 10**6}, CEILING_ONLY) == [Flag("solo", RULE_CEILING, 10**6, 3000)]
    off = FlagRules(HOUR, 0, 0, 50)
    assert off.ceiling is None
    assert evaluate({"solo": 10**15}, off) == []


def test_both_rules_can_flag_one_user() -> None:
    points = population(100, 100) | {"x": 5000}
    both = FlagRules(HOUR, 3000, 5.0, 50)
    assert evaluate(points, both) == [
        Flag("x", RULE_OUTLIER, 5000, 500),
        Flag("x", RULE_CEILING, 5000, 3000),
    ]


def test_the_default_ceiling_is_above_what_the_default_budgets_allow_in_an_hour() -> None:
    # The budgets bound every award, whoever reports it (players and game servers alike);
    # a player's own token gets less still (tests/models.py farming_bound).
    defaults = PersisterSettings()
    api = ApiSettings()
    allowed = min(gcra_bound(limit, HOUR * 1000) for limit in api.budgets())
    assert farming_bound(api, HOUR * 1000, days=1) <= allowed
    ceiling = FlagRules(HOUR, defaults.flag_points_per_hour, 0, 50).ceiling
    assert allowed == 2000  # the points budgets: 1,000 at once, then 1,000 an hour
    assert ceiling is not None
    assert ceiling > allowed * 1.25
    assert evaluate({"heavy": allowed}, FlagRules(HOUR, ceiling, 0, 50)) == []


# ---- suppression


def test_a_dismissal_suppresses_only_its_rule_for_less_than_one_window() -> None:
    points = population(100, 100) | {"x": 5000}
    both = FlagRules(HOUR, 3000, 5.0, 50)
    assert evaluate(points, both, {("x", RULE_CEILING)}) == [Flag("x", RULE_OUTLIER, 5000, 500)]
    assert evaluate(points, both, {("x", RULE_CEILING), ("x", RULE_OUTLIER)}) == []
    assert len(evaluate(points, both, {("someone", RULE_OUTLIER)})) == 2


def test_suppression_ends_exactly_one_window_after_the_decision() -> None:
    assert is_suppressed(1000.0, 1000.0, HOUR)
    assert is_suppressed(1000.0, 1000.0 + HOUR - 0.001, HOUR)
    assert not is_suppressed(1000.0, 1000.0 + HOUR, HOUR)
    assert not is_suppressed(1000.0, 1000.0 + 10 * HOUR, HOUR)


def test_a_suppressed_user_still_counts_in_the_population() -> None:
    points = population(48, 10) | {"x": 10**6, "y": 10**6}
    # Two cheaters shield each other; suppressing one does not remove them from the others.
    assert evaluate(points, OUTLIER_ONLY, {("x", RULE_OUTLIER)}) == []


# ---- construction and settings


@pytest.mark.parametrize(
    "values",
    [
        {"window_seconds": 0},
        {"points_per_hour": -1},
        {"min_population": 1},
        {"outlier_factor": 0.5},
        {"outlier_factor": 1001.0},
        {"outlier_factor": math.nan},
        {"outlier_factor": math.inf},
    ],
)
def test_invalid_rules_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"flag rules|outlier factor"):
        rules(**values)


def test_the_flag_settings_defaults() -> None:
    s = PersisterSettings()
    assert (s.flag_interval_seconds, s.flag_window_seconds) == (60, 3600)
    assert (s.flag_points_per_hour, s.flag_outlier_factor, s.flag_min_population) == (3000, 5.0, 50)
    assert s.auto_quarantine is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLAG_INTERVAL_SECONDS", "-1"),
        ("FLAG_INTERVAL_SECONDS", "86401"),
        ("FLAG_INTERVAL_SECONDS", "1.5"),
        ("FLAG_INTERVAL_SECONDS", "ten"),
        ("FLAG_INTERVAL_SECONDS", ""),
        ("FLAG_WINDOW_SECONDS", "0"),
        ("FLAG_WINDOW_SECONDS", "59"),
        ("FLAG_WINDOW_SECONDS", "1e9"),
        ("FLAG_WINDOW_SECONDS", "9" * 400),
        ("FLAG_POINTS_PER_HOUR", "-5"),
        ("FLAG_POINTS_PER_HOUR", str(2**53)),
        ("FLAG_OUTLIER_FACTOR", "0.5"),
        ("FLAG_OUTLIER_FACTOR", "-1"),
        ("FLAG_OUTLIER_FACTOR", "nan"),
        ("FLAG_OUTLIER_FACTOR", "inf"),
        ("FLAG_OUTLIER_FACTOR", "1e309"),
        ("FLAG_OUTLIER_FACTOR", "1001"),
        ("FLAG_MIN_POPULATION", "1"),
        ("FLAG_MIN_POPULATION", "0"),
        ("FLAG_MIN_POPULATION", "10000001"),
        ("AUTO_QUARANTINE", "maybe"),
        ("AUTO_QUARANTINE", "2"),
        ("AUTO_QUARANTINE", ""),
    ],
)
def test_hostile_flag_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        PersisterSettings()


@pytest.mark.parametrize(
    ("name", "value", "attribute", "expected"),
    [
        ("FLAG_INTERVAL_SECONDS", "0", "flag_interval_seconds", 0),
        ("FLAG_POINTS_PER_HOUR", "0", "flag_points_per_hour", 0),
        ("FLAG_OUTLIER_FACTOR", "0", "flag_outlier_factor", 0.0),
        ("FLAG_OUTLIER_FACTOR", "1", "flag_outlier_factor", 1.0),
        ("FLAG_WINDOW_SECONDS", "86400", "flag_window_seconds", 86_400),
        ("AUTO_QUARANTINE", "true", "auto_quarantine", True),
    ],
)
def test_edge_flag_settings_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, attribute: str, expected: object
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(PersisterSettings(), attribute) == expected
