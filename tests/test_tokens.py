"""Token rules of services.score_api.tokens, checked without any server."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from jose import jwk, jws

from devstack.devtoken import issue
from services.score_api.settings import DEV_JWT_SECRET, TokenSettings
from services.score_api.tokens import (
    MAX_TOKEN_BYTES,
    SCOPE_ADMIN,
    SCOPE_WRITE,
    KeyRing,
    ScopeError,
    TokenError,
    TokenVerifier,
    public_key_from_pem,
    public_keys_from_jwks,
)

NOW = 1_800_000_000
SECRET = "unit-test-secret-0123456789abcdef"
VERIFIER = TokenVerifier(algorithms=("HS256",), keys=KeyRing(SECRET), leeway=30)


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
    strict = TokenVerifier(
        ("HS256",), KeyRing(SECRET), issuer="https://id.example", audience="board"
    )
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
    settings = TokenSettings(jwt_issuer="dev", jwt_audience="board")
    token = issue(settings, "bob", name="Bob", ttl=60, now=NOW)
    verifier = TokenVerifier.from_settings(settings)
    claims = verifier.verify(token, now=NOW)
    assert (claims.sub, claims.name, claims.iss) == ("bob", "Bob", "dev")
    assert settings.jwt_secret == DEV_JWT_SECRET


# --- public keys: RS256 / ES256, key binding, JWKS, kid ---------------------------------

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def asym(
    claims: dict[str, Any],
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    alg: str,
    kid: str | None = None,
) -> str:
    headers = {"kid": kid} if kid else None
    token: str = jws.sign(orjson.dumps(claims), private_pem(key), algorithm=alg, headers=headers)
    return token


PUBLIC = (
    public_key_from_pem(public_pem(RSA_KEY), "rsa-1"),
    public_key_from_pem(public_pem(EC_KEY), "ec-1"),
)
MIXED = TokenVerifier(("HS256", "RS256", "ES256"), KeyRing(SECRET, PUBLIC))


def test_rs256_and_es256_tokens_verify_with_their_public_keys() -> None:
    assert MIXED.verify(asym(good(), RSA_KEY, "RS256"), now=NOW).sub == "alice"
    assert MIXED.verify(asym(good(), EC_KEY, "ES256", kid="ec-1"), now=NOW).sub == "alice"


def hmac_forge(claims: dict[str, Any], secret: str) -> str:
    """HS256 by hand: python-jose itself refuses a PEM as HMAC secret, an attacker does not."""
    signing_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64(orjson.dumps(claims))}"
    )
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_hmac_signed_with_a_public_key_is_refused() -> None:
    # Algorithm confusion: the attacker signs HS256 with our (public) RSA key as the secret.
    for pem in (public_pem(RSA_KEY), public_pem(EC_KEY)):
        forged = hmac_forge(good(), pem)
        with pytest.raises(TokenError):
            MIXED.verify(forged, now=NOW)
        public_only = TokenVerifier(("HS256", "RS256"), KeyRing(None, PUBLIC))
        assert reason_of(forged, public_only) == "algorithm"


def test_key_is_bound_to_its_family() -> None:
    # An RSA-signed token claiming ES256 finds no EC key that verifies it, and vice versa.
    rs_as_es = asym(good(), RSA_KEY, "RS256").split(".")
    header = b64(orjson.dumps({"alg": "ES256", "typ": "JWT"}))
    assert reason_of(f"{header}.{rs_as_es[1]}.{rs_as_es[2]}", MIXED) == "signature"
    assert not PUBLIC[0].fits("ES256")
    assert not PUBLIC[1].fits("RS256")
    assert not PUBLIC[1].fits("ES384")


def test_token_signed_by_another_tenant_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert reason_of(asym(good(), other, "RS256"), MIXED) == "signature"


def test_unknown_or_traversal_kid_is_refused() -> None:
    assert reason_of(asym(good(), RSA_KEY, "RS256", kid="rsa-2"), MIXED) == "unknown_kid"
    assert reason_of(asym(good(), RSA_KEY, "RS256", kid="../../etc/passwd"), MIXED) == "unknown_kid"


def test_jku_and_x5u_headers_are_not_followed() -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    headers = {"jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/cert"}
    token = jws.sign(
        orjson.dumps(good()), private_pem(attacker), algorithm="RS256", headers=headers
    )
    assert reason_of(token, MIXED) == "signature"


def test_crit_header_is_refused() -> None:
    token = jws.sign(orjson.dumps(good()), SECRET, algorithm="HS256", headers={"crit": ["exp"]})
    assert reason_of(token) == "malformed"


def test_jwe_shaped_token_is_refused() -> None:
    assert reason_of("eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d") == "malformed"


def test_jwks_document_yields_only_public_signing_keys() -> None:
    rsa_jwk = jwk.construct(public_pem(RSA_KEY), "RS256").to_dict() | {"kid": "r"}
    ec_jwk = jwk.construct(public_pem(EC_KEY), "ES256").to_dict() | {"kid": "e"}
    private = jwk.construct(private_pem(RSA_KEY), "RS256").to_dict() | {"kid": "p"}
    document = orjson.dumps(
        {
            "keys": [
                rsa_jwk,
                ec_jwk,
                private,
                {"kty": "oct", "k": "c2VjcmV0", "kid": "s"},
                rsa_jwk | {"kid": "enc", "use": "enc"},
            ]
        }
    )
    keys = public_keys_from_jwks(document)
    assert [(k.kid, k.kty, k.crv) for k in keys] == [("r", "RSA", None), ("e", "EC", "P-256")]
    verifier = TokenVerifier(("RS256", "ES256"), KeyRing(None, keys))
    assert verifier.verify(asym(good(), RSA_KEY, "RS256", kid="r"), now=NOW).sub == "alice"
    assert verifier.verify(asym(good(), EC_KEY, "ES256", kid="e"), now=NOW).sub == "alice"
    with pytest.raises(ValueError, match="JWKS"):
        public_keys_from_jwks(b"<html>")
