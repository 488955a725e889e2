"""Real servers for the suite: the configured Redis/PostgreSQL, or embedded ones started here.

``REDIS_URL`` / ``DATABASE_URL`` point the suite at existing servers; otherwise it starts its own
on loopback. Either way each run isolates itself: Redis keys under a per-test prefix (deleted at
the end of the session), PostgreSQL in databases created for the run (dropped at the end).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio

from devstack.servers import Server, start_postgres, start_redis
from tests.browser_fixtures import browser as browser
from tests.support import RUN_ID, new_prefix, prefixes_in_use, with_database


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session", autouse=True)
async def _delete_run_keys(redis_url: str) -> AsyncIterator[None]:
    yield
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        for prefix in prefixes_in_use():
            keys = [k async for k in client.scan_iter(match=f"{{{prefix}:*", count=1000)]
            if keys:
                await client.unlink(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def key_prefix() -> str:
    return new_prefix()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Server]:
    """A Redis server owned by one test, so the test may stop and restart it."""
    server = start_redis(tmp_path / "own-redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database, where test databases are made."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A new empty database for one test, dropped afterwards."""
    name = f"lb_test_{RUN_ID}_{new_prefix().rsplit('-', 1)[1]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(postgres_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[Server]:
    """A PostgreSQL server owned by one test, so the test may stop and restart it."""
    server = start_postgres(tmp_path / "own-postgres")
    try:
        yield server
    finally:
        server.stop()
