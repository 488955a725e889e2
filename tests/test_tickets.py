"""Action tickets: the scripts held to the Python model, then every misuse over real HTTP.

Each refusal is checked to change nothing: the board, the stream and the ticket's own state
are the same before and after.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis.asyncio

from services.score_api.store import AwardRequest, ScoreStore, TicketRequest
from services.score_api.tickets import new_ticket_id, rfc3339
from shared.formats import TICKET, Field
from shared.keys import BoardKeys
from tests.models import TicketBook, TicketSpec
from tests.support import board_state, stream_events
from tests.test_score_api import Api, running_api

ACTIONS: dict[str, Any] = {
    # Timing tests run on Redis's real clock: a short wait and a short life.
    "quest": {"points": 10, "mode": "ticket", "min_seconds": 1, "max_seconds": 3},
    "raid": {"points": 30, "mode": "ticket", "max_seconds": 600, "max_open": 2},
    "coin": 1,
    "boss": {"points": 40, "mode": "server"},
}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_ticket_ids_are_128_random_bits_and_times_are_rfc3339_utc() -> None:
    ids = {new_ticket_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(TICKET.matches(t) and len(t) * 4 == 128 for t in ids)
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1_764_594_030_250) == "2025-12-01T13:00:30.250Z"
    # Exact milliseconds, never a float's rounding (.249 for .250).
    for ms in random.Random(1).sample(range(10**12, 4 * 10**12), 2000):
        assert rfc3339(ms).endswith(f".{ms % 1000:03d}Z")


async def test_the_scripts_follow_the_ticket_model_over_a_random_timeline(
    redis_client: redis.asyncio.Redis, key_prefix: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    store = ScoreStore(redis_client, keys, 3600)
    spec = TicketSpec(min_ms=5_000, max_ms=60_000, max_open=2)
    book = TicketBook.empty()
    rng = random.Random(13)
    now = 1_000_000_000
    issued: list[str] = []
    outcomes: set[str] = set()
    for i in range(400):
        now += rng.choice([0, 1, 500, 2_000, 5_000, 20_000])
        user, action = rng.choice(["ann", "bob"]), rng.choice(["quest", "raid"])
        if not issued or rng.random() < 0.35:
            ticket = new_ticket_id()
            start = TicketRequest(
                user, action, ticket, spec.min_ms // 1000, spec.max_ms // 1000, 2, [], [], "ip"
            )
            result = await store.start(start, now_ms=now)
            assert result.status == "new"
            assert result.cancelled == book.start(ticket, user, action, now, spec), i
            assert (result.not_before_ms, result.expires_ms) == (now + 5_000, now + 60_000)
            issued.append(ticket)
            continue
        ticket = rng.choice([*issued, new_ticket_id()])
        award = AwardRequest(
            user, user, action, 10, 0, f"k{i}", "10.0.0.1", [], [], {}, ticket=ticket
        )
        got = (await store.award(award, now_ms=now)).status
        assert got == book.redeem(ticket, user, action, now), (i, ticket in issued)
        outcomes.add(got)
    assert outcomes == {"new", "ticket-invalid", "ticket-used", "too-early"}


@pytest.fixture
async def api(redis_url: str, key_prefix: str) -> AsyncIterator[Api]:
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, actions=ACTIONS
    ) as running:
        yield running


async def start(api: Api, user: str, action: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {api.token(user)}"}
    return await api.http.post("/api/actions", json={"action": action}, headers=headers)


async def complete(
    api: Api, user: str, key: str, action: str, ticket: str | None
) -> httpx.Response:
    body = {"action": action} | ({} if ticket is None else {"ticket": ticket})
    headers = {"Authorization": f"Bearer {api.token(user)}", "Idempotency-Key": key}
    return await api.http.post("/api/score", json=body, headers=headers)


async def snapshot(api: Api, client: redis.asyncio.Redis, ticket: str) -> object:
    return (
        await board_state(client, api.keys),
        await stream_events(client, api.keys.stream),
        await client.hgetall(api.keys.ticket(ticket)),
    )


async def test_start_then_complete_awards_once_and_records_ticket_and_duration(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    before = time.time()
    started = await start(api, "alice", "quest")
    assert started.status_code == 201, started.text
    body = started.json()
    assert set(body) == {"ticket", "action", "not_before", "expires_at"}
    assert TICKET.matches(body["ticket"])
    assert body["action"] == "quest"
    assert RFC3339_UTC.fullmatch(body["not_before"])
    assert RFC3339_UTC.fullmatch(body["expires_at"])
    not_before = datetime.fromisoformat(body["not_before"]).timestamp()
    expires = datetime.fromisoformat(body["expires_at"]).timestamp()
    assert before + 0.5 <= not_before <= time.time() + 1.5
    assert expires - not_before == pytest.approx(2, abs=0.01)
    await asyncio.sleep(max(0.0, not_before - time.time()) + 0.05)
    done = await complete(api, "alice", "k1", "quest", body["ticket"])
    assert done.status_code == 200, done.text
    assert (done.json()["awarded"], done.json()["score"]) == (10, 10)
    [event] = await stream_events(redis_client, api.keys.stream)
    assert event[Field.TICKET] == body["ticket"]
    assert 1000 <= int(event[Field.DURATION_MS]) < 3000
    # The same key replays the original result, however often; another key is 409.
    again = await complete(api, "alice", "k1", "quest", body["ticket"])
    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    state = await snapshot(api, redis_client, body["ticket"])
    reused = await complete(api, "alice", "k2", "quest", body["ticket"])
    assert reused.status_code == 409
    assert reused.json()["type"].endswith("ticket-used")
    assert await snapshot(api, redis_client, body["ticket"]) == state


async def test_early_completion_is_425_and_leaves_the_ticket_usable(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    ticket = (await start(api, "alice", "quest")).json()["ticket"]
    state = await snapshot(api, redis_client, ticket)
    early = await complete(api, "alice", "k1", "quest", ticket)
    assert early.status_code == 425
    assert early.json()["type"].endswith("too-early")
    assert early.headers["retry-after"] == "1"
    assert await snapshot(api, redis_client, ticket) == state
    await asyncio.sleep(1.05)
    # The refused key was not spent either: it completes the action now.
    assert (await complete(api, "alice", "k1", "quest", ticket)).status_code == 200


async def test_expired_cancelled_foreign_and_unknown_tickets_are_422_alike(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    expired = (await start(api, "alice", "quest")).json()["ticket"]
    first_raid = (await start(api, "alice", "raid")).json()["ticket"]
    await start(api, "alice", "raid")
    await start(api, "alice", "raid")  # max_open 2: the first raid ticket is cancelled
    bobs = (await start(api, "bob", "quest")).json()["ticket"]
    own_quest = (await start(api, "alice", "quest")).json()["ticket"]  # cancels `expired`
    await asyncio.sleep(3.05)
    cases = [
        ("expired", "quest", expired),
        ("cancelled", "raid", first_raid),
        ("another user's", "quest", bobs),
        ("another action's", "raid", own_quest),
        ("expired, own", "quest", own_quest),
        ("unknown", "quest", new_ticket_id()),
        ("malformed", "quest", "not-a-ticket"),
    ]
    details = set()
    for i, (what, action, ticket) in enumerate(cases):
        state = await snapshot(api, redis_client, ticket)
        refused = await complete(api, "alice", f"k{i}", action, ticket)
        assert refused.status_code == 422, what
        assert refused.json()["type"].endswith("ticket-invalid"), what
        details.add(refused.json()["detail"])
        assert await snapshot(api, redis_client, ticket) == state, what
    assert len(details) <= 2  # never says which (a malformed one is refused before Redis)


async def test_a_missing_ticket_a_stray_ticket_and_player_server_writes_are_refused(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    ticket = (await start(api, "alice", "raid")).json()["ticket"]
    state = await snapshot(api, redis_client, ticket)
    cases = [
        ("raid", None, 422, "ticket-required"),
        ("coin", ticket, 422, "ticket-unexpected"),
        ("boss", None, 403, "reporter-required"),
        ("boss", ticket, 403, "reporter-required"),
    ]
    for action, sent, status, slug in cases:
        refused = await complete(api, "alice", f"k-{action}-{sent}", action, sent)
        assert (refused.status_code, refused.json()["type"].split(":")[-1]) == (status, slug)
    for action in ("coin", "boss", "nope"):
        refused = await start(api, "alice", action)
        assert refused.status_code == 422, action
    assert await snapshot(api, redis_client, ticket) == state
    assert (await complete(api, "alice", "k-ok", "raid", ticket)).status_code == 200


async def test_one_ticket_redeemed_concurrently_under_50_keys_counts_once(
    api: Api, redis_client: redis.asyncio.Redis
) -> None:
    ticket = (await start(api, "alice", "raid")).json()["ticket"]
    responses = await asyncio.gather(
        *(complete(api, "alice", f"key{i}", "raid", ticket) for i in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 49
    board = (await api.http.get("/api/score-board")).json()["board"]
    assert [(e["user_id"], e["score"]) for e in board] == [("alice", 30)]
    assert len(await stream_events(redis_client, api.keys.stream)) == 1


async def test_stockpiled_tickets_gain_nothing(api: Api, redis_client: redis.asyncio.Redis) -> None:
    tickets = [(await start(api, "alice", "raid")).json()["ticket"] for _ in range(20)]
    statuses = [
        (await complete(api, "alice", f"k{i}", "raid", t)).status_code
        for i, t in enumerate(tickets)
    ]
    assert statuses == [422] * 18 + [200, 200]  # max_open 2: only the newest two stay open


async def test_starting_is_rate_limited_and_a_banned_user_gets_no_ticket(
    redis_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    async with running_api(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        actions=ACTIONS,
        rate_limit_user_per_minute=3,
    ) as api:
        statuses = [(await start(api, "alice", "raid")).status_code for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        limited = await start(api, "alice", "raid")
        assert limited.json()["type"].endswith("rate-limited")
        assert limited.headers["ratelimit"].startswith('"user-minute";r=0;')
        assert int(limited.headers["retry-after"]) >= 1
        admin = api.token("mod", scopes=("score:admin",))
        ban = await api.http.delete(
            "/api/admin/users/bob", headers={"Authorization": f"Bearer {admin}"}
        )
        assert ban.status_code == 200
        banned = await start(api, "bob", "raid")
        assert banned.status_code == 403
        assert banned.json()["type"].endswith("banned")
        assert not [k async for k in redis_client.scan_iter(f"{{{key_prefix}:*}}:open:bob*")]


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("text/plain", b'{"action": "quest"}', 415),
        ("application/json", b'{"action": "' + b"q" * 5000 + b'"}', 413),
        ("application/json", b'{"action": "quest\\n"}', 422),
        ("application/json", b'{"action": "quest\\u0000"}', 422),
        ("application/json", b'{"action": "\\uff51uest"}', 422),
        ("application/json", b'{"action": ["quest"]}', 422),
        ("application/json", b'{"action": "quest", "ticket": "' + b"a" * 32 + b'"}', 422),
        ("application/json", b"\xff\xfe", 422),
        ("application/json", b"", 422),
    ],
)
async def test_hostile_start_requests_are_refused_and_issue_no_ticket(
    api: Api, redis_client: redis.asyncio.Redis, content_type: str, raw: bytes, status: int
) -> None:
    headers = {"Authorization": f"Bearer {api.token('alice')}", "Content-Type": content_type}
    refused = await api.http.post("/api/actions", content=raw, headers=headers)
    assert refused.status_code == status
    assert refused.headers["content-type"] == "application/problem+json"
    assert not [k async for k in redis_client.scan_iter(f"{api.keys.tag}:ticket:*")]
    assert not [k async for k in redis_client.scan_iter(f"{api.keys.tag}:open:*")]
