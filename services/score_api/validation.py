"""Pure checks of request parts: idempotency keys, bodies, paging, client addresses."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from services.score_api.problems import Problem
from services.score_api.tokens import TokenError, display_name
from shared.formats import IDEMPOTENCY_KEY, TICKET, USER_ID
from shared.netaddr import Network as Network
from shared.netaddr import client_ip as client_ip
from shared.netaddr import limit_subject as limit_subject
from shared.netaddr import parse_networks as parse_networks

MAX_BODY_BYTES = 4096
# A moderation body: a reason of MAX_REASON characters fits even with every one \u-escaped.
MAX_ADMIN_BODY_BYTES = 16384
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_AROUND = 25


def idempotency_key(value: str | None) -> str:
    if value is None:
        raise Problem(
            400,
            "idempotency-key",
            "the Idempotency-Key header is required",
            reason="idempotency_key",
        )
    if not IDEMPOTENCY_KEY.matches(value):
        raise Problem(
            400,
            "idempotency-key",
            f"Idempotency-Key must be {IDEMPOTENCY_KEY.describe()}",
            reason="idempotency_key",
        )
    return value


def content_type_is_json(value: str | None) -> None:
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise Problem(
            415, "unsupported-media-type", "the body must be application/json", reason="media_type"
        )


def too_large(limit: int = MAX_BODY_BYTES) -> Problem:
    return Problem(
        413,
        "body-too-large",
        f"the body must be at most {limit} bytes",
        reason="body_size",
    )


@dataclass(frozen=True, slots=True)
class AwardBody:
    """``{"action", "ticket"?}`` from a player, ``{"action", "user_id", "name"?}`` from a
    trusted reporter (``user_id`` set)."""

    action: str
    ticket: str | None = None
    user_id: str | None = None
    name: str | None = None


PLAYER_FIELDS = frozenset({"action", "ticket"})
REPORTER_FIELDS = frozenset({"action", "user_id", "name"})


def award_body(raw: bytes) -> AwardBody:
    """The award a body asks for; anything else is refused with 422."""
    body = _json_object(raw)
    fields = set(body)
    player = fields <= PLAYER_FIELDS
    reporter = "user_id" in fields and fields <= REPORTER_FIELDS
    if "action" not in fields or not (player or reporter):
        raise Problem(
            422,
            "invalid-body",
            'the body must be {"action", "ticket"?} or, from a reporter, '
            '{"action", "user_id", "name"?}',
            reason="body",
        )
    ticket = body.get("ticket")
    if "ticket" in body and not (isinstance(ticket, str) and TICKET.matches(ticket)):
        raise Problem(422, "ticket-invalid", "the ticket is not valid", reason="ticket_invalid")
    user = body.get("user_id")
    if reporter and not (isinstance(user, str) and USER_ID.matches(user)):
        raise _invalid_body(f"user_id must be {USER_ID.describe()}")
    name = None
    if "name" in body:
        if not isinstance(body["name"], str):
            raise _invalid_body("name must be a string")
        try:
            name = display_name(body["name"], "", what="name")
        except TokenError as exc:
            raise _invalid_body(exc.detail) from None
    return AwardBody(
        action_name(body),
        ticket if isinstance(ticket, str) else None,
        user if isinstance(user, str) else None,
        name,
    )


def start_body(raw: bytes) -> str:
    """The action named by ``{"action": "..."}`` (starting a ticket)."""
    body = _json_object(raw)
    if set(body) != {"action"}:
        raise _invalid_body('the body must be exactly {"action": "<action>"}')
    return action_name(body)


def action_name(body: Mapping[str, object]) -> str:
    action = body["action"]
    if not isinstance(action, str) or not 1 <= len(action) <= 64:
        raise _invalid_body("action must be a string of 1..64 characters")
    return action


def _json_object(raw: bytes) -> dict[str, object]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid_body("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _invalid_body("the body must be a JSON object")
    return body


def _invalid_body(detail: str) -> Problem:
    return Problem(422, "invalid-body", detail, reason="body")


def bounded_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    # ASCII digits only, and few of them: str.isdigit() also accepts '²' or '①', which int()
    # refuses, and a 5,000-digit number is no page size.
    digits = len(str(high))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= digits) or not low <= int(raw) <= high:
        raise Problem(
            422, "invalid-parameter", f"{name} must be an integer in {low}..{high}", reason="query"
        )
    return int(raw)


def paging(params: Mapping[str, str]) -> tuple[int, int]:
    """(limit, offset) from the query string, within the documented bounds."""
    return (
        bounded_int(params, "limit", 10, 1, MAX_LIMIT),
        bounded_int(params, "offset", 0, 0, MAX_OFFSET),
    )


def user_id(value: str) -> str:
    if not USER_ID.matches(value):
        raise Problem(
            422,
            "invalid-parameter",
            f"user_id must be {USER_ID.describe()}",
            reason="query",
        )
    return value


MAX_REASON = 500


def reason_body(raw: bytes, *, required: bool = True) -> str:
    """A moderation action's ``{"reason": "..."}``: 1..MAX_REASON characters, not blank, no
    control characters ("" when not required and the body is empty)."""
    if not raw.strip() and not required:
        return ""
    body = _json_object(raw)
    if set(body) - {"reason"} or ("reason" not in body and required):
        raise _invalid_body('the body must be {"reason": "<why>"}')
    return reason(body["reason"]) if "reason" in body else ""


def reason(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REASON or not value.strip():
        raise _invalid_body(f"reason must be a string of 1..{MAX_REASON} characters, not blank")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value):
        raise _invalid_body("reason must not contain control or format characters")
    return value


@dataclass(frozen=True, slots=True)
class RevokeBody:
    since_ms: int
    until_ms: int
    reason: str


def revoke_body(raw: bytes) -> RevokeBody:
    """``{"since", "until", "reason"}``: RFC 3339 times with an offset, since before until."""
    body = _json_object(raw)
    if set(body) != {"since", "until", "reason"}:
        raise _invalid_body('the body must be exactly {"since", "until", "reason"}')
    since, until = rfc3339_ms(body["since"], "since"), rfc3339_ms(body["until"], "until")
    if since >= until:
        raise _invalid_body("since must be before until")
    return RevokeBody(since, until, reason(body["reason"]))


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def rfc3339_ms(value: object, name: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 date-time (offset required, from 1970)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise _invalid_body(f"{name} must be an RFC 3339 date-time with an offset")
    text = value.upper().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python reads at most microseconds
        digits, offset = rest[:-6], rest[-6:]
        text = f"{head}.{(digits + '000000')[:6]}{offset}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid_body(f"{name} is not a valid date-time") from None
    epoch_ms = (moment - _EPOCH) // timedelta(milliseconds=1)
    if epoch_ms < 0:
        raise _invalid_body(f"{name} must not be before 1970")
    return epoch_ms


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
