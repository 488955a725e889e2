"""The anomaly flag rules, decided without I/O (``services.persister.flags`` runs them).

Input: each active user's points in the rolling window ``[now - window, now]`` (score events
not revoked, users neither banned nor quarantined; users without points are not active).

- ``points_per_hour``, the ceiling: a user is flagged when their points exceed
  ``FLAG_POINTS_PER_HOUR x window / 3600`` (the hourly ceiling scaled to the window, rounded
  down; since points are whole numbers, "more than the exact product" is the same test).
  The default, 3,000, is above the 2,000 that the default points budgets allow in any hour,
  so with those budgets it never flags anyone: it is there for studios that raise or lift
  them. A short window scales the ceiling down linearly, while honest play is bursty (85
  points in a minute are possible under the defaults): raise the ceiling with it.
- ``outlier``: once the population (the active users, flagged or not) counts at least
  ``FLAG_MIN_POPULATION``, a user is flagged when their points exceed ``FLAG_OUTLIER_FACTOR``
  x the p99 of the **other** active users (the user is left out of their own comparison,
  so one cheater cannot raise the bar they are measured against, and small populations
  still work: with 100 users or fewer the p99 of the others is their maximum). p99 is the
  nearest-rank percentile: the value of rank ``ceil(0.99 x m)`` among the ``m`` others in
  ascending order. The threshold is ``floor(factor x p99)``, the factor read as the decimal
  it is written as (1.1 x 10 is 11, not 11.000000000000002).

Suppression: a (user, rule) whose flag was dismissed, or actioned by the automatic
quarantine, less than one window ago is not flagged again by that rule: a moderator who
cleared an honest player, or released an automatically quarantined one, is not overruled
every minute. Other rules still apply to them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

RULE_CEILING: Final = "points_per_hour"
RULE_OUTLIER: Final = "outlier"
RULES: Final = (RULE_CEILING, RULE_OUTLIER)
HOUR_SECONDS: Final = 3600
MAX_THRESHOLD: Final = 2**63 - 1  # the user_flags column is a bigint


@dataclass(frozen=True, slots=True)
class FlagRules:
    window_seconds: int
    points_per_hour: int  # 0: the ceiling rule is off
    outlier_factor: float  # 0: the outlier rule is off; otherwise at least 1
    min_population: int  # at least 2: an outlier is compared with the others

    def __post_init__(self) -> None:
        if self.window_seconds < 1 or self.points_per_hour < 0 or self.min_population < 2:
            raise ValueError("invalid flag rules")
        if not (self.outlier_factor == 0 or 1 <= self.outlier_factor <= 1000):
            raise ValueError("the outlier factor must be 0 (off) or within 1..1000")

    @property
    def ceiling(self) -> int | None:
        """The ceiling over the window (flagged above it), or None when the rule is off."""
        if not self.points_per_hour:
            return None
        return min(self.points_per_hour * self.window_seconds // HOUR_SECONDS, MAX_THRESHOLD)

    def outlier_threshold(self, p99: int) -> int:
        """``floor(factor x p99)``, exactly, with the factor as written in decimal."""
        return min(int(Fraction(repr(self.outlier_factor)) * p99), MAX_THRESHOLD)


@dataclass(frozen=True, slots=True, order=True)
class Flag:
    user_id: str
    rule: str
    observed: int  # the user's points in the window
    threshold: int  # flagged because observed > threshold


def nearest_rank(m: int) -> int:
    """The 1-based rank of the p99 among ``m`` values in ascending order: ``ceil(0.99 m)``."""
    return (99 * m + 99) // 100


def p99(values: list[int]) -> int:
    """The nearest-rank 99th percentile of ``values`` (not empty)."""
    ordered = sorted(values)
    return ordered[nearest_rank(len(ordered)) - 1]


def p99_of_others(ordered: list[int], index: int) -> int:
    """The p99 of ``ordered`` (ascending, at least 2 values) without its ``index``-th value."""
    rank = nearest_rank(len(ordered) - 1)  # among the others, 1-based
    # The others are ordered with one value taken out: ranks below it are unchanged.
    return ordered[rank - 1] if rank - 1 < index else ordered[rank]


def is_suppressed(decided_at: float, now: float, window_seconds: int) -> bool:
    """Whether a decision at ``decided_at`` (seconds) is less than one window before ``now``."""
    return now - decided_at < window_seconds


def evaluate(
    points: Mapping[str, int],
    rules: FlagRules,
    suppressed: Collection[tuple[str, str]] = (),
) -> list[Flag]:
    """The flags to raise, sorted by user then rule; ``suppressed`` holds (user, rule) pairs
    recently dismissed (``is_suppressed``)."""
    active = {user: p for user, p in points.items() if p > 0}
    flags: list[Flag] = []
    ceiling = rules.ceiling
    if ceiling is not None:
        flags += [Flag(user, RULE_CEILING, p, ceiling) for user, p in active.items() if p > ceiling]
    if rules.outlier_factor and len(active) >= rules.min_population:
        ranked = sorted(active.items(), key=lambda item: item[1])
        ordered = [p for _, p in ranked]
        for index in range(len(ranked) - 1, -1, -1):  # from the top; stop at the first not
            user, p = ranked[index]
            threshold = rules.outlier_threshold(p99_of_others(ordered, index))
            if p <= threshold:
                break  # lower users have fewer points and a bar at least as high
            flags.append(Flag(user, RULE_OUTLIER, p, threshold))
    return sorted(f for f in flags if (f.user_id, f.rule) not in suppressed)
