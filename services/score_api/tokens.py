"""The one JWT module: every token decision goes through here, so the library can be swapped.

Verification is a pure function of (token, keys, rules, now). The header's ``alg`` must be
allow-listed, and each key is bound to its algorithm family: HMAC algorithms use only the
shared secret, RS* only RSA public keys, ES* only EC keys of the matching curve. So a public
key can never serve as an HMAC secret (the algorithm confusion of CVE-2024-33663), and
``none`` is never accepted. ``kid`` is only a lookup key; ``jku``, ``x5u`` and ``x5c`` are
never followed. Claims are checked here rather than by the library, so the rules are explicit.

One token has one spelling: each segment must be canonical base64url without padding (the
library would also take ``+``, ``/``, ``=`` and stray characters, so one signature could be
written several ways). Every claim that reaches a stream event (``sub``, ``name``, ``jti``,
``iss``) is refused unless PostgreSQL can store it as it is, so an accepted score is always
persisted. ``TokenError.reason`` is a metrics label: the reasons are the fixed set ``REASONS``.
"""

from __future__ import annotations

import base64
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jose import jws
from jose.exceptions import JOSEError

from services.score_api.settings import (
    DEFAULT_MAX_LIFETIME_SECONDS,
    HMAC_ALGORITHMS,
    TokenSettings,
)
from shared.formats import USER_ID

MAX_TOKEN_BYTES = 8 * 1024
SUBJECT = USER_ID  # a token's sub is the user id
MAX_NAME_CHARS = 64
# Combining marks in a row: enough for Vietnamese, Hebrew points or Tibetan stacks, not Zalgo.
MAX_MARK_RUN = 4
# Letters and symbols that render as blank space: a name of only these (and spaces) is invisible.
BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
MAX_JTI_CHARS = 128
MAX_ISS_CHARS = 256
SCOPE_WRITE = "score:write"
SCOPE_ADMIN = "score:admin"
# A game server's client-credentials token: it may award actions to the users it names.
SCOPE_REPORT = "score:report"
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_CRYPTO_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# Every TokenError reason, each counted as the metrics label ``token_<reason>``.
REASONS = frozenset(
    {
        "oversize",
        "malformed",
        "algorithm",
        "unknown_kid",
        "signature",
        "subject",
        "expiry",
        "expired",
        "issued_at",
        "lifetime",
        "not_yet_valid",
        "issuer",
        "audience",
        "jti",
        "name",
        "scope",
    }
)


class TokenError(Exception):
    """The token is not acceptable (HTTP 401 ``invalid_token``); ``reason`` is for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"TokenError({self.reason!r}, {self.detail!r})"


class UnknownKeyId(TokenError):
    """The token names a ``kid`` we do not hold; a JWKS refresh may find it."""

    def __init__(self) -> None:
        super().__init__("unknown_kid", "the token's key id is unknown")


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


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key: ``kty`` RSA or EC, ``crv`` for EC, material as PEM text or JWK."""

    kid: str | None
    kty: str
    crv: str | None
    material: str | Mapping[str, Any] = field(repr=False)

    def fits(self, alg: str) -> bool:
        if alg.startswith("RS"):
            return self.kty == "RSA"
        return alg in _EC_CURVES and self.kty == "EC" and self.crv == _EC_CURVES[alg]


def public_key_from_pem(pem: str, kid: str | None = None) -> PublicKey:
    key = load_pem_public_key(pem.encode())
    if isinstance(key, rsa.RSAPublicKey):
        return PublicKey(kid, "RSA", None, pem)
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CRYPTO_CURVES:
        return PublicKey(kid, "EC", _CRYPTO_CURVES[key.curve.name], pem)
    raise ValueError("only RSA and EC (P-256/384/521) public keys are supported")


def public_keys_from_jwks(document: bytes) -> tuple[PublicKey, ...]:
    """RSA and EC public keys of a JWKS document; symmetric and private keys are ignored."""
    try:
        keys = orjson.loads(document)["keys"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ValueError("not a JWKS document") from None
    out = []
    for jwk in keys if isinstance(keys, list) else []:
        if not isinstance(jwk, dict) or "d" in jwk or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        if jwk.get("kty") == "RSA" and {"n", "e"} <= jwk.keys():
            out.append(PublicKey(kid, "RSA", None, jwk))
        elif jwk.get("kty") == "EC" and jwk.get("crv") in _EC_CURVES.values():
            out.append(PublicKey(kid, "EC", jwk["crv"], jwk))
    return tuple(out)


@dataclass(frozen=True)
class KeyRing:
    """The keys tokens may be signed with: a shared secret and/or public keys."""

    secret: str | None = None
    public: tuple[PublicKey, ...] = ()

    def candidates(self, alg: str, kid: object) -> list[str | Mapping[str, Any]]:
        if alg in HMAC_ALGORITHMS:
            if not self.secret:
                raise TokenError("algorithm", "the token's algorithm is not accepted")
            return [self.secret]
        fitting = [k for k in self.public if k.fits(alg)]
        if kid is not None:
            if not isinstance(kid, str):
                raise TokenError("malformed", "the token's key id is invalid")
            fitting = [k for k in fitting if k.kid == kid]
            if not fitting:
                raise UnknownKeyId()
        if not fitting:
            raise TokenError("algorithm", "no key accepts the token's algorithm")
        return [k.material for k in fitting]


@dataclass(frozen=True)
class TokenVerifier:
    algorithms: tuple[str, ...]
    keys: KeyRing
    issuer: str | None = None
    audience: str | None = None
    leeway: int = 30
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS

    @classmethod
    def from_settings(
        cls, settings: TokenSettings, public: tuple[PublicKey, ...] = ()
    ) -> TokenVerifier:
        secret = settings.jwt_secret if set(settings.jwt_algorithms) & HMAC_ALGORITHMS else None
        return cls(
            algorithms=tuple(settings.jwt_algorithms),
            keys=KeyRing(secret, public),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway=settings.jwt_leeway_seconds,
            max_lifetime=settings.jwt_max_lifetime_seconds,
        )

    def with_public_keys(self, public: tuple[PublicKey, ...]) -> TokenVerifier:
        return replace(self, keys=KeyRing(self.keys.secret, public))

    def verify(self, token: str, now: float) -> Claims:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("oversize", "the token is too large")
        if token.count(".") != 2:
            raise TokenError("malformed", "the token is not a signed JWT")
        if not all(map(_canonical_base64url, token.split("."))):
            raise TokenError("malformed", "the token is not canonical base64url without padding")
        try:
            header = jws.get_unverified_header(token)
        except JOSEError:
            raise TokenError("malformed", "the token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise TokenError("algorithm", "the token's algorithm is not accepted")
        if "crit" in header:
            raise TokenError("malformed", "the token requires unsupported extensions")
        payload = self._verified_payload(token, alg, header.get("kid"))
        try:
            claims = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise TokenError("malformed", "the token's claims are not JSON") from None
        if not isinstance(claims, dict):
            raise TokenError("malformed", "the token's claims are not an object")
        return check_claims(claims, self, now)

    def _verified_payload(self, token: str, alg: str, kid: object) -> bytes:
        for key in self.keys.candidates(alg, kid):
            try:
                payload: bytes = jws.verify(token, key, algorithms=[alg])
            except JOSEError:
                continue
            return payload
        raise TokenError("signature", "the token's signature is invalid")


def check_claims(claims: dict[str, Any], rules: TokenVerifier, now: float) -> Claims:
    """Apply the claim rules to an already signature-checked payload."""
    sub = claims.get("sub")
    if not isinstance(sub, str) or not SUBJECT.matches(sub):
        raise TokenError("subject", "the token's subject is missing or invalid")
    exp = claims.get("exp")
    if not _is_number(exp):
        raise TokenError("expiry", "the token has no valid expiry")
    if now > exp + rules.leeway:
        raise TokenError("expired", "the token has expired")
    iat = claims.get("iat")
    if iat is not None and (not _is_number(iat) or iat > now + rules.leeway):
        raise TokenError("issued_at", "the token's issue time is invalid or in the future")
    if not _lifetime_acceptable(exp, iat, rules, now):
        raise TokenError("lifetime", "the token's lifetime exceeds the accepted maximum")
    nbf = claims.get("nbf")
    if nbf is not None and (not _is_number(nbf) or now < nbf - rules.leeway):
        raise TokenError("not_yet_valid", "the token is not valid yet")
    iss = claims.get("iss")
    if rules.issuer is not None and iss != rules.issuer:
        raise TokenError("issuer", "the token's issuer is not accepted")
    if iss is not None and not _audit_text(iss, MAX_ISS_CHARS):
        raise TokenError("issuer", "the token's issuer is invalid")
    if rules.audience is not None and not _audience_matches(claims.get("aud"), rules.audience):
        raise TokenError("audience", "the token's audience is not accepted")
    jti = claims.get("jti")
    if jti is not None and not _audit_text(jti, MAX_JTI_CHARS):
        raise TokenError("jti", "the token's id (jti) is invalid")
    return Claims(
        sub=sub,
        name=display_name(claims.get("name"), default=sub),
        scopes=_scopes(claims.get("scope")),
        exp=int(exp),
        jti=jti,
        iss=iss,
    )


def display_name(value: object, default: str, what: str = "the token's name") -> str:
    """The name the board shows; the subject when the claim is absent. ``what`` names the
    value in errors (a reporter's ``name`` field follows the same rule).

    NFC-normalised; no control, format, private-use, unassigned, line- or paragraph-separator
    character; surrounding spaces trimmed; then 1..64 characters, at least one of them visible
    (a letter, digit, punctuation or symbol that is not a blank filler such as U+3164), and at
    most ``MAX_MARK_RUN`` combining marks in a row.
    """
    if value is None:
        return default
    if not isinstance(value, str):
        raise TokenError("name", f"{what} is invalid")
    name = unicodedata.normalize("NFC", value)
    categories = [unicodedata.category(ch) for ch in name]
    if any(c[0] == "C" or c in ("Zl", "Zp") for c in categories):
        raise TokenError("name", f"{what} contains control or separator characters")
    trimmed = name.strip()
    if not 1 <= len(trimmed) <= MAX_NAME_CHARS:
        raise TokenError("name", f"{what} must be 1..{MAX_NAME_CHARS} characters")
    if not any(
        unicodedata.category(ch)[0] in "LNPS" and ch not in BLANK_CHARACTERS for ch in trimmed
    ):
        raise TokenError("name", f"{what} is invisible")
    run = 0
    for category in categories:
        run = run + 1 if category[0] == "M" else 0
        if run > MAX_MARK_RUN:
            raise TokenError("name", f"{what} stacks too many combining marks")
    return trimmed


def _scopes(value: object) -> frozenset[str]:
    """The granted scopes (RFC 6749 section 3.3, RFC 9068): one string of scope tokens, each
    separated by one ASCII space. Absent grants nothing; a list or any other spelling is
    refused, so no other whitespace can split a scope."""
    if value is None:
        return frozenset()
    if not isinstance(value, str):
        raise TokenError("scope", "the token's scope must be a space-delimited string")
    parts = value.split(" ")
    if not all(_SCOPE_TOKEN.fullmatch(part) for part in parts):
        raise TokenError("scope", "the token's scope is not scope tokens separated by spaces")
    return frozenset(parts)


def _lifetime_acceptable(exp: float, iat: object, rules: TokenVerifier, now: float) -> bool:
    """``exp - iat`` within 0..max when ``iat`` is given; else ``exp - now`` at most max (plus
    the leeway, as it compares with our clock)."""
    if isinstance(iat, int | float):
        return 0 <= exp - iat <= rules.max_lifetime
    return exp - now <= rules.max_lifetime + rules.leeway


def _audit_text(value: object, max_chars: int) -> bool:
    """A claim copied into the audit trail: 1..max_chars characters PostgreSQL stores as they
    are (no NUL or other control character, no lone surrogate)."""
    return (
        isinstance(value, str)
        and 1 <= len(value) <= max_chars
        and not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)
    )


def _canonical_base64url(segment: str) -> bool:
    """RFC 7515's base64url without padding, in its one canonical spelling (unused low bits of
    the last character zero)."""
    if not _BASE64URL.fullmatch(segment) or len(segment) % 4 == 1:
        return False
    decoded = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return base64.urlsafe_b64encode(decoded).rstrip(b"=").decode() == segment


def _is_number(value: object) -> TypeGuard[float]:
    """A JSON number usable as a time: an int, or a finite float (never a bool)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _audience_matches(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    return isinstance(aud, list) and expected in aud
