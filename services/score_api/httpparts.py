"""Request and response pieces the score API's handlers share: bodies, audit fields, limit
headers, and the mapping of every refusal to its RFC 9457 response."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from services.score_api import validation
from services.score_api.metrics import REJECTIONS
from services.score_api.problems import Problem
from services.score_api.ratelimit import ratelimit_header
from services.score_api.requestid import MAX_USER_AGENT
from services.score_api.tokens import Claims, ScopeError
from shared.formats import Field


class EncodedJson(Response):
    """A 200 application/json response of bytes already encoded (a cached board page)."""

    media_type = "application/json"


def audit_fields(request: Request, claims: Claims) -> dict[str, str]:
    """Extra event fields for the audit trail; only what is present, bounded in size."""
    fields = {Field.REQUEST_ID: request.state.request_id}
    agent = request.headers.get("user-agent")
    if agent:
        fields[Field.USER_AGENT] = agent[:MAX_USER_AGENT]
    if claims.jti:
        fields[Field.JTI] = claims.jti
    if claims.iss:
        fields[Field.ISS] = claims.iss
    return fields


def limit_headers(
    response: Response, limit_policy: str, name: str, remaining: int, reset_ms: int
) -> None:
    """``RateLimit-Policy`` and ``RateLimit`` (the tightest limit) on an accepted request."""
    if limit_policy:
        response.headers["RateLimit-Policy"] = limit_policy
    if name:
        response.headers["RateLimit"] = ratelimit_header(name, remaining, reset_ms)


@contextmanager
def scope_problems() -> Iterator[None]:
    """A ``ScopeError`` raised inside is the 403 ``insufficient_scope`` problem."""
    try:
        yield
    except ScopeError as exc:
        raise Problem.from_scope_error(exc) from None


async def read_body(request: Request, limit: int = validation.MAX_BODY_BYTES) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit``, however it is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise validation.too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise validation.too_large(limit)
    return bytes(body)


async def read_admin_body(request: Request) -> bytes:
    """A moderation request's body: JSON when there is one, up to MAX_ADMIN_BODY_BYTES."""
    body = await read_body(request, validation.MAX_ADMIN_BODY_BYTES)
    if body.strip():
        validation.content_type_is_json(request.headers.get("content-type"))
    return body


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    REJECTIONS.labels(exc.reason).inc()
    counter = getattr(request.app.state, "api", None)
    if counter is not None:
        counter.count_refusal(exc.reason)  # per hour, for the stats (statsreads)
    return exc.response(request.url.path)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    problem = Problem(
        exc.status_code,
        "http-error",
        exc.detail,
        headers=dict(exc.headers or {}),
        reason=f"http_{exc.status_code}",
    )
    return await problem_handler(request, problem)
