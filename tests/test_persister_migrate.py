"""The migration runner against a real PostgreSQL: order, idempotence, concurrency, refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from services.persister.migrate import MigrationError, load, migrate
from tests.persister_fixtures import ROOT


async def tables(database_url: str) -> set[str]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_bundled_migrations_create_the_schema_once(database_url: str) -> None:
    assert await migrate(database_url) == [m.version for m in load()]
    assert {"users", "score_events", "stream_checkpoints", "schema_migrations"} <= await tables(
        database_url
    )
    assert await migrate(database_url) == []
    conn = await asyncpg.connect(database_url)
    try:
        index = await conn.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'score_events_user_created'"
        )
    finally:
        await conn.close()
    assert "(user_id, created_at, seq)" in index


async def test_proof_of_action_columns_are_nullable_for_older_events(database_url: str) -> None:
    await migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_name = 'score_events'"
            " AND column_name IN ('ticket', 'duration_ms', 'reporter')"
        )
    finally:
        await conn.close()
    assert {r["column_name"]: (r["data_type"], r["is_nullable"]) for r in rows} == {
        "ticket": ("text", "YES"),
        "duration_ms": ("bigint", "YES"),
        "reporter": ("text", "YES"),
    }


async def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(4)))
    assert sorted(results, key=len) == [[], [], [], [m.version for m in load()]]


async def test_new_files_apply_in_order_and_each_runs_in_its_own_transaction(
    database_url: str, tmp_path: Path
) -> None:
    directory = write(
        tmp_path / "m",
        {
            "0001_first.sql": "CREATE TABLE a (x int);",
            "0002_second.sql": "INSERT INTO a VALUES (1);",
        },
    )
    assert await migrate(database_url, directory) == [1, 2]
    write(directory, {"0003_broken.sql": "INSERT INTO a VALUES (2); SELECT nonsense;"})
    with pytest.raises(asyncpg.PostgresError):
        await migrate(database_url, directory)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM a") == 1  # 0003 rolled back whole
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 2
    finally:
        await conn.close()


async def test_an_applied_file_that_changed_is_refused(database_url: str, tmp_path: Path) -> None:
    directory = write(tmp_path / "m", {"0001_first.sql": "CREATE TABLE a (x int);"})
    await migrate(database_url, directory)
    write(directory, {"0001_first.sql": "CREATE TABLE a (x bigint);"})
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(database_url, directory)


async def test_unknown_applied_versions_are_refused(database_url: str, tmp_path: Path) -> None:
    await migrate(database_url, write(tmp_path / "new", {"0001_a.sql": "", "0002_b.sql": ""}))
    with pytest.raises(MigrationError, match="does not know"):
        await migrate(database_url, write(tmp_path / "old", {"0001_a.sql": ""}))


@pytest.mark.parametrize(
    ("files", "error"),
    [
        ({"0001_a.sql": "", "0003_c.sql": ""}, "without gaps"),
        ({"1_a.sql": ""}, "bad migration file name"),
        ({"0001_A.sql": ""}, "bad migration file name"),
    ],
)
def test_malformed_migration_sets_are_refused(
    tmp_path: Path, files: dict[str, str], error: str
) -> None:
    with pytest.raises(MigrationError, match=error):
        load(write(tmp_path / "m", files))


async def test_migrate_command_is_idempotent(database_url: str) -> None:
    env = dict(os.environ, DATABASE_URL=database_url)
    command = [sys.executable, "-m", "services.persister", "migrate"]
    first = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert first.returncode == 0, first.stderr
    assert f"applied {[m.version for m in load()]}" in first.stdout
    second = await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert second.returncode == 0, second.stderr
    assert "schema is up to date" in second.stdout
