"""Board periods: which period an instant falls in, with its id, start and end. Pure, no I/O.

A board resets ``never``, ``daily``, ``weekly``, ``monthly`` (at local midnight in its IANA
``timezone``, through ``zoneinfo``) or every ``interval_seconds`` (aligned to the Unix epoch,
whatever the time zone). Anyone can compute a period's id from the time:

    never     all
    daily     2026-12-01            the local date
    weekly    2026-W49              the ISO week holding most of the board's week (its
                                    fourth day); with weeks from Monday, the ISO week itself
    monthly   2026-12               the local month
    interval  2026-12-01T13:00:10Z  the period's start, UTC

A period is ``[start_ms, end_ms)``. Days start at the first instant whose local date is the
day: midnight, or the end of a daylight-saving gap that swallows midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.formats import TIMEZONE

Reset = Literal["never", "daily", "weekly", "monthly", "interval"]
RESETS: tuple[Reset, ...] = ("never", "daily", "weekly", "monthly", "interval")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MIN_INTERVAL_SECONDS = 10
MAX_INTERVAL_SECONDS = 366 * 86_400
ALL_TIME = "all"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ID = {
    "daily": re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"),
    "weekly": re.compile(r"([0-9]{4})-W([0-9]{2})"),
    "monthly": re.compile(r"([0-9]{4})-([0-9]{2})"),
    "interval": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"),
}


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a board: ``[start_ms, end_ms)``; both None for the ``never`` board."""

    id: str
    start_ms: int | None
    end_ms: int | None

    def contains(self, ms: int) -> bool:
        return (self.start_ms is None or self.start_ms <= ms) and (
            self.end_ms is None or ms < self.end_ms
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a board resets. Refuses (ValueError) an unknown reset, zone or week day, and an
    interval outside 10 s..366 days or given for another reset."""

    reset: Reset
    timezone: str = "UTC"
    week_start: str = "monday"
    interval_seconds: int = 0

    def __post_init__(self) -> None:
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {', '.join(RESETS)}")
        if self.week_start not in WEEKDAYS:
            raise ValueError(f"week_start must be one of {', '.join(WEEKDAYS)}")
        zone(self.timezone)
        if self.reset == "interval":
            seconds = self.interval_seconds
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise ValueError("interval_seconds must be an integer")
            if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
                raise ValueError(
                    f"interval_seconds must be in {MIN_INTERVAL_SECONDS}..{MAX_INTERVAL_SECONDS}"
                )
        elif self.interval_seconds:
            raise ValueError("interval_seconds is only for reset interval")

    def at(self, ms: int) -> Period:
        """The period holding the instant ``ms`` (Unix milliseconds)."""
        if self.reset == "never":
            return Period(ALL_TIME, None, None)
        if self.reset == "interval":
            length = self.interval_seconds * 1000
            start = ms // length * length
            return Period(_utc_id(start), start, start + length)
        local = (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone(self.timezone))
        return self._of_day(local.date())

    def named(self, period_id: str) -> Period:
        """The period with this id; ValueError unless it is one, spelled canonically."""
        if self.reset == "never":
            if period_id != ALL_TIME:
                raise ValueError(f"the period of a never-resetting board is {ALL_TIME!r}")
            return Period(ALL_TIME, None, None)
        match = _ID[self.reset].fullmatch(period_id)
        if match is None:
            raise ValueError(f"{period_id!r} is not a {self.reset} period id")
        try:
            period = self._parse(period_id, match)
        except (ValueError, OverflowError):
            raise ValueError(f"{period_id!r} is not a {self.reset} period id") from None
        if period.id != period_id:
            raise ValueError(f"{period_id!r} is not a {self.reset} period id")
        return period

    def previous(self, period: Period) -> Period:
        if period.start_ms is None:
            return period
        return self.at(period.start_ms - 1)

    def following(self, period: Period) -> Period:
        if period.end_ms is None:
            return period
        return self.at(period.end_ms)

    def _parse(self, period_id: str, match: re.Match[str]) -> Period:
        if self.reset == "interval":
            start = datetime.strptime(period_id, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            return self.at(_ms(start))
        numbers = [int(g) for g in match.groups()]
        if self.reset == "daily":
            return self._of_day(date(*numbers))
        if self.reset == "monthly":
            return self._of_day(date(numbers[0], numbers[1], 1))
        # The board's week whose fourth day falls in that ISO week.
        monday = date.fromisocalendar(numbers[0], numbers[1], 1)
        weekday = WEEKDAYS.index(self.week_start)
        first = next(
            monday + timedelta(days=d)
            for d in range(-3, 4)
            if (monday.weekday() + d) % 7 == weekday
        )
        return self._of_day(first)

    def _of_day(self, day: date) -> Period:
        """The daily, weekly or monthly period holding the local date ``day``."""
        tz = zone(self.timezone)
        if self.reset == "daily":
            first, after = day, day + timedelta(days=1)
            period_id = day.isoformat()
        elif self.reset == "weekly":
            first = day - timedelta(days=(day.weekday() - WEEKDAYS.index(self.week_start)) % 7)
            after = first + timedelta(days=7)
            year, week, _ = (first + timedelta(days=3)).isocalendar()
            period_id = f"{year:04d}-W{week:02d}"
        else:
            first = day.replace(day=1)
            after = (first + timedelta(days=32)).replace(day=1)
            period_id = f"{first.year:04d}-{first.month:02d}"
        return Period(period_id, day_start_ms(first, tz), day_start_ms(after, tz))


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError for an unknown or malformed one."""
    if not isinstance(name, str) or not TIMEZONE.matches(name):
        raise ValueError("timezone must be an IANA zone name such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name!r}") from None


def day_start_ms(day: date, tz: ZoneInfo) -> int:
    """The first instant whose local date in ``tz`` is ``day``, in Unix milliseconds."""
    midnight = datetime.combine(day, time(0))
    candidates = []
    for fold in (0, 1):
        instant = midnight.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == midnight:
            candidates.append(_ms(instant))
    if candidates:
        return min(candidates)  # an ambiguous midnight: its first occurrence
    # Midnight falls in a gap: the day starts at the transition. Search between the two
    # readings of midnight (before and after the gap) for the first instant of ``day``.
    low, high = sorted(
        _ms(midnight.replace(tzinfo=tz, fold=fold).astimezone(UTC)) for fold in (0, 1)
    )
    while low < high:
        middle = (low + high) // 2
        if (_EPOCH + timedelta(milliseconds=middle)).astimezone(tz).date() >= day:
            high = middle
        else:
            low = middle + 1
    return low


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _utc_id(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%SZ")
