"""``persister rebuild`` against real servers: the board, names and tie-breaks come back, and
the board it replaces is freed without blocking Redis."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio

from devstack.servers import Server
from services.persister.migrate import migrate
from services.persister.rebuild import RebuildRefused, rebuild
from services.persister.settings import PersisterSettings
from shared.formats import decode_member, encode_member
from shared.keys import BoardKeys
from tests.persister_fixtures import ROOT, Api, drain, open_worker, running_api, wait_until


@pytest.fixture
async def persisted(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[tuple[Api, PersisterSettings]]:
    """A board of 12 users with ties, fully persisted."""
    await migrate(database_url)
    async with (
        running_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        await api.load(60, users=12)  # users i and i+3k often tie: the tie-break matters
        await drain(worker)
        settings = PersisterSettings(
            redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
        )
        yield api, settings


async def snapshot(client: redis.asyncio.Redis, api: Api) -> dict[str, Any]:
    keys = api.keys
    return {
        "board": await client.zrange(keys.board, 0, -1, withscores=True),
        "members": await client.hgetall(keys.members),
        "names": await client.hgetall(keys.names),
    }


async def test_rebuild_after_wiping_redis_reproduces_the_board(
    persisted: tuple[Api, PersisterSettings], redis_client: redis.asyncio.Redis
) -> None:
    api, settings = persisted
    keys = api.keys
    before = await snapshot(redis_client, api)
    seq = int(await redis_client.get(keys.seq) or 0)
    await redis_client.delete(keys.board, keys.members, keys.names, keys.seq)
    out = io.StringIO()
    assert await rebuild(settings, out=out, chunk=5) == 12
    assert await snapshot(redis_client, api) == before  # same scores, same order, same names
    highest = max(decode_member(m.decode())[0] for m, _ in before["board"])
    assert int(await redis_client.get(keys.seq) or 0) == highest <= seq
    lines = out.getvalue().splitlines()
    assert lines[0] == f"rebuilding 12 users into {keys.board}"
    assert lines[1:3] == ["  5/12", "  10/12"]
    # The default boards: the all-time board, then the current week and day.
    assert lines[-3].startswith("rebuilt 12 users")
    assert lines[-2].startswith("rebuilt weekly ")
    assert lines[-1].startswith("rebuilt daily ")
    # New updates sort after every rebuilt one.
    assert (await api.post("u0")) is not None
    member: Any = await redis_client.hget(keys.members, "u0")
    assert decode_member(member.decode())[0] > highest
    assert await redis_client.exists(keys.rebuild_board, keys.rebuild_members) == 0


async def test_rebuild_refuses_a_non_empty_board_unless_forced(
    persisted: tuple[Api, PersisterSettings], redis_client: redis.asyncio.Redis
) -> None:
    api, settings = persisted
    before = await snapshot(redis_client, api)
    await redis_client.zadd(api.keys.board, {"0000000000000999:stray": -5})
    with pytest.raises(RebuildRefused, match="not empty"):
        await rebuild(settings, out=io.StringIO())
    await rebuild(settings, force=True, out=io.StringIO())
    assert await snapshot(redis_client, api) == before  # the stray entry is gone


async def test_rebuild_command_refuses_with_exit_2_then_forces(
    persisted: tuple[Api, PersisterSettings],
) -> None:
    _, settings = persisted
    env = dict(
        os.environ,
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "services.persister", "rebuild", *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )

    refused = await asyncio.to_thread(run)
    assert refused.returncode == 2
    assert "refused" in refused.stderr
    forced = await asyncio.to_thread(run, "--force")
    assert forced.returncode == 0, forced.stderr
    assert "rebuilt 12 users" in forced.stdout


async def test_a_forced_rebuild_frees_the_replaced_board_in_the_background(
    own_redis: Server, database_url: str, key_prefix: str
) -> None:
    # A server of its own: the lazy-free counter is server-wide, so no other test moves it.
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO users (user_id, name, score, last_seq) VALUES ('a', 'A', 5, 1)"
        )
    finally:
        await conn.close()
    settings = PersisterSettings(
        redis_url=own_redis.url, database_url=database_url, redis_key_prefix=key_prefix
    )
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        # Only an explicit UNLINK may free lazily here (Valkey 8 defaults these to yes).
        for name in ("lazyfree-lazy-server-del", "lazyfree-lazy-user-del"):
            await client.config_set(name, "no")
        keys = BoardKeys(key_prefix, "global")
        big = {encode_member(i, f"old{i}"): -i for i in range(1, 5001)}
        await client.zadd(keys.board, big)
        await client.hset(keys.members, mapping={f"old{i}": "m" for i in range(5000)})
        await client.hset(keys.names, mapping={f"old{i}": "Old" for i in range(5000)})

        async def freed() -> int:
            memory = await client.info("memory")
            assert "lazyfreed_objects" in memory  # Redis >= 6.2 and Valkey report it
            return int(memory["lazyfreed_objects"])

        before = await freed()
        assert await rebuild(settings, force=True, out=io.StringIO()) == 1
        assert await client.zrange(keys.board, 0, -1) == [encode_member(1, "a").encode()]

        async def background_frees() -> bool:
            return await freed() - before >= 3  # the old board, members and names

        await wait_until(background_frees, "the replaced board to be freed lazily", within=10)
    finally:
        await client.aclose()
