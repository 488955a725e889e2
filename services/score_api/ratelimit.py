"""Rate arithmetic (GCRA) and the RateLimit header fields; no I/O.

A limit of ``quota`` requests per ``window`` is a generic cell rate algorithm: each request
moves a theoretical arrival time (TAT) forward by ``cost x window / quota``, and a request
is refused while that would put the TAT more than one window ahead of now. It allows bursts
of up to ``quota`` and then a steady ``quota`` per window, with one stored number per key;
so in any span of ``t`` it grants at most ``quota x (1 + t / window)``. Request limits cost
1; a points budget costs the award's points. ``lua/limits.lua`` runs the arithmetic inside
Redis, atomically with the award (the tests hold it to a Python reference,
``tests/models.py``). This module describes the limits and formats
the headers (draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy`` and ``RateLimit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """``quota`` per ``window_ms``: requests, or points when ``counts_points`` (a budget:
    each award costs its points)."""

    name: str
    quota: int
    window_ms: int
    counts_points: bool = False

    def __post_init__(self) -> None:
        # The interval is window / quota in whole microseconds: it must be at least one, or
        # the arithmetic divides by zero (in Lua and in Python alike).
        if self.quota < 1 or self.window_ms < 1:
            raise ValueError(f"limit {self.name!r}: quota and window must be positive")
        if self.window_ms * 1000 < self.quota:
            raise ValueError(
                f"limit {self.name!r}: at most {self.window_ms * 1000} requests per "
                f"{self.window_ms} ms (one per microsecond)"
            )

    @property
    def window_us(self) -> int:
        return self.window_ms * 1000

    @property
    def interval_us(self) -> int:
        # Integer microseconds, so Lua (doubles) and Python compute bit-identical results.
        return self.window_us // self.quota

    def cost(self, points: int) -> int:
        return points if self.counts_points else 1

    def policy(self) -> str:
        return f'"{self.name}";q={self.quota};w={math.ceil(self.window_ms / 1000)}'


def policy_header(limits: list[Limit]) -> str:
    return ", ".join(limit.policy() for limit in limits)


def ratelimit_header(name: str, remaining: int, reset_ms: int) -> str:
    return f'"{name}";r={remaining};t={math.ceil(reset_ms / 1000)}'


def retry_after_seconds(wait_ms: int) -> int:
    """Whole seconds for ``Retry-After``, never 0 for a refusal."""
    return max(1, math.ceil(wait_ms / 1000))
