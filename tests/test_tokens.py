"""Token rules of services.score_api.tokens, checked without any server."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import string
import unicodedata
from pathlib import Path
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
from hypothesis import example, given
from hypothesis import strategies as st
from jose import jwk, jws
from pydantic import ValidationError

from devstack.devtoken import issue
from services.persister.batch import MAX_TEXT
from services.score_api import tokens
from services.score_api.settings import DEV_JWT_SECRET, TokenSettings
from services.score_api.tokens import (
    BLANK_CHARACTERS,
    MAX_ISS_CHARS,
    MAX_JTI_CHARS,
    MAX_MARK_RUN,
    MAX_NAME_CHARS,
    MAX_TOKEN_BYTES,
    REASONS,
    SCOPE_ADMIN,
    SCOPE_WRITE,
    Claims,
    KeyRing,
    ScopeError,
    TokenError,
    TokenVerifier,
    check_claims,
    display_name,
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


def attempt(claims: dict[str, Any], rules: TokenVerifier = VERIFIER) -> Claims | str:
    """The claims ``check_claims`` accepts, or the reason it refuses them."""
    try:
        return check_claims(claims, rules, NOW)
    except TokenError as exc:
        return exc.reason


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


@pytest.mark.parametrize("sub", ["farm\n", "farm\r\n", "\nfarm"])
def test_a_subject_with_a_trailing_newline_is_refused(sub: str) -> None:
    # A pattern ending in `$` accepts "farm\n": the subject must be a full match.
    assert reason_of(sign(good(sub=sub))) == "subject"


def test_issuer_and_audience_checked_when_configured() -> None:
    strict = TokenVerifier(
        ("HS256",), KeyRing(SECRET), issuer="https://id.example", audience="board"
    )
    ok = good(iss="https://id.example", aud=["other", "board"])
    assert strict.verify(sign(ok), now=NOW).iss == "https://id.example"
    assert reason_of(sign(good(iss="https://evil.example", aud="board")), strict) == "issuer"
    assert reason_of(sign(good(iss="https://id.example", aud="other")), strict) == "audience"
    assert reason_of(sign(good(aud="board")), strict) == "issuer"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "x" * 65,
        "bad\u0000name",
        "tab\tname",
        "rtl\u202e",
        "line\u2028break",
        "para\u2029graph",
        "   ",
        "\u3000\u00a0",
        "\u3164",
        "\u3164 \u3164",
        "\u115f\u1160\uffa0",
        "\u2800\u2800",
        "\u200b",
        "\u2060\ufeff",
        "\u0301\u0302",
        "x" + "\u0336" * (MAX_MARK_RUN + 1),
        "Zalgo" + "\u0300\u0301\u0302\u0303\u0304\u0305" * 3,
        "private\ue000use",
        "unassigned\U000e0fff",
        " " * 10 + "x" * 65,
    ],
)
def test_invalid_name_claim_is_refused(name: str) -> None:
    assert reason_of(sign(good(name=name))) == "name"


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Cafe\u0301", "Caf\u00e9"),
        ("  Alice  ", "Alice"),
        ("\u3000Alice\u00a0", "Alice"),
        ("\u3164Alice", "\u3164Alice"),
        ("Nguye\u0302\u0303n", "Nguy\u1ec5n"),
        # NFC puts the Hebrew points in canonical order.
        (
            "\u05e9\u05c1\u05b8\u05dc\u05d5\u05b9\u05dd",
            "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",
        ),
        (
            "\u0f56\u0f66\u0f92\u0fb2\u0f74\u0f56\u0f66",
            "\u0f56\u0f66\u0f92\u0fb2\u0f74\u0f56\u0f66",
        ),
        ("\u5c71\u7530\u3000\u592a\u90ce", "\u5c71\u7530\u3000\u592a\u90ce"),
        ("\u2764\ufe0f", "\u2764\ufe0f"),
        ("x" + "\u0336" * MAX_MARK_RUN, "x" + "\u0336" * MAX_MARK_RUN),
        ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
        (" " * 10 + "x" * MAX_NAME_CHARS, "x" * MAX_NAME_CHARS),
    ],
)
def test_a_visible_name_is_nfc_normalised_and_trimmed(name: str, shown: str) -> None:
    assert VERIFIER.verify(sign(good(name=name)), now=NOW).name == shown


def visible(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNPS" and ch not in BLANK_CHARACTERS


def longest_mark_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if unicodedata.category(ch)[0] == "M" else 0
        longest = max(longest, run)
    return longest


NAME_PIECES = st.sampled_from(
    [
        " ",
        "\u00a0",
        "\u3000",
        "\u3164",
        "\u2800",
        "\u200b",
        "\u2028",
        "\u0301",
        "\u0336",
        "a",
        "\x00",
    ]
)


@given(st.text(st.characters() | NAME_PIECES, max_size=80))
@example("\u3164 \u3164")
@example("x" + "\u0336" * (MAX_MARK_RUN + 1))
def test_an_accepted_name_obeys_the_rule_and_is_storable(value: str) -> None:
    try:
        name = display_name(value, default="alice")
    except TokenError as exc:
        refused = exc.reason
    else:
        refused = ""
    if refused:
        assert refused == "name"
        return
    assert name == unicodedata.normalize("NFC", value).strip()
    assert 1 <= len(name) <= MAX_NAME_CHARS
    assert not any(unicodedata.category(ch)[0] == "C" for ch in name)
    assert not any(unicodedata.category(ch) in ("Zl", "Zp") for ch in name)
    assert any(map(visible, name))
    assert longest_mark_run(name) <= MAX_MARK_RUN
    assert "\x00" not in name
    assert len(name) <= MAX_TEXT


def test_scope_is_required_for_the_operation() -> None:
    claims = VERIFIER.verify(sign(good(scope="profile:read")), now=NOW)
    with pytest.raises(ScopeError):
        claims.require(SCOPE_WRITE)
    both = VERIFIER.verify(sign(good(scope=f"{SCOPE_WRITE} {SCOPE_ADMIN}")), now=NOW)
    both.require(SCOPE_ADMIN)
    assert both.scopes == {SCOPE_WRITE, SCOPE_ADMIN}
    assert VERIFIER.verify(sign({"sub": "alice", "exp": NOW}), now=NOW).scopes == frozenset()


@pytest.mark.parametrize(
    "scope",
    [
        "x\u00a0score:write",
        "x\u2003score:write",
        "x\u3000score:write",
        "x\tscore:write",
        "x\nscore:write",
        "x\u0085score:write",
        "score:write ",
        " score:write",
        "profile  score:write",
        "",
        'score:"write"',
        "score\\write",
    ],
)
def test_a_scope_split_by_anything_but_one_ascii_space_is_refused(scope: str) -> None:
    assert reason_of(sign(good(scope=scope))) == "scope"


@pytest.mark.parametrize("scope", [[SCOPE_WRITE], [SCOPE_WRITE, SCOPE_ADMIN], 42, {"a": 1}])
def test_a_scope_that_is_not_one_string_is_refused(scope: object) -> None:
    assert reason_of(sign(good(scope=scope))) == "scope"


SCOPE_PIECES = st.sampled_from([" ", "\u00a0", "\u2003", "\t", "score:write", "score:admin", "x"])


@given(st.lists(st.characters() | SCOPE_PIECES, max_size=20).map("".join))
@example("x\u00a0score:write")
def test_a_scope_grants_exactly_its_space_separated_printable_tokens(scope: str) -> None:
    claims = attempt(good(scope=scope))
    if isinstance(claims, str):
        assert claims == "scope"
        return
    parts = scope.split(" ")
    assert claims.scopes == set(parts)
    printable = set(string.printable) - set(string.whitespace) - {'"', "\\"}
    assert all(part and set(part) <= printable for part in parts)


# --- lifetime and issue time ------------------------------------------------------------

DAY = 24 * 3600


def test_the_default_maximum_lifetime_is_a_day_and_its_range_is_bounded() -> None:
    assert TokenVerifier.from_settings(TokenSettings()).max_lifetime == DAY
    assert VERIFIER.max_lifetime == DAY
    shorter = TokenVerifier.from_settings(TokenSettings(jwt_max_lifetime_seconds=600))
    assert shorter.max_lifetime == 600
    assert shorter.with_public_keys(()).max_lifetime == 600
    for bad in (0, 59, 7 * DAY + 1):
        with pytest.raises(ValidationError):
            TokenSettings(jwt_max_lifetime_seconds=bad)


def test_an_exp_that_never_comes_is_refused() -> None:
    for exp in (10**30, 1e30, 2**70, NOW + DAY + 31):
        # The standard library's JSON writes any integer; orjson stops at 64 bits.
        token = jws.sign(json.dumps(good(exp=exp)).encode(), SECRET, algorithm="HS256")
        assert reason_of(token) == "lifetime"


def test_without_iat_the_lifetime_is_exp_minus_now_within_the_leeway() -> None:
    assert VERIFIER.verify(sign(good(exp=NOW + DAY + 30)), now=NOW).exp == NOW + DAY + 30
    assert reason_of(sign(good(exp=NOW + DAY + 31))) == "lifetime"


def test_with_iat_the_lifetime_is_exp_minus_iat() -> None:
    assert VERIFIER.verify(sign(good(iat=NOW - 60, exp=NOW - 60 + DAY)), now=NOW).sub == "alice"
    assert reason_of(sign(good(iat=NOW - 60, exp=NOW - 59 + DAY))) == "lifetime"
    # Issued long ago for a long time: still within exp, yet over the maximum lifetime.
    assert reason_of(sign(good(iat=NOW - 30 * DAY, exp=NOW + 60))) == "lifetime"
    # Expires before it was issued: no lifetime at all.
    assert reason_of(sign(good(iat=NOW, exp=NOW - 1))) == "lifetime"


def test_an_iat_in_the_future_beyond_the_leeway_is_refused() -> None:
    assert VERIFIER.verify(sign(good(iat=NOW + 30, exp=NOW + 60)), now=NOW).sub == "alice"
    assert reason_of(sign(good(iat=NOW + 31, exp=NOW + 60))) == "issued_at"
    for iat in ("now", True, [NOW], 10**30):
        assert attempt(good(iat=iat)) == "issued_at"


@given(
    exp=st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.just(NOW + DAY),
    iat=st.none() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True),
)
def test_an_accepted_token_is_unexpired_issued_in_the_past_and_short_lived(
    exp: float, iat: float | None
) -> None:
    claims = good(exp=exp) | ({} if iat is None else {"iat": iat})
    accepted = attempt(claims)
    if isinstance(accepted, str):
        assert accepted in {"expiry", "expired", "issued_at", "lifetime"}
        return
    assert exp + VERIFIER.leeway >= NOW
    assert exp - NOW <= DAY + VERIFIER.leeway
    if iat is not None:
        assert iat <= NOW + VERIFIER.leeway
        assert 0 <= exp - iat <= DAY
    assert accepted.exp == int(exp)


# --- one token, one spelling ------------------------------------------------------------

ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def other_last_characters(segment: str) -> list[str]:
    """The segment with its last character changed only in bits no byte uses."""
    unused = (6 * len(segment)) % 8
    index = ALPHABET.index(segment[-1])
    spellings = {ALPHABET[(index & ~((1 << unused) - 1)) | low] for low in range(1 << unused)}
    return [segment[:-1] + ch for ch in sorted(spellings - {segment[-1]})]


def test_one_token_has_one_spelling() -> None:
    token = next(
        t for i in range(100) if set("-_") & set((t := sign(good(jti=f"j{i}"))).split(".")[2])
    )
    assert VERIFIER.verify(token, now=NOW).sub == "alice"
    header, payload, sig = token.split(".")
    spellings = [
        f"{header}.{payload}.{sig.translate(str.maketrans('-_', '+/'))}",
        f"{header}.{payload}.{sig}=",
        f"{header}=.{payload}.{sig}",
        f"{header}.{payload}=.{sig}",
        f"{header}.{payload}.{sig[:5]}!{sig[5:]}",
        f"{header}.{payload}.{sig[:5]}\n{sig[5:]}",
        f"{header}.{payload}.{sig} ",
        *(f"{header}.{payload}.{s}" for s in other_last_characters(sig)),
    ]
    assert len(spellings) == 10  # HS256: 43 characters, 2 unused bits, 3 other spellings
    for spelling in spellings:
        assert spelling != token
        assert reason_of(spelling) == "malformed", spelling


@given(st.binary(max_size=300))
def test_exactly_the_canonical_base64url_spelling_of_any_bytes_is_accepted(data: bytes) -> None:
    canonical = b64(data)
    assert tokens._canonical_base64url(canonical)
    for other in (
        base64.b64encode(data).decode().rstrip("="),
        base64.urlsafe_b64encode(data).decode(),
        *(other_last_characters(canonical) if canonical else []),
    ):
        assert other == canonical or not tokens._canonical_base64url(other)


# --- claims that reach the stream event ---------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "value", "reason"),
    [
        ("jti", "a\x00b", "jti"),
        ("jti", "\x00", "jti"),
        ("jti", "new\nline", "jti"),
        ("jti", "", "jti"),
        ("jti", "j" * (MAX_JTI_CHARS + 1), "jti"),
        ("jti", 42, "jti"),
        ("jti", ["j1"], "jti"),
        ("iss", "https://id.example\x00", "issuer"),
        ("iss", "\x1b[31m", "issuer"),
        ("iss", "", "issuer"),
        ("iss", "i" * (MAX_ISS_CHARS + 1), "issuer"),
        ("iss", 42, "issuer"),
    ],
)
def test_a_jti_or_iss_postgres_cannot_store_as_is_is_refused(
    claim: str, value: object, reason: str
) -> None:
    assert reason_of(sign(good(**{claim: value}))) == reason


def test_the_longest_jti_and_iss_are_kept_whole() -> None:
    jti, iss = "j" * MAX_JTI_CHARS, "https://" + "i" * (MAX_ISS_CHARS - 8)
    claims = VERIFIER.verify(sign(good(jti=jti, iss=iss)), now=NOW)
    assert (claims.jti, claims.iss) == (jti, iss)


AUDIT_TEXT = st.text(st.characters() | st.sampled_from(["\x00", "\n", "a"]), max_size=300)


@given(jti=st.none() | AUDIT_TEXT, iss=st.none() | AUDIT_TEXT, name=st.none() | AUDIT_TEXT)
@example(jti="a\x00", iss=None, name=None)
@example(jti=None, iss="\x00", name=None)
def test_every_string_an_accepted_token_puts_in_an_event_is_storable(
    jti: str | None, iss: str | None, name: str | None
) -> None:
    extra = {k: v for k, v in {"jti": jti, "iss": iss, "name": name}.items() if v is not None}
    claims = attempt(good(**extra))
    if isinstance(claims, str):
        assert claims in {"jti", "issuer", "name"}
        return
    assert (claims.jti, claims.iss) == (jti, iss)
    for text in (claims.sub, claims.name, claims.jti or "", claims.iss or ""):
        assert "\x00" not in text
        assert len(text) <= MAX_TEXT
        text.encode()  # no lone surrogate: Redis and PostgreSQL take it as UTF-8


def test_every_reason_raised_is_one_of_the_fixed_set() -> None:
    # Each reason is a metrics label (`token_<reason>`): a new one must be added on purpose.
    tree = ast.parse(Path(tokens.__file__).read_text())
    raised = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "TokenError"
        and isinstance(node.args[0], ast.Constant)
    }
    assert raised | {"unknown_kid"} == REASONS


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
