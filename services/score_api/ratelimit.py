"""Rate arithmetic (GCRA) and the RateLimit header fields; no I/O.

A limit of ``quota`` requests per ``window`` is a generic cell rate algorithm: each request
moves a theoretical arrival time (TAT) forward by ``window / quota``, and a request is
refused while that would put the TAT more than one window ahead of now. It allows bursts of
up to ``quota`` and then a steady ``quota`` per window, with one stored number per key.
``award.lua`` runs the same arithmetic inside Redis, atomically with the award; this module
is the reference the tests hold it to, and formats the headers
(draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy`` and ``RateLimit``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    quota: int
    window_ms: int

    @property
    def window_us(self) -> int:
        return self.window_ms * 1000

    @property
    def interval_us(self) -> int:
        # Integer microseconds, so Lua (doubles) and Python compute bit-identical results.
        return self.window_us // self.quota

    def policy(self) -> str:
        return f'"{self.name}";q={self.quota};w={math.ceil(self.window_ms / 1000)}'


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    tat_us: int  # the new TAT to store when allowed; the old one otherwise
    remaining: int
    wait_ms: int  # refused: until this request would be allowed
    reset_ms: int  # allowed: until the limit is fully available again


def gcra(limit: Limit, stored_tat_us: int | None, now_ms: int) -> Decision:
    now = now_ms * 1000
    tat = max(stored_tat_us or now, now)
    new_tat = tat + limit.interval_us
    allow_at = new_tat - limit.window_us
    if now < allow_at:
        return Decision(False, tat, 0, _ceil_ms(allow_at - now), 0)
    remaining = (limit.window_us - (new_tat - now)) // limit.interval_us
    return Decision(True, new_tat, remaining, 0, _ceil_ms(new_tat - now))


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


def policy_header(limits: list[Limit]) -> str:
    return ", ".join(limit.policy() for limit in limits)


def ratelimit_header(name: str, remaining: int, reset_ms: int) -> str:
    return f'"{name}";r={remaining};t={math.ceil(reset_ms / 1000)}'


def retry_after_seconds(wait_ms: int) -> int:
    """Whole seconds for ``Retry-After``, never 0 for a refusal."""
    return max(1, math.ceil(wait_ms / 1000))
