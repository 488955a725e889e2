"""The moderation state table (shared.moderation), every pair, and moderate.lua against it."""

from __future__ import annotations

import itertools

import pytest
import redis.asyncio

from shared.formats import EventType
from shared.keys import BoardKeys
from shared.moderation import FLAGS_AFTER, STATE_ACTIONS, Outcome, State, apply
from shared.moderator import Moderator

A, Q, B = State.ACTIVE, State.QUARANTINED, State.BANNED
TABLE = {
    (A, EventType.BAN): Outcome(B, True),
    (Q, EventType.BAN): Outcome(B, True),
    (B, EventType.BAN): Outcome(B, False),
    (A, EventType.UNBAN): Outcome(A, False),
    (Q, EventType.UNBAN): Outcome(Q, False),
    (B, EventType.UNBAN): Outcome(A, True),
    (A, EventType.QUARANTINE): Outcome(Q, True),
    (Q, EventType.QUARANTINE): Outcome(Q, False),
    (B, EventType.QUARANTINE): Outcome(B, False, "banned"),
    (A, EventType.RELEASE): Outcome(A, False),
    (Q, EventType.RELEASE): Outcome(A, True),
    (B, EventType.RELEASE): Outcome(B, False),
}


def test_the_table_covers_every_state_and_action() -> None:
    assert set(TABLE) == set(itertools.product(State, STATE_ACTIONS))
    for (state, action), outcome in TABLE.items():
        assert apply(state, action) == outcome, (state, action)


def test_a_recorded_action_determines_both_persisted_flags() -> None:
    for (_, action), outcome in TABLE.items():
        if outcome.changed:
            assert FLAGS_AFTER[action] == (outcome.state == B, outcome.state == Q)


@pytest.mark.parametrize("action", ["revoke", "dismiss", "score", "", "BAN"])
def test_anything_else_is_not_a_state_action(action: str) -> None:
    with pytest.raises(ValueError, match="not a state action"):
        apply(A, action)


async def into(moderator: Moderator, user: str, state: State) -> None:
    if state == B:
        await moderator(EventType.BAN, user, "", {})
    elif state == Q:
        await moderator(EventType.QUARANTINE, user, "", {})


@pytest.mark.parametrize(("state", "action"), sorted(TABLE))
async def test_moderate_lua_carries_out_the_table(
    redis_client: redis.asyncio.Redis, key_prefix: str, state: State, action: str
) -> None:
    keys = BoardKeys(key_prefix, "global")
    moderator = Moderator(redis_client, keys)
    await redis_client.zadd(keys.board, {"0000000000000001:u": -10})
    await redis_client.hset(keys.members, "u", "0000000000000001:u")
    await into(moderator, "u", state)
    events = await redis_client.xlen(keys.stream)
    expected = TABLE[(state, action)]
    done = await moderator(action, "u", "", {"by": "m"})
    assert (done.state, done.changed, done.status == "refused") == (
        expected.state,
        expected.changed,
        bool(expected.refused),
    )
    assert done.score == 10
    # Where the entry is follows the state: public, hidden, or kept aside by the ban.
    public = await redis_client.zscore(keys.board, "0000000000000001:u")
    hidden = await redis_client.zscore(keys.hidden_board, "0000000000000001:u")
    banned = await redis_client.hget(keys.banned, "u")
    assert (public is not None, hidden is not None, banned is not None) == (
        expected.state == A,
        expected.state == Q,
        expected.state == B,
    )
    assert await redis_client.hexists(keys.quarantined, "u") == (expected.state == Q)
    # Only an action that applied is an event.
    assert await redis_client.xlen(keys.stream) == events + (1 if expected.changed else 0)
