"""Moderation events survive a persister SIGKILL: while the real score API takes awards,
users are quarantined, released, banned and unbanned by the real script (shared.moderator,
``moderate.lua``) and revoke / dismiss events go straight onto the stream (version 3); the
persister process is killed three times in the middle of a batch and restarted. At the end
every event is in PostgreSQL once, each user's state is the last one Redis gave, the flags
are decided, and ``reconcile`` finds nothing."""

from __future__ import annotations

import asyncio
import io
import itertools
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from services.persister.migrate import migrate
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from shared.boards import Slots
from shared.formats import EventType
from shared.moderation import State
from shared.moderator import Moderator
from tests.persister_fixtures import Api, pending_count, persisters, running_api, wait_until
from tests.test_persister_moderation import moderation

# The load's users (u0..u19) take turns being moderated: each action of the cycle, in turn.
MODERATED = [f"u{i}" for i in range(12, 20)]
CYCLE = [EventType.QUARANTINE, EventType.RELEASE, EventType.QUARANTINE, EventType.BAN]
CYCLE += [EventType.UNBAN, EventType.BAN, EventType.QUARANTINE]  # refused: banned
CYCLE += [EventType.UNBAN, EventType.QUARANTINE]


@dataclass
class Moderation:
    """What the moderators did, to check PostgreSQL against."""

    done: int = 0  # state events the script appended
    state: dict[str, State] = field(default_factory=dict)  # as Redis left each user
    first_action: dict[str, str] = field(default_factory=dict)  # user -> decision
    direct: list[str] = field(default_factory=list)  # ids of the events written straight
    dismissed: dict[int, str] = field(default_factory=dict)  # flag -> reason


async def moderate(
    client: redis.asyncio.Redis,
    api: Api,
    settings: PersisterSettings,
    flags: dict[str, int],
    stop: asyncio.Event,
    done: Moderation,
) -> None:
    moderator = Moderator(client, api.keys)
    slots = Slots(settings.board_family(), settings.board_retention_periods)
    for i in itertools.count():
        if stop.is_set() and i >= 2 * len(MODERATED) * len(CYCLE):
            return  # at least two full cycles, and as long as the kills go on
        user = MODERATED[i % len(MODERATED)]
        action = CYCLE[(i // len(MODERATED)) % len(CYCLE)]
        seconds, micros = await client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        reason = f"{action} #{i}"
        extras = {"by": "mod", "reason": reason, "request_id": f"req-{i}"}
        result = await moderator(action, user, "10.9.9.9", extras, slots.retained(now))
        done.state[user] = result.state
        if result.changed:
            done.done += 1
            if action in (EventType.BAN, EventType.QUARANTINE):
                done.first_action.setdefault(user, f"{action}: {reason}")
        flagged = f"d{i}"
        if i % 5 == 0 and flagged in flags:  # a revocation's record and a dismissal
            event_id = f"dir{i:06d}"
            if i % 10 == 0:  # the API applied it: the event is its record
                event = moderation(
                    event_id, EventType.REVOKE, f"r{i}", now, by="mod", reason="bot",
                    revocation=f"rev-{i}",
                )  # fmt: skip
            else:
                event = moderation(
                    event_id, EventType.DISMISS, flagged, now, by="mod", reason=f"ok {i}",
                    flag=flags[flagged],
                )  # fmt: skip
                done.dismissed[flags[flagged]] = f"ok {i}"
            await client.xadd(api.keys.stream, event)  # type: ignore[arg-type]
            done.direct.append(event_id)
        await asyncio.sleep(0.01)


@pytest.fixture
async def setup(
    database_url: str, redis_url: str, key_prefix: str
) -> AsyncIterator[tuple[Api, PersisterSettings, dict[str, int]]]:
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        # An open flag for every moderated user, and for each dismissal target d<i>.
        flags: dict[str, int] = {}
        for user in [*MODERATED, *(f"d{i}" for i in range(0, 2000, 5))]:
            flags[user] = await conn.fetchval(
                "INSERT INTO user_flags (user_id, rule, window_seconds, observed, threshold,"
                " first_seen, last_seen) VALUES ($1, 'ceiling', 3600, 9000, 3000,"
                " now() - interval '1 hour', now()) RETURNING flag_id",
                user,
            )
    finally:
        await conn.close()
    settings = PersisterSettings(
        redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
    )
    async with running_api(redis_url, key_prefix) as api:
        yield api, settings, flags


async def test_moderation_events_survive_sigkill_mid_batch(
    setup: tuple[Api, PersisterSettings, dict[str, int]],
    tmp_path: Path,
    redis_url: str,
    database_url: str,
    key_prefix: str,
    redis_client: redis.asyncio.Redis,
) -> None:
    api, settings, flags = setup
    conn = await asyncpg.connect(database_url)

    async def stored() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM score_events"))

    done = Moderation()
    stop = asyncio.Event()
    try:
        async with persisters(
            tmp_path, redis_url, database_url, key_prefix, FLAG_INTERVAL_SECONDS="0"
        ) as spawn:
            process = spawn("p1", PERSISTER_BATCH_SIZE="25")
            load = asyncio.create_task(api.load_until(stop, concurrency=10))
            moderating = asyncio.create_task(
                moderate(redis_client, api, settings, flags, stop, done)
            )
            try:
                for _ in range(3):
                    since = await stored()

                    async def mid_batch(since: int = since) -> bool:
                        busy = await pending_count(redis_client, api.keys) > 0
                        return busy and await stored() > since

                    await wait_until(mid_batch, "the persister in the middle of a batch")
                    process.signal(signal.SIGKILL)
                    assert await process.wait_exit() == -signal.SIGKILL
                    process.start()
            finally:
                stop.set()
                await load
                await moderating
            # Two full cycles at least: 8 changes per user, then 7 (the cycle ends quarantined,
            # so the next one's first quarantine is unchanged; the one after a ban is refused).
            assert done.done >= 15 * len(MODERATED)
            moderation_events = done.done + len(done.direct)
            total = api.accepted + moderation_events

            async def drained() -> bool:
                return await stored() >= total

            await wait_until(drained, f"{total} events in postgres")
            assert await stored() == total
            assert await pending_count(redis_client, api.keys) == 0
            assert await redis_client.xlen(api.keys.dead_letters) == 0
            # Every moderation event once, with its audit columns.
            types = await conn.fetch("SELECT type, count(*) AS n FROM score_events GROUP BY type")
            counts = {r["type"]: r["n"] for r in types}
            assert counts.pop("score") == api.accepted
            assert sum(counts.values()) == moderation_events
            assert counts["revoke"] + counts["dismiss"] == len(done.direct)
            direct = await conn.fetch(
                "SELECT event_id, reason, revocation, flag FROM score_events"
                " WHERE event_id = ANY($1::text[])",
                done.direct,
            )
            assert len(direct) == len(done.direct)
            assert all(r["reason"] for r in direct)
            unaudited = await conn.fetchval(
                "SELECT count(*) FROM score_events WHERE type IN ('ban', 'unban', 'quarantine',"
                " 'release') AND (moderator <> 'mod' OR reason IS NULL OR request_id IS NULL)"
            )
            assert unaudited == 0
            # Each user's state is the last one the script reported.
            rows = await conn.fetch(
                "SELECT user_id, banned, quarantined FROM users WHERE user_id = ANY($1::text[])",
                MODERATED,
            )
            states = {r["user_id"]: (r["banned"], r["quarantined"]) for r in rows}
            assert states == {
                user: (state == State.BANNED, state == State.QUARANTINED)
                for user, state in done.state.items()
            }
            # Flags: actioned by each user's first ban or quarantine, dismissed as asked.
            decided = await conn.fetch("SELECT flag_id, state, decision FROM user_flags")
            by_id = {r["flag_id"]: (r["state"], r["decision"]) for r in decided}
            for user in MODERATED:
                assert by_id[flags[user]] == ("actioned", done.first_action[user]), user
            for flag_id, reason in done.dismissed.items():
                assert by_id[flag_id] == ("dismissed", reason)
            assert len(done.dismissed) >= 10
            # Redis (public, hidden and banned places) agrees with PostgreSQL.
            assert await reconcile(settings, out=io.StringIO()) == []
            assert process.proc is not None
            assert process.proc.poll() is None
    finally:
        await conn.close()
