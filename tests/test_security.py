"""Hostile tests over real HTTP: forged tokens, replays, abuse limits, forwarded addresses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import string
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from jose import jwk, jws

from devstack.devtoken import issue
from services.score_api.settings import ApiSettings
from shared.keys import BoardKeys
from tests.support import api_process, board_state, stream_events
from tests.test_score_api import Api, running_api

ISS, AUD = "https://id.example", "leaderboard"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_EC = ec.generate_private_key(ec.SECP256R1())
SECRET = "security-test-secret-0123456789abcdef"
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def public_pem(key: PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def claims(**extra: Any) -> dict[str, Any]:
    import time

    now = int(time.time())
    base = {"sub": "mallory", "exp": now + 600, "iss": ISS, "aud": AUD, "scope": "score:write"}
    return {k: v for k, v in (base | extra).items() if v is not None}


def sign(payload: dict[str, Any] | bytes, key: str, alg: str, **headers: Any) -> str:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    token: str = jws.sign(body, key, algorithm=alg, headers=headers or None)
    return token


def raw(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, sig: bytes = b"") -> str:
    h = header if isinstance(header, bytes) else orjson.dumps(header)
    p = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return f"{b64(h)}.{b64(p)}.{b64(sig)}"


def hmac_forge(payload: dict[str, Any], secret: str) -> str:
    signing_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT'}))}.{b64(orjson.dumps(payload))}"
    )
    mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def swap_alg(token: str, alg: str) -> str:
    _, payload, sig = token.split(".")
    return f"{b64(orjson.dumps({'alg': alg, 'typ': 'JWT'}))}.{payload}.{sig}"


def with_raw_claim(payload: dict[str, Any], name: str, json_value: str) -> bytes:
    """The payload's JSON with one more member written as is (orjson stops at 64-bit ints)."""
    return orjson.dumps(payload)[:-1] + f',"{name}":{json_value}}}'.encode()


ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def respelled(token: str, how: str) -> str:
    """The same token, signature bytes unchanged, written another way python-jose also reads."""
    header, payload, sig = token.split(".")
    if how == "standard alphabet":
        assert set(sig) & set("-_"), "no character to respell"
        sig = sig.translate(str.maketrans("-_", "+/"))
    elif how == "padded":
        sig += "=" * (-len(sig) % 4)
    elif how == "last character":
        unused = (6 * len(sig)) % 8
        assert unused, "no unused bits"
        sig = sig[:-1] + ALPHABET[ALPHABET.index(sig[-1]) ^ 1]
    return f"{header}.{payload}.{sig}"


def signed_with(chars: str, key: str, alg: str) -> str:
    """A good token whose signature contains one of ``chars`` (varying its jti until it does)."""
    for i in range(100):
        token = sign(claims(jti=f"spell-{i}"), key, alg)
        if set(token.split(".")[2]) & set(chars):
            return token
    raise AssertionError(f"no signature with any of {chars!r}")


RS = private_pem(RSA_KEY)
ES = private_pem(EC_KEY)
CORPUS: dict[str, Callable[[], str]] = {
    "alg none": lambda: raw({"alg": "none"}, claims()),
    "alg None (case)": lambda: raw({"alg": "None"}, claims()),
    "HS256 with the RSA public key": lambda: hmac_forge(claims(), public_pem(RSA_KEY)),
    "HS256 with the EC public key": lambda: hmac_forge(claims(), public_pem(EC_KEY)),
    "wrong HMAC secret": lambda: sign(claims(), "another-secret-0123456789abcdefgh", "HS256"),
    "another tenant's RSA key": lambda: sign(claims(), private_pem(OTHER_RSA), "RS256"),
    "another tenant's EC key, our kid": lambda: sign(
        claims(), private_pem(OTHER_EC), "ES256", kid="ec-1"
    ),
    "wrong issuer": lambda: sign(claims(iss="https://evil.example"), RS, "RS256"),
    "wrong audience": lambda: sign(claims(aud="other-app"), RS, "RS256"),
    "no audience": lambda: sign(claims(aud=None), RS, "RS256"),
    "expired": lambda: sign(claims(exp=1_600_000_000), RS, "RS256"),
    "not yet valid": lambda: sign(claims(nbf=4_000_000_000), RS, "RS256"),
    "no exp": lambda: sign(claims(exp=None), RS, "RS256"),
    "exp as a string": lambda: sign(claims(exp="4000000000"), RS, "RS256"),
    "no sub": lambda: sign(claims(sub=None), RS, "RS256"),
    "non-string sub": lambda: sign(claims(sub=12345), RS, "RS256"),
    "sub with spaces": lambda: sign(claims(sub="mallory admin"), RS, "RS256"),
    "oversize": lambda: sign(claims(pad="x" * 9000), RS, "RS256"),
    "truncated signature": lambda: sign(claims(), RS, "RS256")[:-20],
    "bad base64": lambda: "eyJhbGciOiJIUzI1NiJ9.@@@@.####",
    "non-JSON header": lambda: raw(b"not json", claims(), b"sig"),
    "payload is a JSON array": lambda: sign(b"[1, 2]", SECRET, "HS256"),
    "unknown kid": lambda: sign(claims(), ES, "ES256", kid="ec-2"),
    "kid with path traversal": lambda: sign(claims(), ES, "ES256", kid="../../../dev/null"),
    "jku pointing elsewhere": lambda: sign(
        claims(), private_pem(OTHER_RSA), "RS256", jku="https://evil.example/jwks.json"
    ),
    "x5u pointing elsewhere": lambda: sign(
        claims(), private_pem(OTHER_RSA), "RS256", x5u="https://evil.example/cert.pem"
    ),
    "embedded jwk of the attacker": lambda: sign(
        claims(),
        private_pem(OTHER_RSA),
        "RS256",
        jwk=jwk.construct(public_pem(OTHER_RSA), "RS256").to_dict(),
    ),
    "a JWE instead of a JWS": lambda: "eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d",
    "algorithm outside the allow-list": lambda: sign(claims(), SECRET, "HS512"),
    "RS256 token relabelled RS384": lambda: swap_alg(sign(claims(), RS, "RS256"), "RS384"),
    "sub with a trailing newline": lambda: sign(claims(sub="farm\n"), RS, "RS256"),
    "scope split by a no-break space": lambda: sign(
        claims(scope="x\u00a0score:write"), RS, "RS256"
    ),
    "scope as a list": lambda: sign(claims(scope=["score:write"]), RS, "RS256"),
    "exp of 10^30": lambda: sign(
        with_raw_claim(claims(exp=None), "exp", "1" + "0" * 30), RS, "RS256"
    ),
    "lifetime over the maximum": lambda: sign(claims(iat=int(time.time()) - 86_400), RS, "RS256"),
    "issued in the future": lambda: sign(claims(iat=int(time.time()) + 3600), RS, "RS256"),
    "signature in the standard base64 alphabet": lambda: respelled(
        signed_with("-_", RS, "RS256"), "standard alphabet"
    ),
    "padded signature": lambda: respelled(sign(claims(), RS, "RS256"), "padded"),
    "signature with other unused bits": lambda: respelled(
        sign(claims(), RS, "RS256"), "last character"
    ),
    "jti with NUL": lambda: sign(claims(jti="tok\x00en"), RS, "RS256"),
    "jti over 128 characters": lambda: sign(claims(jti="j" * 129), RS, "RS256"),
    "iss with NUL": lambda: sign(claims(iss=ISS + "\x00"), RS, "RS256"),
    "invisible name (Hangul fillers)": lambda: sign(claims(name="\u3164\u3164"), RS, "RS256"),
    "name with a line separator": lambda: sign(claims(name="a\u2028b"), RS, "RS256"),
    "name stacking combining marks": lambda: sign(claims(name="Z" + "\u0336" * 12), RS, "RS256"),
}


@pytest.fixture
async def strict_api(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Api]:
    (tmp_path / "rsa.pem").write_text(public_pem(RSA_KEY))
    ec_jwk = jwk.construct(public_pem(EC_KEY), "ES256").to_dict() | {"kid": "ec-1"}
    (tmp_path / "jwks.json").write_bytes(orjson.dumps({"keys": [ec_jwk]}))
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        jwt_secret=SECRET,
        jwt_algorithms=["HS256", "RS256", "ES256"],
        jwt_issuer=ISS,
        jwt_audience=AUD,
        jwt_public_key_file=tmp_path / "rsa.pem",
        jwt_jwks_file=tmp_path / "jwks.json",
    ) as api:
        yield api


def test_the_corpus_has_at_least_twenty_kinds() -> None:
    assert len(CORPUS) >= 20


async def test_every_forged_or_invalid_token_is_401_and_changes_nothing(
    strict_api: Api, redis_client: redis.asyncio.Redis
) -> None:
    async def post(token: str, key: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
        return await strict_api.http.post(
            "/api/score", json={"action": "quest_complete"}, headers=headers
        )

    # The same server accepts well-made tokens of each kind, so refusals are not blanket.
    for i, (key, alg, kid) in enumerate([(RS, "RS256", None), (ES, "ES256", "ec-1")]):
        good = sign(claims(sub=f"good{i}"), key, alg, **({"kid": kid} if kid else {}))
        assert (await post(good, f"ok{i}")).status_code == 200
    assert (await post(sign(claims(sub="good2"), SECRET, "HS256"), "ok2")).status_code == 200
    before = await board_state(redis_client, strict_api.keys)
    for i, (kind, make) in enumerate(CORPUS.items()):
        response = await post(make(), f"bad{i}")
        assert response.status_code == 401, (kind, response.text)
        assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        assert response.headers["content-type"] == "application/problem+json"
    assert await board_state(redis_client, strict_api.keys) == before


async def post_token(api: Api, token: str, key: str, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key} | headers
    return await api.http.post("/api/score", json={"action": "quest_complete"}, headers=headers)


def assert_invalid_token(response: httpx.Response, what: object) -> None:
    assert response.status_code == 401, (what, response.text)
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert response.headers["content-type"] == "application/problem+json"


def hs256(api: Api, payload: dict[str, Any] | bytes) -> str:
    return sign(payload, api.settings.jwt_secret, "HS256")


def fresh(**extra: Any) -> dict[str, Any]:
    """Claims the default API (no issuer or audience configured) accepts, plus ``extra``."""
    now = int(time.time())
    base = {"sub": "mallory", "iat": now, "exp": now + 600, "scope": "score:write"}
    return {k: v for k, v in (base | extra).items() if v is not None}


async def raw_post(base_url: str, headers: bytes, body: bytes) -> bytes:
    """One HTTP/1.1 request written byte for byte (httpx refuses to send a NUL); the status line."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /api/score HTTP/1.1\r\nHost: "
            + host.encode()
            + b"\r\n"
            + headers
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
            + body
        )
        return (await reader.read()).split(b"\r\n", 1)[0]
    finally:
        writer.close()


async def test_claims_postgres_cannot_store_are_401_and_change_nothing(
    api: Api, redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Before: a jti or iss holding NUL was accepted and scored; the persister refused the event
    # forever (dead letters, a failing reconcile). Overlong ones were silently dropped.
    longest = {"jti": "j" * 128, "iss": "https://" + "i" * 248}
    accepted = await post_token(api, hs256(api, fresh(**longest)), "ok")
    assert accepted.status_code == 200, accepted.text
    [event] = await stream_events(redis_client, api.keys.stream)
    assert (event["jti"], event["iss"]) == (longest["jti"], longest["iss"])
    before = await board_state(redis_client, api.keys)
    hostile: list[dict[str, Any]] = [
        {"jti": "tok\x00en"},
        {"iss": "https://id.example\x00"},
        {"jti": "\x00"},
        {"jti": "j" * 129},
        {"iss": "i" * 257},
        {"jti": 12345},
        {"iss": ["https://id.example"]},
    ]
    for i, extra in enumerate(hostile):
        assert_invalid_token(await post_token(api, hs256(api, fresh(**extra)), f"bad{i}"), extra)
    # A NUL in a header never reaches the app: the HTTP server (in process here, and the
    # service's own, on the same board) refuses the request.
    async with api_process(redis_url, key_prefix) as service:
        for base_url in (str(api.http.base_url), service):
            status = await raw_post(
                base_url,
                b"Authorization: Bearer " + hs256(api, fresh()).encode() + b"\r\n"
                b"Idempotency-Key: nul-agent\r\nUser-Agent: game\x00client\r\n",
                b'{"action": "quest_complete"}',
            )
            assert status.startswith(b"HTTP/1.1 400"), (base_url, status)
    assert await board_state(redis_client, api.keys) == before


async def test_a_scope_split_by_a_no_break_space_or_given_as_a_list_is_401_and_changes_nothing(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    # Before: str.split() cut "x\u00a0score:write" at the no-break space and granted write.
    assert (await post_token(api, hs256(api, fresh()), "ok")).status_code == 200
    before = await board_state(redis_client, api.keys)
    for i, scope in enumerate(
        ["x\u00a0score:write", "x\u2003score:write", "x\tscore:write", ["score:write"], ""]
    ):
        response = await post_token(api, hs256(api, fresh(scope=scope)), f"bad{i}")
        assert_invalid_token(response, scope)
    assert await board_state(redis_client, api.keys) == before


async def test_long_lived_future_or_respelled_tokens_are_401_and_change_nothing(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, jwt_max_lifetime_seconds=3600
    ) as api:
        now = int(time.time())
        token = next(
            t
            for i in range(100)
            if set("-_") & set((t := hs256(api, fresh(jti=f"s{i}", exp=now + 3600))).split(".")[2])
        )
        assert (await post_token(api, token, "ok")).status_code == 200
        before = await board_state(redis_client, api.keys)
        hostile = {
            "exp of 10^30": hs256(api, with_raw_claim(fresh(exp=None), "exp", "1" + "0" * 30)),
            "exp of 10^30 without iat": hs256(
                api, with_raw_claim(fresh(exp=None, iat=None), "exp", "1" + "0" * 30)
            ),
            "lifetime over JWT_MAX_LIFETIME_SECONDS": hs256(api, fresh(exp=now + 3601)),
            "over it without iat": hs256(api, fresh(iat=None, exp=now + 3600 + 31)),
            "issued in the future": hs256(api, fresh(iat=now + 3600, exp=now + 3700)),
            "the accepted token in the standard alphabet": respelled(token, "standard alphabet"),
            "the accepted token padded": respelled(token, "padded"),
            "the accepted token, other unused bits": respelled(token, "last character"),
        }
        for i, (kind, bad) in enumerate(hostile.items()):
            assert_invalid_token(await post_token(api, bad, f"bad{i}"), kind)
        assert await board_state(redis_client, api.keys) == before


async def test_invisible_or_stacked_names_are_401_and_change_nothing(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    response = await post_token(api, hs256(api, fresh(name="  Alice  ")), "ok")
    assert response.status_code == 200
    assert response.json()["name"] == "Alice"
    before = await board_state(redis_client, api.keys)
    for i, name in enumerate(
        ["   ", "\u3164", "\u3164 \u2800", "\u200b", "a\u2028b", "a\u2029b", "Z" + "\u0336" * 12]
    ):
        assert_invalid_token(await post_token(api, hs256(api, fresh(name=name)), f"bad{i}"), name)
    assert await board_state(redis_client, api.keys) == before


async def test_thousands_of_replays_count_once(api: Api, redis_client: redis.asyncio.Redis) -> None:
    token = api.token("alice")
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "replayed"}
    body = {"action": "quest_complete"}
    # Waves of 200 in flight at once: httpx's own pool degrades badly with 1000 queued.
    concurrent = []
    for _ in range(5):
        concurrent += await asyncio.gather(
            *(api.http.post("/api/score", json=body, headers=headers) for _ in range(200))
        )
    sequential = [
        await api.http.post("/api/score", json=body, headers=headers) for _ in range(1000)
    ]
    results = [r.json() for r in concurrent + sequential]
    assert {r.status_code for r in concurrent + sequential} == {200}
    assert sum(not r["duplicate"] for r in results) == 1
    assert {r["score"] for r in results} == {10}
    assert len(await stream_events(redis_client, api.keys.stream)) == 1


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(redis_url=redis_url, redis_key_prefix=key_prefix) as running:
        yield running


async def test_user_rate_limit_refuses_with_headers_and_changes_nothing(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, rate_limit_user_per_minute=3
    ) as api:
        accepted = [await api.post("alice", f"k{i}") for i in range(3)]
        assert [r.status_code for r in accepted] == [200, 200, 200]
        assert accepted[0].headers["ratelimit-policy"] == '"user-minute";q=3;w=60'
        assert accepted[2].headers["ratelimit"].startswith('"user-minute";r=0;')
        before = await board_state(redis_client, api.keys)
        refused = await api.post("alice", "k3")
        assert refused.status_code == 429
        assert refused.json()["type"].endswith("rate-limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit"].startswith('"user-minute";r=0;t=')
        assert await board_state(redis_client, api.keys) == before
        assert (await api.post("bob", "k0")).status_code == 200  # other users unaffected


async def test_ip_rate_limit_spans_users(redis_url: str, key_prefix: str) -> None:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, rate_limit_ip_per_second=2
    ) as api:
        statuses = [(await api.post(f"user{i}", "k")).status_code for i in range(3)]
        assert statuses[:2] == [200, 200]
        assert statuses[2] == 429


async def test_action_cooldown_refuses_a_repeat_by_the_same_user(
    redis_url: str, key_prefix: str
) -> None:
    actions = {"boss_kill": {"points": 40, "cooldown_seconds": 300}}
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, actions=actions
    ) as api:
        assert (await api.post("alice", "k1", "boss_kill")).status_code == 200
        again = await api.post("alice", "k2", "boss_kill")
        assert again.status_code == 429
        assert again.json()["type"].endswith("cooldown")
        assert 290 <= int(again.headers["retry-after"]) <= 300
        assert (await api.post("bob", "k1", "boss_kill")).status_code == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    redis_url: str, redis_client: redis.asyncio.Redis
) -> None:
    for trusted, expected in (([], "127.0.0.1"), (["127.0.0.0/8"], "203.0.113.5")):
        prefix = f"{os.urandom(3).hex()}-xff"
        async with running_api(
            redis_url=redis_url, redis_key_prefix=prefix, trusted_proxies=trusted
        ) as api:
            headers = {
                "Authorization": f"Bearer {api.token('alice')}",
                "Idempotency-Key": "k",
                "X-Forwarded-For": "203.0.113.5",
            }
            await api.http.post("/api/score", json={"action": "quest_complete"}, headers=headers)
            [event] = await stream_events(redis_client, api.keys.stream)
            assert event["client_ip"] == expected
            await redis_client.unlink(*[k async for k in redis_client.scan_iter(f"{{{prefix}:*")])


async def test_rate_limits_hold_across_two_api_processes(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    token = issue(ApiSettings(), "alice")
    async with (
        api_process(redis_url, key_prefix, RATE_LIMIT_USER_PER_MINUTE="7") as first,
        api_process(redis_url, key_prefix, RATE_LIMIT_USER_PER_MINUTE="7") as second,
        httpx.AsyncClient(timeout=10) as http,
    ):
        responses = await asyncio.gather(
            *(
                http.post(
                    f"{(first, second)[i % 2]}/api/score",
                    json={"action": "quest_complete"},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
                )
                for i in range(40)
            )
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 7
    assert statuses.count(429) == 33
    keys = BoardKeys(key_prefix, "global")
    assert len(await stream_events(redis_client, keys.stream)) == 7


async def test_replays_of_one_key_count_against_the_address_limit(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Before: the idempotency check ran before every limit, so one key could be replayed
    # without end, each replay a full script run in Redis.
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, rate_limit_ip_per_second=4
    ) as api:
        statuses = [(await api.post("alice", "same")).status_code for _ in range(8)]
        assert statuses[:4] == [200, 200, 200, 200]
        assert 429 in statuses[4:]
        refused = await api.post("alice", "same")
        assert refused.status_code == 429
        assert refused.json()["type"].endswith("rate-limited")
        assert refused.headers["ratelimit"].startswith('"ip-second";r=0;')
    assert len(await stream_events(redis_client, BoardKeys(key_prefix, "global").stream)) == 1


async def test_limits_agree_across_api_processes_whose_clocks_disagree(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Two replicas, one clock 2 minutes slow and one 2 minutes fast. When each replica's
    # clock drove the limit, the fast one saw the slow one's arrival times as long past and
    # granted a fresh burst: 10 awards under a limit of 5 per minute.
    # Issued 3 minutes ago, so its iat is in the past on the slow replica's clock too.
    token = issue(ApiSettings(), "alice", now=time.time() - 180)
    async with (
        api_process(
            redis_url, key_prefix, CLOCK_OFFSET_SECONDS="-120", RATE_LIMIT_USER_PER_MINUTE="5"
        ) as slow,
        api_process(
            redis_url, key_prefix, CLOCK_OFFSET_SECONDS="120", RATE_LIMIT_USER_PER_MINUTE="5"
        ) as fast,
        httpx.AsyncClient(timeout=10) as http,
    ):
        statuses = []
        for i, base in enumerate([slow] * 6 + [fast] * 6):
            response = await http.post(
                f"{base}/api/score",
                json={"action": "quest_complete"},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"k{i}"},
            )
            statuses.append(response.status_code)
    assert statuses == [200] * 5 + [429] * 7
    events = await stream_events(redis_client, BoardKeys(key_prefix, "global").stream)
    assert len(events) == 5
    # Event times come from Redis too, not from either replica's clock.
    now_ms = time.time() * 1000
    assert all(abs(int(e["ts"]) - now_ms) < 30_000 for e in events)


def ipv6_spellings(count: int) -> list[str]:
    """``count`` different texts of 2001:db8::7: case, leading zeros, ``::``, zone ids."""
    groups = ("db8", "0db8", "DB8", "0Db8")
    middles = ("::", ":0:0:0:0:0:", ":0000::", "::0:")
    lasts = ("7", "07", "0007")
    spellings = [
        f"2001:{g}{m}{last}{zone}"
        for zone in ("", "%eth0")
        for g in groups
        for m in middles
        for last in lasts
    ]
    assert len(set(spellings)) >= count
    return spellings[:count]


async def post_through_proxy(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis, addresses: list[str]
) -> tuple[list[int], list[str], list[dict[str, str]]]:
    """Post one award per forwarded address through a trusted proxy, under 5 per second per
    address; (statuses, the address-limit subjects in Redis, the events)."""
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        trusted_proxies=["127.0.0.0/8"],
        rate_limit_ip_per_second=5,
    ) as api:
        token = api.token("alice")
        statuses = []
        for i, address in enumerate(addresses):
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": f"k{i}",
                "X-Forwarded-For": address,
            }
            response = await api.http.post(
                "/api/score", json={"action": "quest_complete"}, headers=headers
            )
            statuses.append(response.status_code)
        counters = [k async for k in redis_client.scan_iter(f"{api.keys.tag}:rl:ip-second:*")]
        events = await stream_events(redis_client, api.keys.stream)
    subjects = [k.decode().rsplit(":rl:ip-second:", 1)[1] for k in counters]
    return statuses, subjects, events


async def test_spellings_of_one_ipv6_address_share_one_address_limit(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Before: each spelling was its own subject, so 80 spellings of one address through a
    # trusted proxy had 80 fresh `ip-second` limits, and 80 counters in Redis.
    statuses, subjects, events = await post_through_proxy(
        redis_url, key_prefix, redis_client, ipv6_spellings(80)
    )
    assert subjects == ["2001:db8::/64"]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses
    assert {e["client_ip"] for e in events} == {"2001:db8::7"}


async def test_addresses_of_one_ipv6_64_share_one_address_limit(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # One subscriber holds a whole /64: a fresh address per request must not be a fresh limit.
    addresses = [f"2001:db8:0:7:{i:x}::1" for i in range(1, 41)]
    statuses, subjects, events = await post_through_proxy(
        redis_url, key_prefix, redis_client, addresses
    )
    assert subjects == ["2001:db8:0:7::/64"]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses
    # The event keeps the whole address, for the audit.
    assert {e["client_ip"] for e in events} <= set(addresses)
    assert len({e["client_ip"] for e in events}) == len(events)
