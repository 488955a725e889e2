"""Token rules of shared.tokens, checked without any server."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from jose import jws

from shared.settings import DEV_JWT_SECRET, SharedSettings
from shared.tokens import (
    MAX_TOKEN_BYTES,
    SCOPE_ADMIN,
    SCOPE_WRITE,
    ScopeError,
    TokenError,
    TokenVerifier,
    issue,
)

NOW = 1_800_000_000
SECRET = "unit-test-secret-0123456789abcdef"
VERIFIER = TokenVerifier(algorithms=("HS256",), secret=SECRET, leeway=30)


def sign(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    token: str = jws.sign(orjson.dumps(claims), secret, algorithm=alg)
    return token


def good(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": NOW + 60, "scope": SCOPE_WRITE} | extra


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def reason_of(token: str, verifier: TokenVerifier = VERIFIER) -> str:
    with pytest.raises(TokenError) as info:
        verifier.verify(token, now=NOW)
    return info.value.reason


def test_valid_token_yields_subject_name_and_scopes() -> None:
    claims = VERIFIER.verify(sign(good(name="Alice", jti="j1")), now=NOW)
    assert (claims.sub, claims.name, claims.jti) == ("alice", "Alice", "j1")
    assert claims.scopes == frozenset({SCOPE_WRITE})


def test_name_defaults_to_subject() -> None:
    assert VERIFIER.verify(sign(good()), now=NOW).name == "alice"


def test_alg_none_is_refused() -> None:
    header = b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
    token = f"{header}.{b64(orjson.dumps(good()))}."
    assert reason_of(token) == "algorithm"


def test_algorithm_outside_allow_list_is_refused() -> None:
    assert reason_of(sign(good(), alg="HS512")) == "algorithm"


def test_wrong_secret_is_refused() -> None:
    assert reason_of(sign(good(), secret="another-secret-entirely-0123456")) == "signature"


def test_tampered_payload_is_refused() -> None:
    header, _, sig = sign(good()).split(".")
    forged = f"{header}.{b64(orjson.dumps(good(sub='mallory')))}.{sig}"
    assert reason_of(forged) == "signature"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "!!!.???.***"])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert reason_of(token) in {"malformed", "signature"}


def test_oversize_token_is_refused_before_parsing() -> None:
    assert reason_of("a" * (MAX_TOKEN_BYTES + 1)) == "oversize"


def test_expired_token_is_refused_after_leeway() -> None:
    assert reason_of(sign(good(exp=NOW - 31))) == "expired"
    assert VERIFIER.verify(sign(good(exp=NOW - 29)), now=NOW).sub == "alice"


def test_missing_or_non_numeric_exp_is_refused() -> None:
    claims = good()
    del claims["exp"]
    assert reason_of(sign(claims)) == "expiry"
    assert reason_of(sign(good(exp="tomorrow"))) == "expiry"
    assert reason_of(sign(good(exp=True))) == "expiry"


def test_not_before_is_honoured_with_leeway() -> None:
    assert reason_of(sign(good(nbf=NOW + 31))) == "not_yet_valid"
    assert VERIFIER.verify(sign(good(nbf=NOW + 29)), now=NOW).sub == "alice"


@pytest.mark.parametrize("sub", [None, "", 42, "a" * 65, "has space", "semi;colon", ["alice"]])
def test_invalid_subject_is_refused(sub: object) -> None:
    claims = good(sub=sub)
    if sub is None:
        del claims["sub"]
    assert reason_of(sign(claims)) == "subject"


def test_issuer_and_audience_checked_when_configured() -> None:
    strict = TokenVerifier(("HS256",), SECRET, issuer="https://id.example", audience="board")
    ok = good(iss="https://id.example", aud=["other", "board"])
    assert strict.verify(sign(ok), now=NOW).iss == "https://id.example"
    assert reason_of(sign(good(iss="https://evil.example", aud="board")), strict) == "issuer"
    assert reason_of(sign(good(iss="https://id.example", aud="other")), strict) == "audience"
    assert reason_of(sign(good(aud="board")), strict) == "issuer"


@pytest.mark.parametrize("name", ["", "x" * 65, "bad\u0000name", "tab\tname", "rtl\u202e"])
def test_invalid_name_claim_is_refused(name: str) -> None:
    assert reason_of(sign(good(name=name))) == "name"


def test_name_is_nfc_normalised() -> None:
    assert VERIFIER.verify(sign(good(name="Cafe\u0301")), now=NOW).name == "Caf\u00e9"


def test_scope_is_required_for_the_operation() -> None:
    claims = VERIFIER.verify(sign(good(scope="profile:read")), now=NOW)
    with pytest.raises(ScopeError):
        claims.require(SCOPE_WRITE)
    listed = VERIFIER.verify(sign(good(scope=[SCOPE_WRITE, SCOPE_ADMIN])), now=NOW)
    listed.require(SCOPE_ADMIN)


def test_issued_development_token_verifies_with_the_same_settings() -> None:
    settings = SharedSettings(jwt_issuer="dev", jwt_audience="board")
    token = issue(settings, "bob", name="Bob", ttl=60, now=NOW)
    verifier = TokenVerifier.from_settings(settings)
    claims = verifier.verify(token, now=NOW)
    assert (claims.sub, claims.name, claims.iss) == ("bob", "Bob", "dev")
    assert settings.jwt_secret == DEV_JWT_SECRET
