"""Hostile tests over real HTTP: forged tokens, replays, abuse limits, forwarded addresses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
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


async def test_spellings_of_one_ipv6_address_share_one_address_limit(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # Before: each spelling was its own subject, so 80 spellings of one address through a
    # trusted proxy had 80 fresh `ip-second` limits, and 80 counters in Redis.
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        trusted_proxies=["127.0.0.0/8"],
        rate_limit_ip_per_second=5,
    ) as api:
        token = api.token("alice")
        statuses = []
        for i, spelling in enumerate(ipv6_spellings(80)):
            headers = {
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": f"k{i}",
                "X-Forwarded-For": spelling,
            }
            response = await api.http.post(
                "/api/score", json={"action": "quest_complete"}, headers=headers
            )
            statuses.append(response.status_code)
        counters = [k async for k in redis_client.scan_iter(f"{api.keys.tag}:rl:ip-second:*")]
        events = await stream_events(redis_client, api.keys.stream)
    assert len(counters) == 1
    assert statuses[:5] == [200] * 5
    assert 429 in statuses
    assert {e["client_ip"] for e in events} == {"2001:db8::7"}
