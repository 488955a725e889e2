"""``persister reconcile``: agreement passes, a planted difference is found and fails."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio

from services.persister.migrate import migrate
from services.persister.reconcile import Difference, compare, reconcile
from services.persister.settings import PersisterSettings
from tests.persister_fixtures import ROOT, Api, drain, open_worker, running_api


def test_compare_reports_every_kind_of_disagreement() -> None:
    assert compare({"a": 1}, {"a": 1}, {"a": 1}) == []
    assert compare(
        {"a": 1, "b": 2, "c": 3},
        {"a": 1, "b": 5, "d": 4},
        {"a": 1, "b": 5, "c": 3, "d": 4},
    ) == [
        Difference("b", 2, 5, 5),
        Difference("c", 3, None, 3),
        Difference("d", None, 4, 4),
    ]
    assert str(Difference("c", 3, None, 3)) == "c: redis=3 postgres=- events=3"


@pytest.fixture
async def persisted(
    redis_url: str, database_url: str, key_prefix: str
) -> AsyncIterator[tuple[Api, PersisterSettings]]:
    await migrate(database_url)
    async with (
        running_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        await api.load(40, users=8)
        await drain(worker)
        settings = PersisterSettings(
            redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
        )
        yield api, settings


async def test_agreeing_stores_have_no_differences(
    persisted: tuple[Api, PersisterSettings],
) -> None:
    _, settings = persisted
    out = io.StringIO()
    assert await reconcile(settings, out=out) == []
    assert out.getvalue().strip() == "8 users on the board, 8 in postgres, 0 differ"


async def test_planted_differences_are_printed_and_exit_non_zero(
    persisted: tuple[Api, PersisterSettings], redis_client: redis.asyncio.Redis
) -> None:
    api, settings = persisted
    member = await redis_client.hget(api.keys.members, "u1")
    assert member is not None
    await redis_client.zincrby(api.keys.board, -7, member)  # u1 gains 7 in Redis only
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE users SET score = score + 1 WHERE user_id = 'u2'")
        u1 = await conn.fetchval("SELECT score FROM users WHERE user_id = 'u1'")
    finally:
        await conn.close()
    out = io.StringIO()
    found = await reconcile(settings, out=out)
    assert [d.user_id for d in found] == ["u1", "u2"]
    assert f"u1: redis={u1 + 7} postgres={u1} events={u1}" in out.getvalue()
    env = dict(
        os.environ,
        REDIS_URL=settings.redis_url,
        DATABASE_URL=settings.database_url,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
    )
    command = [sys.executable, "-m", "services.persister", "reconcile"]
    result = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "u2: redis=" in result.stdout
    assert result.stdout.strip().endswith("2 differ")
