"""The problem for each refusal of the award and ticket scripts (no I/O).

Every refusal changed nothing in Redis; each maps to one RFC 9457 problem whose ``type``
ends with the slug below and whose ``reason`` labels it in ``score_api_rejections_total``.
"""

from __future__ import annotations

from collections.abc import Collection

from services.score_api.problems import Problem, unavailable
from services.score_api.ratelimit import ratelimit_header, retry_after_seconds
from services.score_api.store import AwardResult, TicketResult


def refusal(
    result: AwardResult | TicketResult, policy: str, budgets: Collection[str] = ()
) -> Problem:
    """The problem for a result the script refused; ``budgets`` are the points budgets'
    limit names (their refusals are ``points-budget``, not ``rate-limited``)."""
    status = result.status
    if status in ("limited", "cooldown", "daily-cap", "too-early"):
        return _wait(result, policy, budgets)
    if status == "banned":
        return Problem(403, "banned", "this user may not score", reason="banned")
    if status == "conflict":
        return Problem(
            422,
            "idempotency-conflict",
            "this Idempotency-Key was already used for another action",
            reason="idempotency_conflict",
        )
    if status == "ticket-invalid":
        # Unknown, expired, cancelled, another user's or another action's: never say which.
        return Problem(
            422,
            "ticket-invalid",
            "the ticket is not valid for this action",
            reason="ticket_invalid",
        )
    if status == "clock-skew":
        # This replica's clock is over a minute off Redis's: another replica may do.
        return unavailable("this replica's clock disagrees with the score store's", "clock_skew")
    if status == "ticket-used":
        return Problem(
            409,
            "ticket-used",
            "this ticket was already redeemed under another Idempotency-Key",
            reason="ticket_used",
        )
    return Problem(422, "score-overflow", "the score would exceed its maximum", reason="overflow")


def _wait(result: AwardResult | TicketResult, policy: str, budgets: Collection[str]) -> Problem:
    """A refusal that passes with time: 429 (or 425 too early), with when to retry."""
    retry = str(retry_after_seconds(result.wait_ms))
    headers = {"Retry-After": retry}
    name = result.limit
    if result.status == "too-early":
        detail = f"the action started too recently to be complete; retry in {retry} s"
        return Problem(425, "too-early", detail, headers=headers, reason="too_early")
    if result.status == "cooldown":
        detail = f"{name!r} is cooling down for this user; retry in {retry} s"
        return Problem(429, "cooldown", detail, headers=headers, reason="cooldown")
    if result.status == "daily-cap":
        headers["RateLimit"] = ratelimit_header(f"{name}-day", 0, result.wait_ms)
        detail = f"{name!r} reached its completions for today (UTC); retry in {retry} s"
        return Problem(
            429,
            "daily-cap",
            detail,
            headers=headers,
            reason="daily_cap",
            extensions={"budget": f"{name}-day"},
        )
    headers["RateLimit-Policy"] = policy
    headers["RateLimit"] = ratelimit_header(name, 0, result.wait_ms)
    if name in budgets:
        detail = f"points budget {name!r} is spent for this user; retry in {retry} s"
        slug, reason = "points-budget", f"budget_{name}"
    else:
        detail = f"rate limit {name!r} exceeded; retry in {retry} s"
        slug, reason = "rate-limited", f"rate_{name}"
    return Problem(429, slug, detail, headers=headers, reason=reason, extensions={"budget": name})
