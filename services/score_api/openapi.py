"""The API's OpenAPI 3.1 document, built from the settings (the action catalogue is its enum).

Served at ``/openapi.json``; schemathesis fuzzes the API against it in CI, and a test checks
that every route of the app is described here.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from services.score_api.actions import MODES, Action
from services.score_api.openapi_admin import admin_paths, admin_schemas
from services.score_api.settings import ApiSettings
from services.score_api.tokens import MAX_NAME_CHARS
from services.score_api.validation import MAX_AROUND, MAX_LIMIT, MAX_OFFSET
from shared.boards import ALL_TIME
from shared.formats import API_EVENT_ID, IDEMPOTENCY_KEY, TICKET, USER_ID, Pattern
from shared.periods import RESETS

PROBLEM = {"$ref": "#/components/responses/Problem"}


def _string(pattern: Pattern) -> dict[str, str]:
    return {"type": "string", "pattern": pattern.schema_pattern}


USER_ID_SCHEMA = _string(USER_ID)
ACTION_FIELDS = ("action", *(f.name for f in fields(Action)))


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(status): PROBLEM for status in statuses}


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _int_query(name: str, low: int, high: int, default: int) -> dict[str, Any]:
    schema = {"type": "integer", "minimum": low, "maximum": high, "default": default}
    return {"name": name, "in": "query", "required": False, "schema": schema}


def openapi_document(settings: ApiSettings) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "object",
        "required": ["rank", "user_id", "name", "score"],
        "additionalProperties": False,
        "properties": {
            "rank": {"type": "integer", "minimum": 1},
            "user_id": USER_ID_SCHEMA,
            "name": {"type": "string"},
            "score": {"type": "integer", "minimum": 0},
        },
    }
    user_path = {"name": "user_id", "in": "path", "required": True, "schema": USER_ID_SCHEMA}
    action = {"type": "string", "enum": sorted(settings.actions)}
    board_ids = [board.board_id for board in settings.board_family()]
    board_query = {
        "name": "board",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": board_ids, "default": ALL_TIME},
    }
    period_query = {
        "name": "period",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
    }
    view_fields: dict[str, Any] = {
        "board_id": {"type": "string"},
        "period": {"type": "string"},
        "starts_at": {"type": ["string", "null"], "format": "date-time"},
        "ends_at": {"type": ["string", "null"], "format": "date-time"},
        "final": {"type": "boolean"},
    }
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Live leaderboard score API", "version": "1"},
        "paths": {
            "/api/score": {
                "post": {
                    "operationId": "postScore",
                    "summary": (
                        "Award the points of one completed action: to the token's user, or "
                        "(a reporter's score:report token) to the user the body names"
                    ),
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "schema": _string(IDEMPOTENCY_KEY),
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ScoreRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Accepted, or a replay",
                            "content": _json("AwardResult"),
                        },
                        **_problems(400, 401, 403, 409, 413, 415, 422, 425, 429, 503),
                    },
                }
            },
            "/api/actions": {
                "get": {
                    "operationId": "listActions",
                    "summary": "The action catalogue: points and trust mode of each action",
                    "responses": {"200": {"description": "Catalogue", "content": _json("Actions")}},
                },
                "post": {
                    "operationId": "startAction",
                    "summary": "Start a ticket-mode action: the ticket its completion redeems",
                    "security": bearer,
                    "requestBody": {"required": True, "content": _json("StartRequest")},
                    "responses": {
                        "201": {"description": "Started", "content": _json("Ticket")},
                        **_problems(401, 403, 413, 415, 422, 429, 503),
                    },
                },
            },
            "/api/score-board": {
                "get": {
                    "operationId": "getScoreBoard",
                    "summary": "A page of the ranking",
                    "parameters": [
                        _int_query("limit", 1, MAX_LIMIT, 10),
                        _int_query("offset", 0, MAX_OFFSET, 0),
                        board_query,
                        period_query,
                    ],
                    "responses": {
                        "200": {"description": "The page", "content": _json("Board")},
                        **_problems(404, 422, 503),
                    },
                }
            },
            "/api/boards": {
                "get": {
                    "operationId": "listBoards",
                    "summary": "The boards, their resets and their current periods",
                    "responses": {"200": {"description": "Boards", "content": _json("Boards")}},
                }
            },
            "/api/users/{user_id}/rank": {
                "get": {
                    "operationId": "getUserRank",
                    "summary": "A user's rank and neighbours",
                    "parameters": [
                        user_path,
                        _int_query("around", 0, MAX_AROUND, 0),
                        board_query,
                        period_query,
                    ],
                    "responses": {
                        "200": {"description": "Ranked", "content": _json("Rank")},
                        **_problems(404, 422, 503),
                    },
                }
            },
            **admin_paths(user_path, [board_query, period_query]),
            "/": {
                "get": {
                    "operationId": "livePage",
                    "summary": "The live scoreboard page",
                    "responses": {
                        "200": {
                            "description": "HTML",
                            "content": {"text/html": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/config.json": {
                "get": {
                    "operationId": "pageConfig",
                    "summary": "Where the live page finds the gateway",
                    "responses": {
                        "200": {"description": "Page settings", "content": _json("PageConfig")}
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Alive",
                    "responses": {"200": {"description": "Alive", "content": _json("Status")}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Ready to serve",
                    "responses": {
                        "200": {"description": "Ready", "content": _json("Status")},
                        "503": {"description": "Not ready", "content": _json("Status")},
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "Metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem",
                    "content": {
                        "application/problem+json": {
                            "schema": {"$ref": "#/components/schemas/Problem"}
                        }
                    },
                }
            },
            "schemas": {
                "ScoreRequest": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["action"],
                            "additionalProperties": False,
                            "properties": {"action": action, "ticket": _string(TICKET)},
                        },
                        {
                            "type": "object",
                            "required": ["action", "user_id"],
                            "additionalProperties": False,
                            "properties": {
                                "action": action,
                                "user_id": USER_ID_SCHEMA,
                                "name": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": MAX_NAME_CHARS,
                                },
                            },
                        },
                    ]
                },
                "StartRequest": {
                    "type": "object",
                    "required": ["action"],
                    "additionalProperties": False,
                    "properties": {"action": action},
                },
                "Ticket": {
                    "type": "object",
                    "required": ["ticket", "action", "not_before", "expires_at"],
                    "additionalProperties": False,
                    "properties": {
                        "ticket": _string(TICKET),
                        "action": {"type": "string"},
                        "not_before": {"type": "string", "format": "date-time"},
                        "expires_at": {"type": "string", "format": "date-time"},
                    },
                },
                "Actions": {
                    "type": "object",
                    "required": ["actions", "player_writes"],
                    "additionalProperties": False,
                    "properties": {
                        "actions": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Action"},
                        },
                        "player_writes": {"type": "boolean"},
                    },
                },
                "Action": {
                    "type": "object",
                    "required": [*ACTION_FIELDS],
                    "additionalProperties": False,
                    "properties": {
                        "action": {"type": "string"},
                        "mode": {"enum": list(MODES)},
                        **{
                            name: {"type": "integer", "minimum": 1 if name == "points" else 0}
                            for name in ACTION_FIELDS
                            if name not in ("action", "mode")
                        },
                    },
                },
                "AwardResult": {
                    "type": "object",
                    "required": [
                        "user_id",
                        "name",
                        "action",
                        "awarded",
                        "score",
                        "rank",
                        "event_id",
                        "duplicate",
                        "boards",
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "user_id": USER_ID_SCHEMA,
                        "name": {"type": "string"},
                        "action": {"type": "string"},
                        "awarded": {"type": "integer", "minimum": 1},
                        "score": {"type": "integer", "minimum": 1},
                        "rank": {"type": "integer", "minimum": 1},
                        "event_id": _string(API_EVENT_ID),
                        "duplicate": {"type": "boolean"},
                        "boards": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Standing"},
                        },
                    },
                },
                "Standing": {
                    "type": "object",
                    "required": ["board_id", "period", "score", "rank"],
                    "additionalProperties": False,
                    "properties": {
                        "board_id": {"type": "string"},
                        "period": {"type": "string"},
                        "score": {"type": "integer", "minimum": 1},
                        "rank": {"type": "integer", "minimum": 1},
                    },
                },
                "Entry": entry,
                "Board": {
                    "type": "object",
                    "required": ["board", "total", *view_fields],
                    "additionalProperties": False,
                    "properties": {
                        **view_fields,
                        "board": {
                            "type": "array",
                            "maxItems": MAX_LIMIT,
                            "items": {"$ref": "#/components/schemas/Entry"},
                        },
                        "total": {"type": "integer", "minimum": 0},
                        # An archived period's revocations (the archive is never rewritten).
                        "corrections": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["user_id", "points", "revocation_id", "at"],
                                "properties": {
                                    "user_id": USER_ID_SCHEMA,
                                    "points": {"type": "integer"},
                                    "revocation_id": {"type": "string"},
                                    "at": {"type": "string", "format": "date-time"},
                                },
                            },
                        },
                    },
                },
                "Rank": {
                    "type": "object",
                    "required": [*entry["required"], "around", *view_fields],
                    "additionalProperties": False,
                    "properties": {
                        **view_fields,
                        **entry["properties"],
                        "around": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Entry"},
                        },
                    },
                },
                "Boards": {
                    "type": "object",
                    "required": ["boards"],
                    "additionalProperties": False,
                    "properties": {
                        "boards": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "board_id",
                                    "reset",
                                    "timezone",
                                    "period",
                                    "starts_at",
                                    "ends_at",
                                ],
                                "additionalProperties": False,
                                "properties": {
                                    "board_id": {"type": "string"},
                                    "reset": {"enum": list(RESETS)},
                                    "timezone": {"type": "string"},
                                    "period": {"type": "string"},
                                    "starts_at": view_fields["starts_at"],
                                    "ends_at": view_fields["ends_at"],
                                },
                            },
                        }
                    },
                },
                **admin_schemas(entry, view_fields),
                "PageConfig": {
                    "type": "object",
                    "required": ["gateway_url", "player_writes"],
                    "properties": {
                        "gateway_url": {"type": "string"},
                        "player_writes": {"type": "boolean"},
                    },
                },
                "Status": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {"status": {"type": "string"}},
                },
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                    },
                },
            },
        },
    }
