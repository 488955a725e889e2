"""The clocks services read time through: the system's, a shifted one, and the tests' own."""

from __future__ import annotations

import time

import pytest

from shared.clock import SYSTEM, OffsetClock, clock_for, ms
from tests.support import ManualClock


def test_no_offset_is_the_system_clock() -> None:
    assert clock_for(0) is SYSTEM
    assert abs(SYSTEM.time() - time.time()) < 1


def test_an_offset_moves_the_wall_clock_but_not_intervals() -> None:
    manual = ManualClock(wall=1_000_000.0)
    shifted = OffsetClock(manual, -120.0)
    assert shifted.time() == 999_880.0
    assert shifted.monotonic() == manual.monotonic()
    manual.advance(2.5)
    assert shifted.time() == 999_882.5
    assert ms(shifted) == 999_882_500


def test_a_manual_clock_moves_only_forward_and_only_when_told() -> None:
    clock = ManualClock(wall=10.0)
    before = clock.monotonic()
    assert (clock.time(), clock.monotonic()) == (10.0, before)
    clock.advance(1.25)
    assert (clock.time(), clock.monotonic()) == (11.25, before + 1.25)
    with pytest.raises(ValueError, match="back"):
        clock.advance(-1)
