"""The moderation part of the OpenAPI document: the admin endpoints, ``/api/me`` and the
console page (``services.score_api.openapi`` merges it in)."""

from __future__ import annotations

from typing import Any

from services.score_api.validation import MAX_REASON
from shared.formats import FLAG_ID, IDEMPOTENCY_KEY, USER_ID

PROBLEM = {"$ref": "#/components/responses/Problem"}
USER_ID_SCHEMA = {"type": "string", "pattern": USER_ID.schema_pattern}
MAX_ADMIN_LIMIT = 500
FLAG_STATES = ("open", "dismissed", "actioned")
STATES = ("active", "quarantined", "banned")
MAX_STATS_HOURS = 720  # GET /api/admin/stats: window 1h..30d


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(status): PROBLEM for status in statuses}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _body(schema: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": _json(schema)}


def _limit(default: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_ADMIN_LIMIT, "default": default}
    return {"name": "limit", "in": "query", "required": False, "schema": schema}


def admin_paths(user_path: dict[str, Any], view_parameters: list[dict[str, Any]]) -> dict[str, Any]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]

    def action(op_id: str, summary: str, body: str | None, optional: bool = False) -> Any:
        operation: dict[str, Any] = {
            "operationId": op_id,
            "summary": summary,
            "security": bearer,
            "parameters": [user_path],
            "responses": {
                "200": {"description": "Done (or already so)", "content": _json("Moderation")},
                **_problems(401, 403, 409, 413, 415, 422, 503),
            },
        }
        if body:
            operation["requestBody"] = _body(body, required=not optional)
        return operation

    flag_id = {
        "name": "flag_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": FLAG_ID.schema_pattern},
    }
    return {
        "/api/me": {
            "get": {
                "operationId": "getMe",
                "summary": "The caller's own entry (a quarantined user sees their would-be rank)",
                "security": bearer,
                "parameters": view_parameters,
                "responses": {
                    "200": {"description": "Your entry", "content": _json("Me")},
                    **_problems(401, 404, 422, 503),
                },
            }
        },
        "/api/admin/users/{user_id}": {
            "delete": action("banUser", "Ban a user (the first form; reason optional)", None)
        },
        "/api/admin/users/{user_id}/ban": {
            "post": action("banUserWithReason", "Ban: off every board, writes refused", "Reason")
        },
        "/api/admin/users/{user_id}/unban": {
            "post": action(
                "unbanUser", "Lift a ban; the user returns in place", "OptionalReason", True
            )
        },
        "/api/admin/users/{user_id}/quarantine": {
            "post": action(
                "quarantineUser", "Shadow ban: hidden from others, still scored", "Reason"
            )
        },
        "/api/admin/users/{user_id}/release": {
            "post": action("releaseUser", "End a quarantine; the user returns in place", "Reason")
        },
        "/api/admin/users/{user_id}/revoke": {
            "post": {
                "operationId": "revokePoints",
                "summary": "Remove the points of the user's events in a time range",
                "security": bearer,
                "parameters": [
                    user_path,
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.schema_pattern},
                    },
                ],
                "requestBody": _body("RevokeRequest"),
                "responses": {
                    "200": {"description": "Revoked", "content": _json("Revocation")},
                    **_problems(400, 401, 403, 409, 413, 415, 422, 503),
                },
            }
        },
        "/api/admin/flags": {
            "get": {
                "operationId": "listFlags",
                "summary": "Anomaly flags, newest first",
                "security": bearer,
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(FLAG_STATES), "default": "open"},
                    },
                    _limit(100),
                ],
                "responses": {
                    "200": {"description": "Flags", "content": _json("Flags")},
                    **_problems(401, 403, 422, 503),
                },
            }
        },
        "/api/admin/flags/{flag_id}/dismiss": {
            "post": {
                "operationId": "dismissFlag",
                "summary": "Dismiss a flag (the user was not cheating)",
                "security": bearer,
                "parameters": [flag_id],
                "requestBody": _body("Reason"),
                "responses": {
                    "200": {"description": "Dismissed", "content": _json("FlagDecision")},
                    **_problems(401, 403, 404, 413, 415, 422, 503),
                },
            }
        },
        "/api/admin/audit": {
            "get": {
                "operationId": "audit",
                "summary": "A user's moderation history, newest first",
                "security": bearer,
                "parameters": [
                    {"name": "user_id", "in": "query", "required": True, "schema": USER_ID_SCHEMA},
                    _limit(50),
                ],
                "responses": {
                    "200": {"description": "Actions", "content": _json("Audit")},
                    **_problems(401, 403, 422, 503),
                },
            }
        },
        "/api/admin/stats": {
            "get": {
                "operationId": "adminStats",
                "summary": "User analytics over a window of whole UTC hours ending now",
                "security": bearer,
                "parameters": [
                    {
                        "name": "window",
                        "in": "query",
                        "required": False,
                        "description": "<n>h or <n>d, from 1h to 30d",
                        "schema": {"type": "string", "minLength": 2, "maxLength": 4},
                    }
                ],
                "responses": {
                    "200": {"description": "Stats", "content": _json("Stats")},
                    **_problems(401, 403, 422, 503),
                },
            }
        },
        "/api/admin/users/{user_id}/events": {
            "get": {
                "operationId": "userEvents",
                "summary": "A user's recent events with their audit fields, newest first",
                "security": bearer,
                "parameters": [user_path, _limit(50)],
                "responses": {
                    "200": {"description": "Events", "content": _json("UserEvents")},
                    **_problems(401, 403, 422, 503),
                },
            }
        },
        "/admin": {
            "get": {
                "operationId": "adminConsole",
                "summary": "The moderation console page",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


_TEXT = {"type": ["string", "null"]}
_INT = {"type": ["integer", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_REASON = {"type": "string", "minLength": 1, "maxLength": MAX_REASON}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


def _board_points() -> dict[str, Any]:
    return {
        "type": "array",
        "items": _object(
            ["board_id", "period", "points"],
            {"board_id": {"type": "string"}, "period": {"type": "string"}, "points": _INT},
        ),
    }


def _stats() -> dict[str, Any]:
    count = {"type": "integer", "minimum": 0}
    points = {"type": "integer"}

    def rows(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "array", "items": _object(required, properties)}

    properties: dict[str, Any] = {
        "window": {"type": "string"},
        "from": {"type": "string", "format": "date-time"},
        "to": {"type": "string", "format": "date-time"},
        "active_users": count,
        "new_users": count,
        "awards": count,
        "points": points,
        "by_action": rows(
            ["action", "awards", "points"],
            {"action": {"type": "string"}, "awards": count, "points": points},
        ),
        "points_by_hour": {
            **rows(
                ["hour", "awards", "points"],
                {"hour": {"type": "string", "format": "date-time"}}
                | {"awards": count, "points": points},
            ),
            "maxItems": MAX_STATS_HOURS,
        },
        "top_movers": rows(
            ["user_id", "name", "awards", "points"],
            {"user_id": USER_ID_SCHEMA, "name": {"type": "string"}}
            | {"awards": count, "points": points},
        ),
        "refusals": rows(["reason", "count"], {"reason": {"type": "string"}, "count": count}),
    }
    return _object(list(properties), properties)


def admin_schemas(entry: dict[str, Any], view_fields: dict[str, Any]) -> dict[str, Any]:
    flag = {
        "flag_id": {"type": "integer"},
        "user_id": USER_ID_SCHEMA,
        "name": _TEXT,
        "rule": {"type": "string"},
        "window_seconds": {"type": "integer"},
        "observed": {"type": "integer"},
        "threshold": {"type": "integer"},
        "first_seen": _TIME,
        "last_seen": _TIME,
        "state": {"enum": list(FLAG_STATES)},
        "decided_by": _TEXT,
        "decided_at": _TIME,
        "decision": _TEXT,
    }
    event_fields: tuple[str, ...] = ("type", "action", "client_ip", "user_agent", "request_id")
    event_fields += ("jti", "iss", "ticket", "reporter", "periods", "revoked_by", "by", "reason")
    return {
        "Reason": {
            "type": "object",
            "required": ["reason"],
            "additionalProperties": False,
            "properties": {"reason": _REASON},
        },
        "OptionalReason": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"reason": _REASON},
        },
        "Moderation": {
            "type": "object",
            "required": ["user_id", "status", "changed", "score"],
            "additionalProperties": False,
            "properties": {
                "user_id": USER_ID_SCHEMA,
                "status": {"enum": list(STATES)},
                "changed": {"type": "boolean"},
                "score": _INT,
            },
        },
        "Me": {
            "type": "object",
            "required": [*entry["required"], *view_fields],
            "additionalProperties": False,
            "properties": {**entry["properties"], **view_fields},
        },
        "RevokeRequest": {
            "type": "object",
            "required": ["since", "until", "reason"],
            "additionalProperties": False,
            "properties": {
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "reason": _REASON,
            },
        },
        "Revocation": _object(
            ["revocation_id", "user_id", "since", "until", "events", "points", "score"],
            {
                "revocation_id": {"type": "string"},
                "user_id": USER_ID_SCHEMA,
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "events": {"type": "integer", "minimum": 0},
                "points": {"type": "integer", "minimum": 0},
                "score": {"type": "integer"},
                "boards": _board_points(),
                "corrections": _board_points(),
                "replayed": {"type": "boolean"},
            },
        ),
        "Flags": _object(["flags"], {"flags": {"type": "array", "items": _object([], flag)}}),
        "FlagDecision": _object(
            ["flag_id", "state", "changed"],
            {
                "flag_id": {"type": "integer"},
                "state": {"type": "string"},
                "changed": {"type": "boolean"},
            },
        ),
        "Stats": _stats(),
        "Audit": _object(
            ["user_id", "actions"], {"user_id": USER_ID_SCHEMA, "actions": {"type": "array"}}
        ),
        "UserEvents": _object(
            ["user_id", "events"],
            {
                "user_id": USER_ID_SCHEMA,
                "events": {
                    "type": "array",
                    "items": _object(
                        ["event_id", "type"],
                        {name: _TEXT for name in event_fields}
                        | {"event_id": {"type": "string"}, "points": _INT, "score_after": _INT}
                        | {"at": _TIME, "duration_ms": _INT},
                    ),
                },
            },
        ),
    }
