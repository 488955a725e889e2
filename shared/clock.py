"""Time as an input: every service reads the clock through one of these, never ``time`` itself.

``Clock.time()`` is wall-clock seconds since the epoch (token expiry, event timestamps);
``Clock.monotonic()`` only measures intervals (caches, refresh throttles, inbound limits).
Production uses ``SYSTEM``. ``OffsetClock`` shifts the wall clock, for the tests that run
replicas whose clocks disagree (``CLOCK_OFFSET_SECONDS``); tests that must cross a boundary
drive a manual clock (``tests.support.ManualClock``) instead of sleeping.

Decisions that several replicas must agree on (rate limits, cooldowns) do not use any of
these: the Redis scripts read Redis's own ``TIME``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; only differences mean anything."""
        ...


class SystemClock:
    """The process's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM = SystemClock()


@dataclass(frozen=True, slots=True)
class OffsetClock:
    """``base`` with its wall clock moved by ``offset`` seconds (intervals are unchanged)."""

    base: Clock
    offset: float

    def time(self) -> float:
        return self.base.time() + self.offset

    def monotonic(self) -> float:
        return self.base.monotonic()


def clock_for(offset_seconds: float) -> Clock:
    """The system clock, shifted when a test sets ``CLOCK_OFFSET_SECONDS``."""
    return SYSTEM if not offset_seconds else OffsetClock(SYSTEM, offset_seconds)


def ms(clock: Clock) -> int:
    """Wall-clock milliseconds since the epoch, as the stream's ``ts`` fields count."""
    return int(clock.time() * 1000)
