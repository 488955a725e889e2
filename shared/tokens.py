"""The one JWT module: every token decision goes through here, so the library can be swapped.

Verification is a pure function of (token, settings, now): signature with an allow-listed
algorithm (never ``none``), then the claims, checked by this module rather than the library so
the rules are explicit and tested.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

import orjson
from jose import jws
from jose.exceptions import JOSEError

from shared.settings import SharedSettings

MAX_TOKEN_BYTES = 8 * 1024
SUBJECT = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
MAX_NAME_CHARS = 64
SCOPE_WRITE = "score:write"
SCOPE_ADMIN = "score:admin"


class TokenError(Exception):
    """The token is not acceptable (HTTP 401 ``invalid_token``); ``reason`` is for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"TokenError({self.reason!r}, {self.detail!r})"


class ScopeError(Exception):
    """A valid token without the scope the operation needs (HTTP 403 ``insufficient_scope``)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"the token lacks the {scope!r} scope")
        self.scope = scope


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    name: str
    scopes: frozenset[str]
    exp: int
    jti: str | None = None
    iss: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise ScopeError(scope)


@dataclass(frozen=True)
class TokenVerifier:
    algorithms: tuple[str, ...]
    secret: str
    issuer: str | None = None
    audience: str | None = None
    leeway: int = 30

    @classmethod
    def from_settings(cls, settings: SharedSettings) -> TokenVerifier:
        return cls(
            algorithms=tuple(settings.jwt_algorithms),
            secret=settings.jwt_secret,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str, now: float | None = None) -> Claims:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("oversize", "the token is too large")
        try:
            header = jws.get_unverified_header(token)
        except JOSEError:
            raise TokenError("malformed", "the token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError("algorithm", "the token's algorithm is not accepted")
        try:
            payload = jws.verify(token, self.secret, algorithms=[alg])
        except JOSEError:
            raise TokenError("signature", "the token's signature is invalid") from None
        try:
            claims = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise TokenError("malformed", "the token's claims are not JSON") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed", "the token's claims are not an object")
        return check_claims(claims, self, time.time() if now is None else now)


def check_claims(claims: dict[str, Any], rules: TokenVerifier, now: float) -> Claims:
    """Apply the claim rules to an already signature-checked payload."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not SUBJECT.match(sub):
        raise TokenError("subject", "the token's subject is missing or invalid")
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise TokenError("expiry", "the token has no valid expiry")
    if now > exp + rules.leeway:
        raise TokenError("expired", "the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_number(nbf) or now < nbf - rules.leeway):
        raise TokenError("not_yet_valid", "the token is not valid yet")
    iss = claims.get("iss")
    if rules.issuer is not None and iss != rules.issuer:
        raise TokenError("issuer", "the token's issuer is not accepted")
    if rules.audience is not None and not _audience_matches(claims.get("aud"), rules.audience):
        raise TokenError("audience", "the token's audience is not accepted")
    jti = claims.get("jti")
    return Claims(
        sub=sub,
        name=display_name(claims.get("name"), default=sub),
        scopes=_scopes(claims.get("scope")),
        exp=int(exp),
        jti=jti if isinstance(jti, str) else None,
        iss=iss if isinstance(iss, str) else None,
    )


def display_name(value: object, default: str) -> str:
    """NFC-normalised display name of 1..64 printable characters; the subject when absent."""
    if value is None:
        return default
    if not isinstance(value, str):
        raise TokenError("name", "the token's name claim is invalid")
    name = unicodedata.normalize("NFC", value)
    if not 1 <= len(name) <= MAX_NAME_CHARS or any(
        unicodedata.category(ch).startswith("C") for ch in name
    ):
        raise TokenError("name", "the token's name claim is invalid")
    return name


def issue(
    settings: SharedSettings,
    sub: str,
    *,
    name: str | None = None,
    scopes: tuple[str, ...] = (SCOPE_WRITE,),
    ttl: int = 3600,
    now: float | None = None,
) -> str:
    """Sign an HS256 token with the configured secret (development tokens and tests)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "scope": " ".join(scopes), "iat": issued}
    claims["exp"] = issued + ttl
    if name is not None:
        claims["name"] = name
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    token: str = jws.sign(orjson.dumps(claims), settings.jwt_secret, algorithm="HS256")
    return token


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _audience_matches(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in aud


def _scopes(value: object) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()
