"""Board periods (shared.periods): ids, starts and ends at every kind of boundary, with the
clock as an input: no test waits for a real boundary."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.periods import ALL_TIME, WEEKDAYS, Period, Schedule, day_start_ms

DAILY, WEEKLY, MONTHLY = Schedule("daily"), Schedule("weekly"), Schedule("monthly")
BERLIN = ZoneInfo("Europe/Berlin")


def ms(text: str, tz: ZoneInfo | None = None) -> int:
    """Unix ms of an ISO time, UTC unless ``tz`` says where the wall clock is."""
    moment = datetime.fromisoformat(text)
    moment = moment.replace(tzinfo=tz or UTC) if moment.tzinfo is None else moment
    return int(moment.timestamp() * 1000)


def test_the_last_millisecond_of_a_day_is_in_it_and_the_next_one_is_not() -> None:
    assert DAILY.at(ms("2026-12-01T23:59:59.999")).id == "2026-12-01"
    assert DAILY.at(ms("2026-12-02T00:00:00.000")).id == "2026-12-02"
    day = DAILY.at(ms("2026-12-01T12:00"))
    assert (day.start_ms, day.end_ms) == (ms("2026-12-01T00:00"), ms("2026-12-02T00:00"))
    assert day.contains(day.start_ms or 0)
    assert not day.contains(day.end_ms or 0)


def test_ids_are_the_documented_ones() -> None:
    at = ms("2026-12-01T13:00:17.5")
    assert Schedule("never").at(at) == Period(ALL_TIME, None, None)
    assert DAILY.at(at).id == "2026-12-01"
    assert WEEKLY.at(at).id == "2026-W49"
    assert MONTHLY.at(at).id == "2026-12"
    assert Schedule("interval", interval_seconds=10).at(at).id == "2026-12-01T13:00:10Z"


@pytest.mark.parametrize(
    ("month", "days"),
    [("2026-02", 28), ("2028-02", 29), ("2026-04", 30), ("2026-12", 31), ("2100-02", 28)],
)
def test_months_of_28_29_30_and_31_days(month: str, days: int) -> None:
    period = MONTHLY.named(month)
    assert period.start_ms == ms(f"{month}-01T00:00")
    assert ((period.end_ms or 0) - (period.start_ms or 0)) == days * 86_400_000
    assert MONTHLY.at((period.end_ms or 0) - 1).id == month
    assert MONTHLY.following(period).start_ms == period.end_ms


def test_iso_week_53_of_2026_and_the_year_boundary() -> None:
    week = WEEKLY.named("2026-W53")
    assert week.start_ms == ms("2026-12-28T00:00")
    assert week.end_ms == ms("2027-01-04T00:00")
    assert WEEKLY.at(ms("2027-01-01T12:00")).id == "2026-W53"
    assert WEEKLY.following(week).id == "2027-W01"
    with pytest.raises(ValueError, match="not a weekly period"):
        WEEKLY.named("2027-W53")  # 2027 has 52 weeks


def test_a_weekly_board_in_berlin_across_both_daylight_saving_transitions() -> None:
    berlin = Schedule("weekly", timezone="Europe/Berlin")
    # 2026: clocks go forward on 29 March, back on 25 October (both Sundays).
    spring = berlin.at(ms("2026-03-29T12:00", BERLIN))
    assert spring.id == "2026-W13"
    assert spring.start_ms == ms("2026-03-23T00:00", BERLIN)
    assert spring.end_ms == ms("2026-03-30T00:00", BERLIN)
    assert (spring.end_ms or 0) - (spring.start_ms or 0) == (7 * 24 - 1) * 3_600_000
    autumn = berlin.at(ms("2026-10-25T12:00", BERLIN))
    assert autumn.id == "2026-W43"
    assert (autumn.end_ms or 0) - (autumn.start_ms or 0) == (7 * 24 + 1) * 3_600_000
    # Local midnight, never UTC's: 23:30 UTC on Sunday is already Monday in Berlin.
    assert berlin.at(ms("2026-03-29T22:30")).id == "2026-W14"
    assert WEEKLY.at(ms("2026-03-29T22:30")).id == "2026-W13"


def test_a_daily_board_keeps_its_local_day_through_the_transitions() -> None:
    berlin = Schedule("daily", timezone="Europe/Berlin")
    for day, hours in (("2026-03-29", 23), ("2026-10-25", 25), ("2026-06-01", 24)):
        period = berlin.named(day)
        assert (period.end_ms or 0) - (period.start_ms or 0) == hours * 3_600_000
        assert berlin.at((period.end_ms or 0) - 1).id == day
        assert berlin.at(period.end_ms or 0).id != day


def test_a_day_whose_midnight_falls_in_a_gap_starts_at_the_transition() -> None:
    # America/Santiago moved its clocks forward at midnight (2022-09-11 00:00 -> 01:00).
    santiago = ZoneInfo("America/Santiago")
    start = day_start_ms(date(2022, 9, 11), santiago)
    assert datetime.fromtimestamp(start / 1000, santiago).isoformat() == (
        "2022-09-11T01:00:00-03:00"
    )
    before = datetime.fromtimestamp((start - 1) / 1000, santiago)
    assert before.date() == date(2022, 9, 10)


@pytest.mark.parametrize("week_start", WEEKDAYS)
def test_weeks_start_on_the_configured_day_and_ids_round_trip(week_start: str) -> None:
    schedule = Schedule("weekly", week_start=week_start)
    rng = random.Random(week_start)
    for _ in range(300):
        at = rng.randrange(ms("1990-01-01T00:00"), ms("2090-01-01T00:00"))
        period = schedule.at(at)
        assert period.contains(at)
        start = datetime.fromtimestamp((period.start_ms or 0) / 1000, UTC)
        assert WEEKDAYS[start.weekday()] == week_start
        assert schedule.named(period.id) == period
        assert schedule.following(schedule.previous(period)) == period


@pytest.mark.parametrize(
    "schedule",
    [
        DAILY,
        MONTHLY,
        Schedule("daily", timezone="Australia/Lord_Howe"),  # half-hour DST shifts
        Schedule("monthly", timezone="Pacific/Kiritimati"),  # UTC+14
        Schedule("interval", interval_seconds=10),
        Schedule("interval", interval_seconds=7 * 86_400),
    ],
    ids=lambda s: f"{s.reset}-{s.timezone}-{s.interval_seconds}",
)
def test_periods_tile_time_and_ids_round_trip(schedule: Schedule) -> None:
    rng = random.Random(7)
    for _ in range(300):
        at = rng.randrange(ms("1990-01-01T00:00"), ms("2090-01-01T00:00"))
        period = schedule.at(at)
        assert period.contains(at)
        assert schedule.at(period.start_ms or 0) == period
        assert schedule.at((period.end_ms or 0) - 1) == period
        assert schedule.at(period.end_ms or 0).start_ms == period.end_ms
        assert schedule.named(period.id) == period


def test_interval_boards_align_to_the_epoch_whatever_the_zone() -> None:
    schedule = Schedule("interval", timezone="Asia/Kolkata", interval_seconds=3600)
    period = schedule.at(ms("2026-12-01T13:59:59.999"))
    assert (period.id, period.start_ms) == ("2026-12-01T13:00:00Z", ms("2026-12-01T13:00"))
    assert schedule.at(ms("2026-12-01T14:00")).id == "2026-12-01T14:00:00Z"


@pytest.mark.parametrize(
    ("schedule", "period_id"),
    [
        (DAILY, "2026-13-01"),
        (DAILY, "2026-02-30"),
        (DAILY, "2026-1-01"),
        (DAILY, "2026-12-01\n"),
        (DAILY, "\u0662026-12-01"),
        (DAILY, "2026-12-01T00:00"),
        (WEEKLY, "2026-W00"),
        (WEEKLY, "2026-W54"),
        (WEEKLY, "2026-w49"),
        (MONTHLY, "2026-00"),
        (MONTHLY, "2026-12-01"),
        (Schedule("interval", interval_seconds=10), "2026-12-01T13:00:05Z"),
        (Schedule("interval", interval_seconds=10), "2026-12-01T13:00:10+00:00"),
        (Schedule("never"), "2026"),
        (DAILY, ""),
        (DAILY, "9" * 5000),
    ],
)
def test_malformed_or_uncanonical_period_ids_are_refused(
    schedule: Schedule, period_id: str
) -> None:
    with pytest.raises(ValueError, match="period"):
        schedule.named(period_id)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reset": "hourly"},
        {"reset": "daily", "timezone": "Mars/Olympus"},
        {"reset": "daily", "timezone": "../../etc/passwd"},
        {"reset": "daily", "timezone": ""},
        {"reset": "weekly", "week_start": "Monday"},
        {"reset": "interval", "interval_seconds": 9},
        {"reset": "interval", "interval_seconds": True},
        {"reset": "interval", "interval_seconds": 366 * 86_400 + 1},
        {"reset": "daily", "interval_seconds": 60},
    ],
)
def test_invalid_schedules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"reset|timezone|week_start|interval"):
        Schedule(**kwargs)  # type: ignore[arg-type]


def test_day_starts_agree_with_zoneinfo_on_every_day_of_a_decade_in_many_zones() -> None:
    for name in ("Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Tehran"):
        tz = ZoneInfo(name)
        day = date(2020, 1, 1)
        while day < date(2030, 1, 1):
            start = day_start_ms(day, tz)
            assert datetime.fromtimestamp(start / 1000, tz).date() == day
            assert datetime.fromtimestamp((start - 1) / 1000, tz).date() < day
            day += timedelta(days=1)
