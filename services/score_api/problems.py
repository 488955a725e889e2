"""API errors and their one mapping to RFC 9457 ``application/problem+json`` responses.

    Problem                      any refusal; carries status, slug, detail, headers
    ├── invalid_token (401)      services.score_api.tokens.TokenError
    ├── insufficient_scope (403) services.score_api.tokens.ScopeError
    └── everything else          raised directly with its status

``reason`` is the label under which the rejection is counted in metrics.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson
from starlette.responses import Response

from services.score_api.tokens import ScopeError, TokenError

PROBLEM_TYPE = "urn:leaderboard:problem:"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
        extensions: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.headers = headers or {}
        self.reason = reason or slug
        # RFC 9457 extension members, e.g. the budget a 429 names.
        self.extensions = extensions or {}

    def __repr__(self) -> str:
        return f"Problem({self.status}, {self.slug!r}, {self.detail!r})"

    @classmethod
    def bearer(cls, status: int, error: str, detail: str, reason: str, **params: str) -> Problem:
        """A refusal that RFC 6750 describes in ``WWW-Authenticate: Bearer error=...``."""
        header = ", ".join([f'Bearer error="{error}"', *(f'{k}="{v}"' for k, v in params.items())])
        slug = error.replace("_", "-")
        return cls(status, slug, detail, headers={"WWW-Authenticate": header}, reason=reason)

    @classmethod
    def from_token_error(cls, exc: TokenError) -> Problem:
        return cls.bearer(
            401, "invalid_token", exc.detail, f"token_{exc.reason}", error_description=exc.detail
        )

    @classmethod
    def from_scope_error(cls, exc: ScopeError) -> Problem:
        return cls.bearer(403, "insufficient_scope", str(exc), "scope", scope=exc.scope)

    def document(self, instance: str | None = None) -> bytes:
        """The RFC 9457 body; ``instance`` is the request path, when there is a request."""
        body: dict[str, object] = {
            "type": PROBLEM_TYPE + self.slug,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        return orjson.dumps(self.extensions | body)

    def response(self, instance: str) -> Response:
        return Response(
            self.document(instance),
            status_code=self.status,
            headers=self.headers,
            media_type="application/problem+json",
        )


def missing_token() -> Problem:
    return Problem.bearer(401, "invalid_token", "a bearer token is required", "token_missing")


def unavailable(detail: str, reason: str) -> Problem:
    """503: a dependency did not answer (or disagrees); safe to retry in a second."""
    return Problem(503, "unavailable", detail, headers={"Retry-After": "1"}, reason=reason)


def redis_unavailable() -> Problem:
    return unavailable(
        "the score store is unreachable; retry with the same Idempotency-Key", "redis_unavailable"
    )


def database_unavailable() -> Problem:
    return unavailable("PostgreSQL is unreachable; retry", "database_unavailable")
