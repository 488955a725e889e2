"""The score API's admin reads from PostgreSQL (scope score:admin): the anomaly flags and
their dismissal, a user's moderation history and a user's recent events. ``ScoreApi`` mixes
this in; the attributes below are its wiring.

A dismissal is a stream event too (``dismiss``, with its moderator, reason and flag), so the
persister's audit rows have it; the flag's row is updated here in the same transaction that
found it open, committed only once the event is in the stream (the persister applies the
event idempotently). Redis away: 503 and nothing changed. PostgreSQL away: every handler
here answers 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import asyncpg
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT
from starlette.requests import Request
from starlette.responses import Response

from services.score_api import validation
from services.score_api.database import DatabaseUnavailable
from services.score_api.httpparts import audit_fields, read_admin_body
from services.score_api.openapi_admin import FLAG_STATES, MAX_ADMIN_LIMIT
from services.score_api.problems import Problem, database_unavailable, unavailable
from services.score_api.store import ScoreStore
from services.score_api.tickets import rfc3339
from services.score_api.tokens import SCOPE_ADMIN
from services.score_api.wiring import ApiWiring
from shared.clock import ms
from shared.events import new_event_id
from shared.formats import EVENT_VERSION, FLAG_ID, EventType, Field, banned_parts
from shared.health import json_response
from shared.redisconn import text

# The flag id in a path: what the OpenAPI document says, ^[0-9]{1,18}$ (always a bigint).
DEFAULT_FLAGS = 100
DEFAULT_AUDIT = 50
DEFAULT_EVENTS = 50
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FLAGS = """
SELECT f.flag_id, f.user_id, coalesce(u.name, f.user_id) AS name, f.rule, f.window_seconds,
    f.observed, f.threshold, f.first_seen, f.last_seen, f.state, f.decided_by, f.decided_at,
    f.decision
FROM user_flags f LEFT JOIN users u ON u.user_id = f.user_id
WHERE f.state = $1
ORDER BY f.last_seen DESC, f.flag_id DESC
LIMIT $2
"""

_AUDIT = """
SELECT event_id, type, moderator, reason, created_at, request_id, revocation, flag, score_after
FROM score_events
WHERE user_id = $1 AND type <> 'score'
ORDER BY created_at DESC, event_id DESC
LIMIT $2
"""

_EVENTS = """
SELECT event_id, type, action, points, score_after, created_at, client_ip, user_agent,
    request_id, jti, iss, ticket, duration_ms, reporter, periods, revoked_by, moderator, reason
FROM score_events
WHERE user_id = $1
ORDER BY created_at DESC, seq DESC, event_id DESC
LIMIT $2
"""

_LOCK_FLAG = "SELECT user_id, state FROM user_flags WHERE flag_id = $1 FOR UPDATE"
# The decision of a dismissal is its reason (as the persister writes it from the event).
_DISMISS = """
UPDATE user_flags SET state = 'dismissed', decided_by = $2, decided_at = $3, decision = $4
WHERE flag_id = $1
"""


def at(moment: datetime | None) -> str | None:
    """A timestamptz as RFC 3339 UTC with milliseconds, like every time the API shows."""
    if moment is None:
        return None
    return rfc3339((moment - _EPOCH) // timedelta(milliseconds=1))


def _invalid(detail: str) -> Problem:
    return Problem(422, "invalid-parameter", detail, reason="query")


def flag_id(value: str) -> int:
    """A flag id from the path (shared.formats.FLAG_ID)."""
    if not FLAG_ID.matches(value):
        raise _invalid(f"flag_id must be {FLAG_ID.describe()}")
    return int(value)


def flag_state(params: Mapping[str, str]) -> str:
    state = params.get("state", "open")
    if state not in FLAG_STATES:
        raise _invalid(f"state must be one of {', '.join(FLAG_STATES)}")
    return state


def limit(params: Mapping[str, str], default: int) -> int:
    return validation.bounded_int(params, "limit", default, 1, MAX_ADMIN_LIMIT)


def flag_json(row: asyncpg.Record) -> dict[str, object]:
    return {
        "flag_id": row["flag_id"],
        "user_id": row["user_id"],
        "name": row["name"],
        "rule": row["rule"],
        "window_seconds": row["window_seconds"],
        "observed": row["observed"],
        "threshold": row["threshold"],
        "first_seen": at(row["first_seen"]),
        "last_seen": at(row["last_seen"]),
        "state": row["state"],
        "decided_by": row["decided_by"],
        "decided_at": at(row["decided_at"]),
        "decision": row["decision"],
    }


def action_json(row: asyncpg.Record) -> dict[str, object]:
    return {
        "event_id": row["event_id"],
        "type": row["type"],
        "by": row["moderator"],
        "reason": row["reason"],
        "at": at(row["created_at"]),
        "request_id": row["request_id"],
        "revocation": row["revocation"],
        "flag": row["flag"],
        "score": row["score_after"],
    }


def event_json(row: asyncpg.Record) -> dict[str, object]:
    return {
        "event_id": row["event_id"],
        "type": row["type"],
        "action": row["action"],
        "points": row["points"],
        "score_after": row["score_after"],
        "at": at(row["created_at"]),
        "client_ip": row["client_ip"],
        "user_agent": row["user_agent"],
        "request_id": row["request_id"],
        "jti": row["jti"],
        "iss": row["iss"],
        "ticket": row["ticket"],
        "duration_ms": row["duration_ms"],
        "reporter": row["reporter"],
        "periods": row["periods"],
        "revoked_by": row["revoked_by"],
        "by": row["moderator"],
        "reason": row["reason"],
    }


async def dismiss_event(
    store: ScoreStore, user_id: str, client_ip: str, extras: Mapping[str, str], now_ms: int
) -> None:
    """XADD the dismiss event: version 3, the flagged user's name and current total."""
    redis, keys = store.redis, store.keys
    name = await redis.hget(keys.names, user_id)
    saved = await redis.hget(keys.banned, user_id)
    member = await redis.hget(keys.members, user_id)
    score = 0
    if saved is not None:
        score = banned_parts(text(saved))[0] or 0
    elif member is not None:
        stored = await redis.zscore(keys.board, member)
        if stored is None:
            stored = await redis.zscore(keys.hidden_board, member)
        score = 0 if stored is None else -int(stored)
    fields: dict[FieldT, EncodableT] = {
        Field.VERSION: EVENT_VERSION,
        Field.TYPE: EventType.DISMISS,
        Field.EVENT_ID: new_event_id(now_ms),
        Field.USER_ID: user_id,
        Field.NAME: user_id if name is None else text(name),
        Field.ACTION: EventType.DISMISS,
        Field.POINTS: 0,
        Field.SCORE: score,
        Field.SEQ: 0,
        Field.IDEMPOTENCY_KEY: "",
        Field.TS: now_ms,
        Field.CLIENT_IP: client_ip,
    }
    for field, value in extras.items():
        fields[field] = value
    await redis.xadd(keys.stream, fields)


class AdminReads(ApiWiring):
    async def list_flags(self, request: Request) -> Response:
        """``GET /api/admin/flags?state=&limit=``: flags in one state, newest first."""
        await self.authenticate(request, SCOPE_ADMIN)
        state = flag_state(request.query_params)
        count = limit(request.query_params, DEFAULT_FLAGS)
        try:
            rows = await self.database.fetch(_FLAGS, state, count)
        except DatabaseUnavailable:
            raise database_unavailable() from None
        return json_response({"flags": [flag_json(r) for r in rows]})

    async def audit(self, request: Request) -> Response:
        """``GET /api/admin/audit?user_id=&limit=``: the user's moderation events, newest
        first (every event but scores: bans, quarantines, revocations, dismissals...)."""
        await self.authenticate(request, SCOPE_ADMIN)
        user = request.query_params.get("user_id")
        if user is None:
            raise _invalid("user_id is required")
        user = validation.user_id(user)
        count = limit(request.query_params, DEFAULT_AUDIT)
        try:
            rows = await self.database.fetch(_AUDIT, user, count)
        except DatabaseUnavailable:
            raise database_unavailable() from None
        return json_response({"user_id": user, "actions": [action_json(r) for r in rows]})

    async def user_events(self, request: Request) -> Response:
        """``GET /api/admin/users/{user_id}/events?limit=``: the user's events with their
        audit fields, newest first."""
        await self.authenticate(request, SCOPE_ADMIN)
        user = validation.user_id(request.path_params["user_id"])
        count = limit(request.query_params, DEFAULT_EVENTS)
        try:
            rows = await self.database.fetch(_EVENTS, user, count)
        except DatabaseUnavailable:
            raise database_unavailable() from None
        return json_response({"user_id": user, "events": [event_json(r) for r in rows]})

    async def dismiss_flag(self, request: Request) -> Response:
        """``POST /api/admin/flags/{flag_id}/dismiss {"reason"}``: close an open flag."""
        claims = await self.authenticate(request, SCOPE_ADMIN)
        flag = flag_id(request.path_params["flag_id"])
        reason = validation.reason_body(await read_admin_body(request))
        extras = audit_fields(request, claims) | {
            Field.BY: claims.sub,
            Field.REASON: reason,
            Field.FLAG: str(flag),
        }
        ip = self.client_ip(request)
        now = ms(self.clock)
        try:
            async with self.database.transaction() as conn:
                row = await conn.fetchrow(_LOCK_FLAG, flag)
                if row is None:
                    raise Problem(
                        404, "unknown-flag", f"there is no flag {flag}", reason="unknown_flag"
                    )
                if row["state"] != "open":
                    return json_response({"flag_id": flag, "state": row["state"], "changed": False})
                decided_at = _EPOCH + timedelta(milliseconds=now)
                await conn.execute(_DISMISS, flag, claims.sub, decided_at, reason)
                # Committed only once the event is in the stream.
                await dismiss_event(self.store, row["user_id"], ip, extras, now)
        except DatabaseUnavailable:
            raise database_unavailable() from None
        except RedisError:
            raise unavailable(
                "the score store is unreachable; retry", "redis_unavailable"
            ) from None
        return json_response({"flag_id": flag, "state": "dismissed", "changed": True})
