"""Pure checks of request parts: idempotency keys, bodies, paging, client addresses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from services.score_api.problems import Problem
from services.score_api.tokens import TokenError, display_name
from shared.formats import IDEMPOTENCY_KEY, TICKET, USER_ID
from shared.netaddr import Network as Network
from shared.netaddr import client_ip as client_ip
from shared.netaddr import limit_subject as limit_subject
from shared.netaddr import parse_networks as parse_networks

MAX_BODY_BYTES = 4096
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


def too_large() -> Problem:
    return Problem(
        413,
        "body-too-large",
        f"the body must be at most {MAX_BODY_BYTES} bytes",
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
