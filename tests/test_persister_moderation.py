"""The moderation pipeline in the persister and PostgreSQL's read side, on the real servers.

- Stored moderation events (version 3, written straight to the stream as the score API's
  scripts write them): their audit columns, the state they leave in ``users`` (banned,
  quarantined) whatever order they arrive in, the flags they action or dismiss.
- Revoked events never count: PERIOD_TOTALS and ``reconcile``; reconcile finds quarantined
  users' totals on the hidden boards.
- ``rebuild`` puts a quarantined user back where a quarantine keeps them.
- Archives leave out quarantined users; archived pages filter users hidden after the archive
  was written, their ranks closing up, and list the period's corrections.
- Hostile events are dead-lettered with the reason.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from services.persister.archive import archive_period
from services.persister.batch import (
    BIGINT_MAX,
    EventRow,
    StreamEntry,
    flag_decisions,
    moderation_states,
    parse,
    parse_entry,
)
from services.persister.migrate import migrate
from services.persister.periods import PERIOD_TOTALS
from services.persister.rebuild import RebuildRefused, rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from services.persister.worker import Persister
from services.score_api.archives import Hidden
from shared.boards import ALL_TIME, Slots
from shared.events import EventError
from shared.formats import Field, period_tag
from shared.keys import BoardKeys
from shared.periods import Schedule
from tests.persister_fixtures import Api, drain, open_worker
from tests.persister_fixtures import running_api as persister_api
from tests.test_score_api import Api as ScoreApi
from tests.test_score_api import running_api

BASE = 1_800_000_000_000  # 2027-01-15T08:00:00Z, in ms


def at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def moderation(
    event_id: str, type_: str, user: str, ts: int, **extras: str | int
) -> dict[str, str]:
    """A version-3 moderation event as the score API's scripts append it (contract:
    points 0, seq 0, no idempotency key, action = the type)."""
    return {
        Field.VERSION: "3",
        Field.TYPE: type_,
        Field.EVENT_ID: event_id,
        Field.USER_ID: user,
        Field.NAME: user.title(),
        Field.ACTION: type_,
        Field.POINTS: "0",
        Field.SCORE: "0",
        Field.SEQ: "0",
        Field.IDEMPOTENCY_KEY: "",
        Field.TS: str(ts),
        Field.CLIENT_IP: "10.0.0.9",
    } | {k: str(v) for k, v in extras.items()}


def entry(stream_id: str, fields: dict[str, str]) -> StreamEntry:
    return StreamEntry(stream_id, {k.encode(): v.encode() for k, v in fields.items()})


# -- Parsing and folding, without I/O ------------------------------------------------------


def test_moderation_events_parse_into_rows_with_their_audit_columns() -> None:
    batch = parse(
        [
            entry("1-0", moderation("q1", "quarantine", "ann", BASE, by="mod", reason="bot?")),
            entry("2-0", moderation("r1", "revoke", "ann", BASE + 1, revocation="rev-1")),
            entry("3-0", moderation("d1", "dismiss", "ann", BASE + 2, flag="42", reason="ok")),
            entry("4-0", moderation("x1", "release", "ann", BASE + 3)),
        ]
    )
    assert batch.refused == []
    quarantine, revoke, dismiss, release = batch.rows
    assert (quarantine.moderator, quarantine.reason, quarantine.revocation) == ("mod", "bot?", None)
    assert (revoke.revocation, revoke.flag) == ("rev-1", None)
    assert (dismiss.flag, dismiss.reason) == (42, "ok")
    assert (release.reason, release.revocation, release.flag) == (None, None, None)
    assert all(r.points == 0 for r in batch.rows)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (moderation("e", "dismiss", "u", BASE, flag="12a"), "flag must be a decimal integer"),
        (moderation("e", "dismiss", "u", BASE, flag=""), "flag must be a decimal integer"),
        (moderation("e", "dismiss", "u", BASE, flag="-1"), "flag must be a decimal integer"),
        (moderation("e", "dismiss", "u", BASE, flag=" 7"), "flag must be a decimal integer"),
        (moderation("e", "dismiss", "u", BASE, flag="\u0661\u0662"), "flag must be"),
        (moderation("e", "dismiss", "u", BASE, flag="\u00b2"), "flag must be"),
        (moderation("e", "dismiss", "u", BASE, flag=str(BIGINT_MAX + 1)), "flag must be"),
        (moderation("e", "dismiss", "u", BASE, flag="0" * 20 + "1"), "flag must be"),
        (moderation("e", "dismiss", "u", BASE), "a dismiss event names its flag"),
        (moderation("e", "revoke", "u", BASE), "a revoke event names its revocation"),
        (moderation("e", "revoke", "u", BASE, revocation=""), "names its revocation"),
        (moderation("e", "shadowban", "u", BASE), "unknown event type 'shadowban'"),
        (moderation("e", "Quarantine", "u", BASE), "unknown event type"),
        (moderation("e", "quarantine", "u", BASE) | {"points": "5"}, "carries no points"),
        (moderation("e", "release", "u", BASE) | {"points": "-5"}, "carries no points"),
        (moderation("e", "revoke", "u", BASE, revocation="r") | {"points": "9"}, "no points"),
        (moderation("e", "dismiss", "u", BASE, flag="1") | {"points": "1"}, "no points"),
        (moderation("e", "quarantine", "u", BASE, reason="a\x00b"), "NUL"),
        (moderation("e", "quarantine", "u", BASE, reason="x" * 2000), "too long"),
        (moderation("e", "quarantine", "u", BASE) | {"v": "4"}, "unsupported event version"),
    ],
)
def test_hostile_moderation_events_are_refused_with_a_reason(
    fields: dict[str, str], error: str
) -> None:
    with pytest.raises(EventError, match=error):
        parse_entry(entry("1-0", fields))


def test_a_flag_is_digits_of_any_event_and_a_score_event_carries_none() -> None:
    assert parse_entry(entry("1-0", moderation("e", "dismiss", "u", BASE, flag="007"))).flag == 7
    score = moderation("s", "score", "u", BASE) | {"points": "10", "seq": "1"}
    row = parse_entry(entry("1-0", score))
    assert (row.reason, row.revocation, row.flag) == (None, None, None)


def row(event_id: str, stream_id: str, type_: str, user: str = "u", **more: Any) -> EventRow:
    return EventRow(
        event_id, stream_id, 0, type_, user, user, type_, 0, 0, "", "", at(BASE), **more
    )


@pytest.mark.parametrize(
    ("last", "flags"),
    [
        ("ban", (True, False)),
        ("unban", (False, False)),
        ("quarantine", (False, True)),
        ("release", (False, False)),
    ],
)
def test_the_newest_state_event_sets_both_flags(last: str, flags: tuple[bool, bool]) -> None:
    rows = [
        row("a", "1-0", "ban"),
        row("b", "9-0", last),
        row("c", "5-0", "quarantine"),
        row("d", "10-0", "revoke"),  # no state
        row("e", "11-0", "dismiss", flag=1),  # no state
        row("f", "12-0", "ban"),  # not inserted: a duplicate
    ]
    [state] = moderation_states(rows, inserted={"a", "b", "c", "d", "e"})
    assert (state.banned, state.quarantined) == flags


def test_flag_decisions_keep_the_stream_order_within_a_batch() -> None:
    rows = [
        row("1", "1-0", "dismiss", "g", flag=7, moderator="m1", reason="fine"),
        row("2", "2-0", "ban", "g", moderator="m2", reason="cheat"),
        row("3", "3-0", "quarantine", "h", moderator="m3"),
        row("4", "4-0", "dismiss", "h", flag=8, moderator="m4", reason="late"),
        row("5", "5-0", "revoke", "g", reason="second"),  # g already actioned in this batch
        row("6", "6-0", "dismiss", "k", flag=9),
        row("7", "7-0", "release", "k"),  # actions nothing
        row("8", "8-0", "dismiss", "k", flag=9, reason="again"),  # the first dismissal counts
        row("9", "9-0", "ban", "z"),  # not inserted
    ]
    decided = flag_decisions(rows, inserted={str(i) for i in range(1, 9)})
    assert [(d.flag_id, d.moderator, d.reason) for d in decided.early] == [
        (7, "m1", "fine"),
        (9, None, None),
    ]
    assert [(a.user_id, a.moderator, a.decision) for a in decided.actions] == [
        ("g", "m2", "ban: cheat"),
        ("h", "m3", "quarantine"),
    ]
    assert [d.flag_id for d in decided.late] == [8]
    assert not flag_decisions(rows, inserted=set())


def test_hidden_ranks_map_to_visible_ones_like_a_filtered_renumbering() -> None:
    rng = random.Random(15)
    for _ in range(500):
        size = rng.randint(0, 30)
        hidden_ranks = sorted(rng.sample(range(1, size + 1), rng.randint(0, size)))
        hidden = Hidden(frozenset(), hidden_ranks)
        shown = [r for r in range(1, size + 1) if r not in hidden_ranks]
        for visible, stored in enumerate(shown, 1):
            assert hidden.original(visible) == stored
            assert hidden.closed_up(stored) == visible
        # Past the last visible entry: a stored rank past the archive (nothing to read).
        assert hidden.original(len(shown) + 1) > size


# -- The persister on real servers ---------------------------------------------------------


@pytest.fixture
async def worker(redis_url: str, database_url: str, key_prefix: str) -> AsyncIterator[Persister]:
    await migrate(database_url)
    async with open_worker(redis_url, database_url, key_prefix, persister_max_attempts=1) as w:
        yield w


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def write(client: redis.asyncio.Redis, worker: Persister, *events: dict[str, str]) -> None:
    for event in events:
        await client.xadd(worker.stream, event)  # type: ignore[arg-type]


async def states(db: asyncpg.Connection) -> dict[str, tuple[int, bool, bool, datetime | None]]:
    rows = await db.fetch("SELECT user_id, score, banned, quarantined, moderated_at FROM users")
    return {
        r["user_id"]: (r["score"], r["banned"], r["quarantined"], r["moderated_at"]) for r in rows
    }


def score(
    event_id: str, user: str, points: int, seq: int, ts: int, periods: str = ""
) -> dict[str, str]:
    fields = moderation(event_id, "score", user, ts) | {
        "action": "coin",
        "idempotency_key": event_id,
    }
    return fields | {
        "points": str(points),
        "score": str(points),
        "seq": str(seq),
        "periods": periods,
    }


async def test_state_columns_follow_each_event_type_whatever_the_arrival_order(
    worker: Persister, redis_client: redis.asyncio.Redis, db: asyncpg.Connection
) -> None:
    await write(redis_client, worker, score("s1", "ann", 30, 1, BASE))
    steps: list[tuple[dict[str, str], tuple[bool, bool]]] = [
        (moderation("m1", "quarantine", "ann", BASE + 10, by="mod", reason="odd"), (False, True)),
        (moderation("m2", "release", "ann", BASE + 20, by="mod", reason="fine"), (False, False)),
        (moderation("m3", "quarantine", "ann", BASE + 30, by="mod", reason="again"), (False, True)),
        (moderation("m4", "ban", "ann", BASE + 40, by="mod", reason="cheat"), (True, False)),
        (moderation("m5", "revoke", "ann", BASE + 45, revocation="rev-1"), (True, False)),
        (moderation("m6", "unban", "ann", BASE + 50, by="mod"), (False, False)),
    ]
    moderated = 0
    for event, (banned, quarantined) in steps:
        await write(redis_client, worker, event)
        await drain(worker)
        if event["type"] != "revoke":  # a revoke sets no state
            moderated = int(event["ts"])
        assert (await states(db))["ann"] == (30, banned, quarantined, at(moderated))
    # Late arrivals: an older quarantine (a new event delivered out of order) and the very
    # first quarantine again (a redelivery of a stored event) change nothing.
    await write(
        redis_client,
        worker,
        moderation("m0", "quarantine", "ann", BASE + 5),
        steps[0][0],
    )
    await drain(worker)
    assert (await states(db))["ann"] == (30, False, False, at(BASE + 50))
    # Several in one batch: the newest in stream order decides, for each user.
    await write(
        redis_client,
        worker,
        moderation("b1", "quarantine", "bob", BASE + 60),
        moderation("c1", "ban", "cid", BASE + 61),
        moderation("b2", "ban", "bob", BASE + 62),
        moderation("c2", "unban", "cid", BASE + 63),
        moderation("c3", "quarantine", "cid", BASE + 64),
    )
    await drain(worker)
    now = await states(db)
    assert now["bob"] == (0, True, False, at(BASE + 62))  # never scored: a row with 0
    assert now["cid"] == (0, False, True, at(BASE + 64))
    assert await db.fetchval("SELECT count(*) FROM score_events") == 13
    assert (await redis_client.xpending(worker.stream, worker.group))["pending"] == 0


async def test_audit_columns_are_stored_and_a_revoke_leaves_the_score_alone(
    worker: Persister, redis_client: redis.asyncio.Redis, db: asyncpg.Connection
) -> None:
    await write(
        redis_client,
        worker,
        score("s1", "ann", 25, 1, BASE),
        moderation("q1", "quarantine", "ann", BASE + 1, by="mod-a", reason="spike",
                   request_id="req-q1", user_agent="console/1", jti="t1", iss="https://id"),
        moderation("r1", "revoke", "ann", BASE + 2, by="mod-b", reason="bot", revocation="rv1"),
        moderation("d1", "dismiss", "ann", BASE + 3, by="mod-c", reason="honest", flag="77"),
    )  # fmt: skip
    await drain(worker)
    rows = await db.fetch(
        "SELECT event_id, type, action, points, moderator, reason, revocation, flag,"
        " request_id, user_agent, jti, iss, revoked_by FROM score_events ORDER BY event_id"
    )
    got = {r["event_id"]: tuple(r.values())[1:] for r in rows}
    assert got["q1"] == (
        "quarantine", "quarantine", 0, "mod-a", "spike", None, None, "req-q1", "console/1",
        "t1", "https://id", None,
    )  # fmt: skip
    assert got["r1"][:7] == ("revoke", "revoke", 0, "mod-b", "bot", "rv1", None)
    assert got["d1"][:7] == ("dismiss", "dismiss", 0, "mod-c", "honest", None, 77)
    # The score API's revocation already took the points off users.score: the event does not.
    assert (await states(db))["ann"][:3] == (25, False, True)


async def open_flag(db: asyncpg.Connection, user: str, rule: str, first_seen: int) -> int:
    flag_id: int = await db.fetchval(
        "INSERT INTO user_flags (user_id, rule, window_seconds, observed, threshold,"
        " first_seen, last_seen) VALUES ($1, $2, 3600, 900, 500, $3, $3) RETURNING flag_id",
        user, rule, at(first_seen),
    )  # fmt: skip
    return flag_id


async def flags(db: asyncpg.Connection) -> dict[int, tuple[Any, ...]]:
    rows = await db.fetch("SELECT flag_id, state, decided_by, decided_at, decision FROM user_flags")
    return {r["flag_id"]: tuple(r.values())[1:] for r in rows}


async def test_bans_quarantines_and_revocations_action_open_flags_and_dismissals_close_them(
    worker: Persister, redis_client: redis.asyncio.Redis, db: asyncpg.Connection
) -> None:
    t = BASE + 1000
    ban = await open_flag(db, "f1", "ceiling", BASE)
    later = await open_flag(db, "f1", "outlier", t + 500)  # raised after the ban
    quarantine = await open_flag(db, "f2", "ceiling", BASE)
    revoke = await open_flag(db, "f3", "ceiling", BASE)
    dismissed = await open_flag(db, "f4", "ceiling", BASE)
    other_rule = await open_flag(db, "f4", "outlier", BASE)
    released = await open_flag(db, "f6", "ceiling", BASE)
    by_api = await open_flag(db, "f7", "ceiling", BASE)
    await db.execute(
        "UPDATE user_flags SET state = 'dismissed', decided_by = 'mod-api', decided_at = $2,"
        " decision = 'by the API' WHERE flag_id = $1",
        by_api, at(t - 1),
    )  # fmt: skip
    before_then_ban = await open_flag(db, "g", "ceiling", BASE)
    ban_then_dismiss = await open_flag(db, "h", "ceiling", BASE)
    await write(
        redis_client,
        worker,
        moderation("e1", "ban", "f1", t, by="mod-a", reason="farming"),
        moderation("e2", "quarantine", "f2", t, by="mod-b"),
        moderation("e3", "revoke", "f3", t, by="mod-c", reason="bot", revocation="rv-3"),
        moderation("e4", "dismiss", "f4", t, by="mod-d", reason="honest", flag=dismissed),
        moderation("e5", "quarantine", "f6", t - 10, by="mod-e", reason="q"),
        moderation("e6", "release", "f6", t, by="mod-e", reason="r"),
        moderation("e7", "dismiss", "f7", t, by="mod-f", reason="from the stream", flag=by_api),
        moderation("e8", "dismiss", "nobody", t, by="mod-g", flag=987654321),
        moderation("e9", "dismiss", "g", t, by="mod-h", reason="fine", flag=before_then_ban),
        moderation("ea", "ban", "g", t + 1, by="mod-h", reason="then cheated"),
        moderation("eb", "ban", "h", t, by="mod-i", reason="cheat"),
        moderation("ec", "dismiss", "h", t + 1, by="mod-i", reason="late", flag=ban_then_dismiss),
    )  # fmt: skip
    await drain(worker)
    decided = await flags(db)
    assert decided[ban] == ("actioned", "mod-a", at(t), "ban: farming")
    assert decided[later] == ("open", None, None, None)
    # f6 was quarantined (actioning it) before its release.
    assert decided[released] == ("actioned", "mod-e", at(t - 10), "quarantine: q")
    assert decided[quarantine] == ("actioned", "mod-b", at(t), "quarantine")
    assert decided[revoke] == ("actioned", "mod-c", at(t), "revoke: bot")
    assert decided[dismissed] == ("dismissed", "mod-d", at(t), "honest")
    assert decided[other_rule] == ("open", None, None, None)
    assert decided[by_api] == ("dismissed", "mod-api", at(t - 1), "by the API")
    assert decided[before_then_ban] == ("dismissed", "mod-h", at(t), "fine")
    assert decided[ban_then_dismiss] == ("actioned", "mod-i", at(t), "ban: cheat")
    # A release actions nothing: a new flag of f6 stays open after another release.
    fresh = await open_flag(db, "f6", "outlier", t + 5)
    await write(redis_client, worker, moderation("ed", "release", "f6", t + 10))
    await drain(worker)
    assert (await flags(db))[fresh] == ("open", None, None, None)
    # Redelivering every event changes nothing.
    await write(redis_client, worker, moderation("e4", "dismiss", "f4", t + 99, flag=other_rule))
    await drain(worker)
    assert (await flags(db))[other_rule] == ("open", None, None, None)


async def test_hostile_events_are_dead_lettered_with_a_reason_and_the_rest_stored(
    worker: Persister, redis_client: redis.asyncio.Redis, db: asyncpg.Connection
) -> None:
    hostile = {
        "h1": moderation("h1", "dismiss", "u", BASE, flag="12a"),
        "h2": moderation("h2", "dismiss", "u", BASE, flag="\u0661"),
        "h3": moderation("h3", "hide", "u", BASE),
        "h4": moderation("h4", "quarantine", "u", BASE) | {"points": "50"},
        "h5": moderation("h5", "revoke", "u", BASE),
        "h6": moderation("h6", "dismiss", "u", BASE),
        "h7": moderation("h7", "ban", "u", BASE, reason="nul\x00"),
    }
    await write(
        redis_client,
        worker,
        moderation("ok1", "quarantine", "u", BASE + 1),
        *hostile.values(),
        moderation("ok2", "dismiss", "u", BASE + 2, flag="5"),
    )
    await drain(worker)
    dead: Any = await redis_client.xrange(worker.keys.dead_letters)
    errors = {f[b"event_id"].decode(): f[b"dead_error"].decode() for _, f in dead}
    assert sorted(errors) == sorted(hostile)
    assert "flag must be a decimal integer" in errors["h1"]
    assert "flag must be a decimal integer" in errors["h2"]
    assert "unknown event type 'hide'" in errors["h3"]
    assert "carries no points" in errors["h4"]
    assert "names its revocation" in errors["h5"]
    assert "names its flag" in errors["h6"]
    assert "NUL" in errors["h7"]
    stored = await db.fetch("SELECT event_id FROM score_events ORDER BY event_id")
    assert [r["event_id"] for r in stored] == ["ok1", "ok2"]
    assert (await states(db))["u"][1:3] == (False, True)
    assert (await redis_client.xpending(worker.stream, worker.group))["pending"] == 0


# -- Revoked events, reconcile and rebuild -------------------------------------------------


@pytest.fixture
async def played(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[tuple[Api, Persister, PersisterSettings]]:
    """The real score API (default boards: all-time, weekly, daily) and a persister that
    stored 36 awards of 6 users."""
    await migrate(database_url)
    async with (
        persister_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        await api.load(36, users=6)
        await drain(worker)
        settings = PersisterSettings(
            redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
        )
        yield api, worker, settings


def current_periods(settings: PersisterSettings, now: int) -> list[tuple[str, str, int]]:
    slots = Slots(settings.board_family(), settings.board_retention_periods).current(now)
    return [(s.board_id, s.period.id, s.expire_at_ms) for s in slots]


async def redis_now(client: redis.asyncio.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def quarantine(
    client: redis.asyncio.Redis,
    worker: Persister,
    settings: PersisterSettings,
    user: str,
) -> int:
    """What a quarantine does (moderate.lua): every entry of the user moves to its hidden
    sorted set, same member and score, and the stream gets the event. Returns its time."""
    keys = worker.keys
    now = await redis_now(client)
    places: list[tuple[str, str, str, int | None]] = [
        (keys.board, keys.hidden_board, keys.members, None)
    ]
    for board_id, period, expire_at in current_periods(settings, now):
        board, members = keys.period_keys(board_id, period)
        places.append((board, keys.hidden_period_board(board_id, period), members, expire_at))
    for board, hidden, members, expire in places:
        member: Any = await client.hget(members, user)
        stored = await client.zscore(board, member)
        assert stored is not None
        await client.zrem(board, member)
        await client.zadd(hidden, {member: stored})
        if expire is not None:
            await client.pexpireat(hidden, expire)
    await client.hset(keys.quarantined, user, now)
    await write(client, worker, moderation(f"quarantine-{user}", "quarantine", user, now))
    await drain(worker)
    return now


async def test_revoked_events_are_left_out_of_period_totals_and_reconcile(
    played: tuple[Api, Persister, PersisterSettings],
    redis_client: redis.asyncio.Redis,
    db: asyncpg.Connection,
) -> None:
    api, _, settings = played
    keys = api.keys
    events = await db.fetch(
        "SELECT event_id, points, periods FROM score_events WHERE user_id = 'u2' ORDER BY seq"
    )
    revoked = events[:2]
    points = sum(r["points"] for r in revoked)
    tags = revoked[0]["periods"].split()
    before = {t: await db.fetch(PERIOD_TOTALS, t) for t in tags}
    # The score API's revocation (services.score_api.revocations), its PostgreSQL half.
    await db.execute(
        "UPDATE score_events SET revoked_by = 'rev-1' WHERE event_id = ANY($1::text[])",
        [r["event_id"] for r in revoked],
    )
    await db.execute("UPDATE users SET score = score - $1 WHERE user_id = 'u2'", points)
    for tag in tags:
        totals = {r["user_id"]: r["score"] for r in await db.fetch(PERIOD_TOTALS, tag)}
        was = {r["user_id"]: r["score"] for r in before[tag]}
        in_tag = sum(r["points"] for r in revoked if tag in r["periods"].split())
        assert totals == was | {"u2": was["u2"] - in_tag}
    # Redis still counts them: reconcile says so, on the all-time board and each period.
    found = await reconcile(settings, out=io.StringIO())
    assert {(d.user_id, d.board.split()[0]) for d in found} == {
        ("u2", ALL_TIME),
        *(("u2", t.split("=")[0]) for t in tags),
    }
    # Redis's half: the points come off every board the events counted in.
    member: Any = await redis_client.hget(keys.members, "u2")
    await redis_client.zincrby(keys.board, points, member)
    for tag in tags:
        board_id, _, period = tag.partition("=")
        board, members = keys.period_keys(board_id, period)
        in_tag = sum(r["points"] for r in revoked if tag in r["periods"].split())
        await redis_client.zincrby(board, in_tag, await redis_client.hget(members, "u2"))  # type: ignore[arg-type]
    assert await reconcile(settings, out=io.StringIO()) == []


async def test_reconcile_finds_a_quarantined_users_totals_on_the_hidden_boards(
    played: tuple[Api, Persister, PersisterSettings],
    redis_client: redis.asyncio.Redis,
    db: asyncpg.Connection,
) -> None:
    api, worker, settings = played
    await quarantine(redis_client, worker, settings, "u1")
    assert await redis_client.zcard(api.keys.hidden_board) == 1
    assert (await states(db))["u1"][1:3] == (False, True)
    out = io.StringIO()
    assert await reconcile(settings, out=out) == []
    assert out.getvalue().strip() == "6 users on the board, 6 in postgres, 0 differ"
    # A hidden entry that disagrees is found like any other.
    member: Any = await redis_client.hget(api.keys.members, "u1")
    await redis_client.zincrby(api.keys.hidden_board, -5, member)
    [difference] = await reconcile(settings, out=io.StringIO())
    assert (difference.user_id, difference.redis) == ("u1", difference.postgres + 5)  # type: ignore[operator]


async def hidden_snapshot(
    client: redis.asyncio.Redis, keys: BoardKeys, settings: PersisterSettings
) -> dict[str, Any]:
    snap: dict[str, Any] = {}
    singles = (keys.board, keys.hidden_board)
    for key in singles:
        snap[key] = await client.zrange(key, 0, -1, withscores=True)
    for key in (keys.members, keys.names):
        snap[key] = await client.hgetall(key)
    snap[keys.quarantined] = sorted(await client.hkeys(keys.quarantined))
    for board_id, period, _ in current_periods(settings, await redis_now(client)):
        board, members = keys.period_keys(board_id, period)
        hidden = keys.hidden_period_board(board_id, period)
        for key in (board, hidden):
            snap[key] = await client.zrange(key, 0, -1, withscores=True)
        snap[members] = await client.hgetall(members)
    return snap


async def test_rebuild_puts_a_quarantined_user_on_the_hidden_boards(
    played: tuple[Api, Persister, PersisterSettings], redis_client: redis.asyncio.Redis
) -> None:
    api, worker, settings = played
    keys = api.keys
    quarantined_at = await quarantine(redis_client, worker, settings, "u4")
    before = await hidden_snapshot(redis_client, keys, settings)
    assert len(before[keys.hidden_board]) == 1
    await redis_client.unlink(*before, keys.seq)
    assert await rebuild(settings, out=io.StringIO()) == 6
    assert await hidden_snapshot(redis_client, keys, settings) == before
    # When the quarantine came (users.moderated_at), as moderate.lua records it.
    assert int(await redis_client.hget(keys.quarantined, "u4") or 0) == quarantined_at
    for board_id, period, _ in current_periods(settings, await redis_now(redis_client)):
        assert await redis_client.pttl(keys.hidden_period_board(board_id, period)) > 0
    leftovers = [k async for k in redis_client.scan_iter(match=f"{keys.tag}:*rebuild*")]
    assert leftovers == []
    # A board whose only entries are hidden is not empty: no unforced rebuild replaces it.
    await redis_client.unlink(keys.board)
    with pytest.raises(RebuildRefused, match="not empty"):
        await rebuild(settings, out=io.StringIO())
    await rebuild(settings, force=True, out=io.StringIO())
    assert await hidden_snapshot(redis_client, keys, settings) == before
    assert await reconcile(settings, out=io.StringIO()) == []


# -- Archives -----------------------------------------------------------------------------

TENS = Schedule("interval", interval_seconds=10)


async def test_an_archive_leaves_out_quarantined_users_and_revoked_points(
    database_url: str, db: asyncpg.Connection
) -> None:
    await migrate(database_url)
    period = TENS.at(BASE)
    tag = period_tag("tens", period.id)
    awards = [("ann", 10, None), ("bob", 30, None), ("cid", 25, None), ("cid", 50, "rev-1"),
              ("dan", 40, None), ("eve", 60, None), ("fay", 70, "rev-2")]  # fmt: skip
    for seq, (user, points, revoked) in enumerate(awards, 1):
        await db.execute(
            "INSERT INTO score_events (event_id, stream_id, seq, type, user_id, name, action,"
            " points, score_after, idempotency_key, client_ip, created_at, periods, revoked_by)"
            " VALUES ($1, $2, $3, 'score', $4, $4, 'coin', $5, $5, $1, '', now(), $6, $7)",
            f"e{seq}", f"{seq}-0", seq, user, points, tag, revoked,
        )  # fmt: skip
    await db.execute(
        "INSERT INTO users (user_id, name, score, banned, quarantined) VALUES"
        " ('dan', 'Dan', 40, false, true), ('eve', 'Eve', 60, true, false)"
    )
    assert await archive_period(db, "tens", period) == 3
    rows = await db.fetch(
        "SELECT rank, user_id, score FROM board_archives WHERE period = $1 ORDER BY rank",
        period.id,
    )
    assert [tuple(r.values()) for r in rows] == [(1, "bob", 30), (2, "cid", 25), (3, "ann", 10)]


BOARDS: dict[str, Any] = {"all-time": {"reset": "never"}, "daily": {"reset": "daily"}}


@pytest.fixture
async def archived(
    redis_url: str, database_url: str, key_prefix: str, db: asyncpg.Connection
) -> AsyncIterator[tuple[ScoreApi, str]]:
    """An archived daily period past retention: a1..a8 scoring 80..10; the API serving it."""
    await migrate(database_url)
    daily = Schedule("daily")
    period = daily.previous(daily.previous(daily.at(int(time.time() * 1000))))
    for rank in range(1, 9):
        await db.execute(
            "INSERT INTO board_archives VALUES ('daily', $1, $2, $3, $4, $5, now())",
            period.id, rank, f"a{rank}", f"A{rank}", 90 - 10 * rank,
        )  # fmt: skip
        await db.execute("INSERT INTO users (user_id, name, score) VALUES ($1, $1, 0)", f"a{rank}")
    await db.execute(
        "INSERT INTO board_periods_closed (board_id, period, starts_at, ends_at, entries)"
        " VALUES ('daily', $1, now(), now(), 8)",
        period.id,
    )
    async with running_api(
        redis_url=redis_url, redis_key_prefix=key_prefix, boards=BOARDS, database_url=database_url
    ) as api:
        yield api, period.id


async def page(api: ScoreApi, period: str, **params: int) -> dict[str, Any]:
    query: dict[str, str | int] = {"board": "daily", "period": period, **params}
    response = await api.http.get("/api/score-board", params=query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ranking(body: dict[str, Any]) -> list[tuple[int, str]]:
    return [(e["rank"], e["user_id"]) for e in body["board"]]


async def assert_shown(api: ScoreApi, period: str, users: list[str]) -> None:
    """Every page and every rank look-up shows exactly ``users``, ranked 1.. in order."""
    expected = list(enumerate(users, 1))
    full = await page(api, period, limit=100)
    assert (ranking(full), full["total"], full["final"]) == (expected, len(users), True)
    for offset in range(len(users) + 2):
        for limit in (1, 2, 3):
            got = await page(api, period, offset=offset, limit=limit)
            assert ranking(got) == expected[offset : offset + limit], (offset, limit)
            assert got["total"] == len(users)
    for rank, user in expected:
        for around in (0, 1, 2):
            response = await api.http.get(
                f"/api/users/{user}/rank",
                params={"board": "daily", "period": period, "around": around},
            )
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["rank"], body["user_id"], body["final"]) == (rank, user, True)
            window = expected[max(0, rank - 1 - around) : rank + around]
            assert [(e["rank"], e["user_id"]) for e in body["around"]] == [
                w for w in window if w[1] != user
            ]
            assert "corrections" not in body
    for gone in {f"a{i}" for i in range(1, 9)} - set(users):
        response = await api.http.get(
            f"/api/users/{gone}/rank", params={"board": "daily", "period": period}
        )
        assert response.status_code == 404, gone


async def test_archived_reads_leave_out_users_hidden_since_and_ranks_close_up(
    archived: tuple[ScoreApi, str], db: asyncpg.Connection
) -> None:
    api, period = archived
    everyone = [f"a{i}" for i in range(1, 9)]
    await assert_shown(api, period, everyone)
    await db.execute("UPDATE users SET quarantined = true WHERE user_id = 'a3'")
    await db.execute("UPDATE users SET banned = true WHERE user_id = 'a6'")
    await assert_shown(api, period, ["a1", "a2", "a4", "a5", "a7", "a8"])
    # Scores and names are the archive's; only the ranks close up.
    top = (await page(api, period, offset=2, limit=1))["board"]
    assert top == [{"rank": 3, "user_id": "a4", "name": "A4", "score": 50}]
    # Released: back in place. Then others hidden, at both ends.
    await db.execute("UPDATE users SET quarantined = false WHERE user_id = 'a3'")
    await assert_shown(api, period, ["a1", "a2", "a3", "a4", "a5", "a7", "a8"])
    await db.execute("UPDATE users SET quarantined = true WHERE user_id IN ('a1', 'a8')")
    await assert_shown(api, period, ["a2", "a3", "a4", "a5", "a7"])
    await db.execute("UPDATE users SET quarantined = true, banned = false")
    await assert_shown(api, period, [])


async def test_archived_pages_show_the_periods_corrections(
    archived: tuple[ScoreApi, str], db: asyncpg.Connection
) -> None:
    api, period = archived
    assert (await page(api, period))["corrections"] == []
    for revocation, user, points, created in (
        ("rev-2", "a2", 15, BASE + 1_000),
        ("rev-1", "a5", 7, BASE + 250),
        ("rev-3", "a3", 40, BASE + 2_000),
    ):
        await db.execute(
            "INSERT INTO revocations (revocation_id, user_id, since, until, up_to_seq, events,"
            " points, boards, reason, moderator) VALUES ($1, $2, now(), now(), 9, 1, $3,"
            " '{}'::jsonb, 'bot', 'mod')",
            revocation, user, points,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO archive_corrections (board_id, period, revocation_id, user_id, points,"
            " created_at) VALUES ('daily', $1, $2, $3, $4, $5)",
            period, revocation, user, points, at(created),
        )  # fmt: skip
    await db.execute("UPDATE users SET quarantined = true WHERE user_id = 'a3'")
    body = await page(api, period, offset=3, limit=2)
    assert body["corrections"] == [
        {"user_id": "a5", "points": 7, "revocation_id": "rev-1", "at": "2027-01-15T08:00:00.250Z"},
        {"user_id": "a2", "points": 15, "revocation_id": "rev-2", "at": "2027-01-15T08:00:01.000Z"},
    ]  # a quarantined user's correction would betray them: left out, as they are
    assert ranking(body) == [(4, "a5"), (5, "a6")]
    # A period Redis still keeps is read from Redis: no corrections there.
    yesterday = Schedule("daily").following(Schedule("daily").named(period))
    kept = await page(api, yesterday.id)
    assert "corrections" not in kept
