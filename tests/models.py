"""Reference models the tests hold the real code to; no service imports them.

``gcra`` is the rate arithmetic ``award.lua`` runs inside Redis; ``ranking_key`` is the order
Redis gives the board's sorted set.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.score_api.ratelimit import Limit
from shared.formats import encode_member


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


def ranking_key(score: int, seq: int, user_id: str) -> tuple[int, str]:
    """Python mirror of the Redis order: sort ascending by this key to get the ranking."""
    return (-score, encode_member(seq, user_id))
