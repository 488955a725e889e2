"""Every event the score API accepts, the persister stores.

Hypothesis makes the values that reach a stream event (the token's ``sub``, ``name``, ``jti``
and ``iss``, the ``User-Agent`` and ``X-Request-ID`` headers) and posts them over real HTTP
to the score API on real Redis. Each accepted event is then parsed as the persister parses it
(``services.persister.batch.parse_entry``) and written to PostgreSQL by the persister's own
store; each refused request left the stream as it was.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from jose import jws

from services.persister.batch import StreamEntry, parse_entry
from services.persister.migrate import migrate
from services.persister.store import EventStore
from services.score_api.tokens import MAX_ISS_CHARS, MAX_JTI_CHARS, MAX_NAME_CHARS
from shared.formats import REQUEST_ID, USER_ID
from tests.test_score_api import Api, running_api

# Characters that broke or nearly broke storage, mixed into arbitrary text; and text that
# is probably fine, so that many examples are accepted.
HOSTILE = st.sampled_from(["\x00", "\n", "\u2028", "\u3164", "\u00a0", "\u0336", "\ufeff", "é"])
BENIGN = st.characters(exclude_categories=["C"])


def text(max_size: int) -> st.SearchStrategy[str | None]:
    hostile = st.lists(st.characters() | HOSTILE, max_size=max_size + 20).map("".join)
    return st.none() | st.text(BENIGN, min_size=1, max_size=max_size) | hostile


# What an HTTP client can put in a header value: no NUL, CR or LF, no surrounding whitespace
# (tests/test_security.py sends a NUL byte for byte; the server refuses it with 400). Visible
# ASCII and obs-text (0x80-0xff), with a control character now and then.
VISIBLE_BYTE = st.integers(0x21, 0x7E) | st.integers(0x80, 0xFF)
CONTROL_BYTE = st.sampled_from([0x01, 0x1B, 0x1F, 0x7F, 0x09])
WORD = st.lists(VISIBLE_BYTE, min_size=1, max_size=60).map(bytes)
PLAIN = st.lists(WORD, min_size=1, max_size=8).map(b" ".join)
HEADER = PLAIN | st.tuples(PLAIN, CONTROL_BYTE, PLAIN).map(lambda t: t[0] + bytes([t[1]]) + t[2])
REQUEST_IDS = st.from_regex(REQUEST_ID.regex, fullmatch=True).map(str.encode) | PLAIN


@dataclass
class Stack:
    api: Api
    redis: redis.asyncio.Redis
    store: EventStore
    posted: int = 0


@pytest.fixture
async def stack(
    redis_url: str, key_prefix: str, database_url: str, redis_client: redis.asyncio.Redis
) -> AsyncIterator[Stack]:
    await migrate(database_url)
    store = await EventStore.open(database_url, 5.0)
    try:
        async with running_api(
            redis_url=redis_url, redis_key_prefix=key_prefix, actions={"quest_complete": 10}
        ) as api:
            yield Stack(api, redis_client, store)
    finally:
        await store.close()


def token(api: Api, sub: str, **optional: str | None) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + 600, "scope": "score:write"}
    claims |= {k: v for k, v in optional.items() if v is not None}
    signed: str = jws.sign(orjson.dumps(claims), api.settings.jwt_secret, algorithm="HS256")
    return signed


@settings(
    max_examples=300,
    deadline=None,
    # One server, one database for all examples: each posts under its own key.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sub=st.from_regex(USER_ID.regex, fullmatch=True),
    name=text(MAX_NAME_CHARS),
    jti=text(MAX_JTI_CHARS),
    iss=text(MAX_ISS_CHARS),
    agent=st.none() | HEADER,
    request_id=st.none() | REQUEST_IDS,
)
@example(sub="farm\n", name=None, jti=None, iss=None, agent=None, request_id=None)
@example(sub="alice", name=None, jti="tok\x00en", iss=None, agent=None, request_id=None)
@example(
    sub="alice", name=None, jti=None, iss="https://id.example\x00", agent=None, request_id=None
)
@example(sub="alice", name="\u3164", jti="j" * 129, iss="i" * 257, agent=None, request_id=None)
@example(sub="alice", name=" Ali ", jti="j" * 128, iss=None, agent=b"\xff" * 400, request_id=b"r")
async def test_every_event_the_api_accepts_the_persister_stores(
    stack: Stack,
    sub: str,
    name: str | None,
    jti: str | None,
    iss: str | None,
    agent: bytes | None,
    request_id: bytes | None,
) -> None:
    api, stream = stack.api, stack.api.keys.stream
    stack.posted += 1
    headers = {
        b"Authorization": f"Bearer {token(api, sub, name=name, jti=jti, iss=iss)}".encode(),
        b"Idempotency-Key": f"k{stack.posted}-{os.urandom(4).hex()}".encode(),
    }
    if agent is not None:
        headers[b"User-Agent"] = agent
    if request_id is not None:
        headers[b"X-Request-ID"] = request_id
    before = await stack.redis.xlen(stream)
    response = await api.http.post(
        "/api/score", json={"action": "quest_complete"}, headers=httpx.Headers(headers)
    )
    event(f"HTTP {response.status_code}")
    if response.status_code != 200:
        # 401: the token; 400: the HTTP server refused a control character in a header.
        assert response.status_code in (400, 401), response.text
        assert await stack.redis.xlen(stream) == before
        return
    newest: list[tuple[bytes, dict[bytes, bytes]]]
    newest = await stack.redis.xrevrange(stream, count=1)  # type: ignore[assignment]
    [(stream_id, fields)] = newest
    row = parse_entry(StreamEntry(stream_id.decode(), fields))
    assert row.event_id == response.json()["event_id"]
    assert (row.user_id, row.jti, row.iss) == (sub, jti, iss)
    written = await stack.store.write([row])
    assert (written.inserted, written.refused) == (1, [])
