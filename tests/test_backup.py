"""Backups against real servers: the restore drill (score, back up, restore into a fresh
database, rebuild a fresh Redis, compare every board and rank, reconcile), and the refusals."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio
from prometheus_client import REGISTRY

from services.persister import backup
from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from shared import pgbin
from shared.boards import Slots
from shared.formats import EventType
from shared.keys import BoardKeys
from shared.moderator import Moderator
from tests.persister_fixtures import ROOT, drain, open_worker, running_api
from tests.support import RUN_ID, new_prefix, with_database

MIGRATIONS = len(list(Path(ROOT, "services/persister/migrations").glob("*.sql")))
NewDatabase = Callable[[], Awaitable[str]]


@pytest.fixture
async def new_database(postgres_url: str) -> AsyncIterator[NewDatabase]:
    """Creates empty databases on the test server; drops them all afterwards."""
    names: list[str] = []
    admin = await asyncpg.connect(postgres_url)

    async def create() -> str:
        name = f"lb_test_{RUN_ID}_{new_prefix().rsplit('-', 1)[1]}_restore"
        await admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return with_database(postgres_url, name)

    try:
        yield create
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def cli(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m services.persister ARGS`` as a real process: (exit code, stdout, stderr)."""
    env = os.environ | {"DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"} | (env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.persister",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def boards_of(client: redis.asyncio.Redis, prefix: str) -> dict[str, Any]:
    """Every sorted set (the boards: all-time, periods, hidden) and hash under ``prefix``,
    keyed by name without the prefix."""
    found: dict[str, Any] = {}
    async for raw in client.scan_iter(match=f"{{{prefix}:*", count=1000):
        key = raw.decode()
        kind: Any = await client.type(key)
        kind = kind.decode()
        name = key.replace(prefix, "PREFIX", 1)
        if kind == "zset":
            found[name] = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "hash" and name.rsplit(":", 1)[-1] in ("members", "names", "banned"):
            found[name] = await client.hgetall(key)
    return found


async def ranks_of(client: redis.asyncio.Redis, board: str) -> dict[bytes, Any]:
    members: Any = await client.zrange(board, 0, -1)
    return {m: await client.zrevrank(board, m) for m in members}


async def test_restore_drill_reproduces_every_board_and_rank(
    redis_url: str,
    database_url: str,
    key_prefix: str,
    redis_client: redis.asyncio.Redis,
    new_database: NewDatabase,
    tmp_path: Path,
) -> None:
    await migrate(database_url)
    settings = PersisterSettings(
        redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix
    )
    async with (
        running_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        await api.load(90, users=12)
        moderator = Moderator(redis_client, api.keys)
        slots = Slots(settings.board_family(), settings.board_retention_periods)
        seconds, micros = await redis_client.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        extras = {"by": "mod", "reason": "drill"}
        for action, user in ((EventType.BAN, "u1"), (EventType.QUARANTINE, "u2")):
            result = await moderator(action, user, "10.0.0.9", extras, slots.retained(now))
            assert result.changed
        await api.load(30, users=12)  # the quarantined user keeps scoring, hidden
        await drain(worker)
        await worker.trim()  # the checkpoint: the stream position the manifest records

        original = await boards_of(redis_client, key_prefix)
        # The all-time board, its hidden twin, the current week and day: more than one board.
        assert sum(1 for name in original if name.endswith((":board", "hidden"))) >= 2, original
        assert len([n for n, v in original.items() if isinstance(v, list)]) >= 4, original

        started = time.monotonic()
        code, out, err = await cli(database_url, "backup", str(tmp_path / "b1"))
        backup_seconds = time.monotonic() - started
        assert code == 0, err
        assert out.startswith(f"backed up to {tmp_path / 'b1'}")

        # The last-success gauge follows the backup_runs row.
        worker.backups._next = 0.0
        await worker.backups.publish()
        gauge = REGISTRY.get_sample_value("persister_last_backup_timestamp_seconds")
        assert gauge is not None
        assert abs(gauge - time.time()) < 60

    manifest = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    conn = await asyncpg.connect(database_url)
    try:
        checkpoints = await conn.fetch(
            "SELECT stream, consumer_group, persisted_below FROM stream_checkpoints"
        )
        events = await conn.fetchval("SELECT count(*) FROM score_events")
        runs = await conn.fetch("SELECT path, sha256, bytes FROM backup_runs")
    finally:
        await conn.close()
    assert manifest["stream_position"] == [dict(r) for r in checkpoints] != []
    assert (
        manifest["row_counts"]["score_events"] == events >= 100
    )  # the banned user's updates are refused
    assert manifest["row_counts"]["backup_runs"] == 0  # recorded after the dump
    assert manifest["migration"]["version"] == MIGRATIONS
    assert manifest["created_at"].endswith("Z")
    assert [dict(r) for r in runs] == [
        {
            "path": str(tmp_path / "b1"),
            "sha256": manifest["dump"]["sha256"],
            "bytes": manifest["dump"]["bytes"],
        }
    ]

    fresh = await new_database()
    started = time.monotonic()
    code, out, err = await cli(fresh, "restore", str(tmp_path / "b1"))
    restore_seconds = time.monotonic() - started
    assert code == 0, err
    assert manifest["created_at"] in out
    assert manifest["stream_position"][0]["persisted_below"] in out
    code, out, err = await cli(fresh, "migrate")  # the runbook's next step: nothing to apply
    assert (code, out.strip()) == (0, "schema is up to date"), err

    fresh_prefix = new_prefix()
    restored = PersisterSettings(
        redis_url=redis_url, database_url=fresh, redis_key_prefix=fresh_prefix
    )
    await rebuild(restored, out=io.StringIO())
    rebuilt = await boards_of(redis_client, fresh_prefix)
    assert rebuilt == original
    for name, value in original.items():
        if isinstance(value, list):
            board = name.replace("PREFIX", key_prefix, 1)
            again = name.replace("PREFIX", fresh_prefix, 1)
            assert await ranks_of(redis_client, again) == await ranks_of(redis_client, board)
    assert await reconcile(restored, out=io.StringIO()) == []
    keys = BoardKeys(fresh_prefix, restored.board_id)
    assert await redis_client.hexists(keys.banned, "u1")
    assert await redis_client.zcard(keys.hidden_board) == 1  # u2, quarantined
    size = manifest["dump"]["bytes"]
    timing = f"backup {backup_seconds:.2f}s, restore {restore_seconds:.2f}s"
    print(f"\ndrill: {events} events, dump {size} bytes, {timing}")


@pytest.fixture
async def migrated(database_url: str) -> str:
    await migrate(database_url)
    return database_url


async def test_backup_refuses_a_non_empty_directory_unless_forced(
    migrated: str, tmp_path: Path
) -> None:
    target = tmp_path / "b"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, out, err = await cli(migrated, "backup", str(target))
    assert (code, out) == (2, "")
    assert err.startswith("refused:")
    assert "not empty" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]
    code, _, err = await cli(migrated, "backup", str(target), "--force")
    assert code == 0, err
    assert {"leaderboard.dump", "manifest.json", "notes.txt"} == {p.name for p in target.iterdir()}
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = await cli(migrated, "backup", str(a_file))
    assert code == 2
    assert "not a directory" in err
    assert "Traceback" not in err


async def test_restore_refuses_a_non_empty_database_unless_forced(
    migrated: str, tmp_path: Path, new_database: NewDatabase
) -> None:
    assert (await cli(migrated, "backup", str(tmp_path / "b")))[0] == 0
    code, out, err = await cli(migrated, "restore", str(tmp_path / "b"))  # into itself
    assert (code, out) == (2, "")
    assert "not empty" not in err
    assert "table(s) in its public schema" in err
    assert "Traceback" not in err
    other = await new_database()
    conn = await asyncpg.connect(other)
    try:
        await conn.execute("CREATE TABLE keepsake (x int)")
    finally:
        await conn.close()
    code, _, err = await cli(other, "restore", str(tmp_path / "b"))
    assert code == 2
    assert "1 table(s)" in err
    # --force replaces: the backed-up tables arrive (keepsake, not in the dump, stays).
    code, _, err = await cli(other, "restore", str(tmp_path / "b"), "--force")
    assert code == 0, err
    code, _, err = await cli(other, "restore", str(tmp_path / "b"), "--force")  # twice: --clean
    assert code == 0, err
    conn = await asyncpg.connect(other)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") > 0
    finally:
        await conn.close()


async def test_restore_refuses_a_tampered_dump_and_a_bad_manifest(
    migrated: str, tmp_path: Path, new_database: NewDatabase
) -> None:
    source = tmp_path / "good"
    assert (await cli(migrated, "backup", str(source)))[0] == 0
    fresh = await new_database()

    async def refused(directory: Path) -> str:
        code, out, err = await cli(fresh, "restore", str(directory))
        assert (code, out) == (2, ""), err
        assert err.startswith("refused:")
        assert "Traceback" not in err
        return err

    tampered = tmp_path / "tampered"
    shutil.copytree(source, tampered)
    data = bytearray((tampered / "leaderboard.dump").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    (tampered / "leaderboard.dump").write_bytes(bytes(data))
    assert "sha256" in await refused(tampered)

    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    (truncated / "leaderboard.dump").write_bytes(data[:100])
    assert "bytes, the manifest says" in await refused(truncated)

    no_dump = tmp_path / "no-dump"
    shutil.copytree(source, no_dump)
    (no_dump / "leaderboard.dump").unlink()
    assert "missing" in await refused(no_dump)

    missing = tmp_path / "missing"
    shutil.copytree(source, missing)
    (missing / "manifest.json").unlink()
    assert "manifest.json is missing" in await refused(missing)
    assert "manifest.json is missing" in await refused(tmp_path / "nowhere")

    manifest = json.loads((source / "manifest.json").read_text())
    garbled: list[bytes] = [
        b"{not json",
        b"",
        b"\xff\xfe\x00",
        b"[]",
        json.dumps(manifest | {"format_version": 99}).encode(),
        json.dumps(manifest | {"format": "something-else"}).encode(),
        json.dumps({k: v for k, v in manifest.items() if k != "dump"}).encode(),
        json.dumps(manifest | {"dump": manifest["dump"] | {"file": "../../etc/passwd"}}).encode(),
        json.dumps(manifest | {"dump": manifest["dump"] | {"sha256": "zz"}}).encode(),
        json.dumps(manifest | {"dump": manifest["dump"] | {"bytes": -1}}).encode(),
        json.dumps(manifest | {"extra": 1}).encode(),
        b"1e999999",
    ]
    for i, raw in enumerate(garbled):
        bad = tmp_path / f"garbled{i}"
        shutil.copytree(source, bad)
        (bad / "manifest.json").write_bytes(raw)
        assert "not a valid manifest" in await refused(bad), raw
    # An unreadable pg_dump version is no reason to refuse: the server's major decides.
    odd = tmp_path / "odd-version"
    shutil.copytree(source, odd)
    (odd / "manifest.json").write_text(json.dumps(manifest | {"pg_dump_version": "¿?"}))
    code, _, err = await cli(await new_database(), "restore", str(odd))
    assert code == 0, err
    # Nothing was restored by any refusal.
    conn = await asyncpg.connect(fresh)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        )
    finally:
        await conn.close()


def fake_backup(root: Path, name: str, created_at: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "leaderboard.dump").write_bytes(b"x")
    manifest = {"created_at": created_at}  # prune orders by created_at, else the file's time
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


async def test_prune_keeps_the_newest_and_touches_nothing_else(
    migrated: str, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    real = root / "20260101T000000Z"
    assert (await cli(migrated, "backup", str(real)))[0] == 0
    os.utime(real / "manifest.json", (1, 1))  # a real manifest: its created_at counts, not this
    times = [f"2025-01-0{d}T00:00:00Z" for d in (3, 1, 2)]
    fakes = [fake_backup(root, f"b{i}", t) for i, t in enumerate(times)]
    for fake in fakes:  # unreadable manifests fall back to the manifest's modification time
        stamp = time.mktime(
            time.strptime(
                json.loads((fake / "manifest.json").read_text())["created_at"], "%Y-%m-%dT%H:%M:%SZ"
            )
        )
        os.utime(fake / "manifest.json", (stamp, stamp))
    (root / "notes.txt").write_text("not a backup")
    (root / "partial").mkdir()  # an unfinished backup: no manifest
    (root / "partial" / ".leaderboard.dump.partial").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    fake_backup(tmp_path, "elsewhere", "2000-01-01T00:00:00Z")
    (root / "link").symlink_to(elsewhere)  # never followed

    code, out, err = await cli(migrated, "prune", str(root), "--keep", "2")
    assert code == 0, err
    assert sorted(out.split()) == sorted(["deleted", str(fakes[1]), "deleted", str(fakes[2])])
    left = sorted(p.name for p in root.iterdir())
    assert left == ["20260101T000000Z", "b0", "link", "notes.txt", "partial"]
    assert (elsewhere / "manifest.json").exists()

    code, out, err = await cli(migrated, "prune", str(root), "--keep", "5")
    assert (code, out) == (0, "")
    for keep in ("0", "-1", "two", ""):
        code, out, err = await cli(migrated, "prune", str(root), "--keep", keep)
        assert (code, out) == (2, "")
        assert "--keep" in err
        assert "Traceback" not in err
    code, out, err = await cli(migrated, "prune", str(root))  # BACKUP_KEEP: 7 by default
    assert (code, out) == (0, ""), err
    code, _, err = await cli(migrated, "prune", str(tmp_path / "nowhere"), "--keep", "1")
    assert code == 2
    assert "not a directory" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == left
    code, out, err = await cli(migrated, "prune", str(root), env={"BACKUP_KEEP": "1"})
    assert (code, out.split()) == (0, ["deleted", str(fakes[0])]), err
    assert (real / "leaderboard.dump").exists()


def test_the_password_never_reaches_the_command_line() -> None:
    url, env = backup.libpq_target("postgresql://app:s%40cret@db.example:5432/lb?sslmode=require")
    assert url == "postgresql://app@db.example:5432/lb?sslmode=require"
    assert env["PGPASSWORD"] == "s@cret"
    url, env = backup.libpq_target("postgresql://app@db.example/lb")
    assert url == "postgresql://app@db.example/lb"


async def test_a_failed_dump_leaves_no_manifest_and_no_partial_file(
    migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "b"
    await backup.backup(migrated, target)  # a good backup, to be overwritten with --force
    fake = tmp_path / "pg_dump"
    # Writes half a dump, then dies: what a crash or a full disk leaves behind.
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = --version ]; then echo "pg_dump (PostgreSQL) 99.0"; exit 0; fi\n'
        'for a; do case "$a" in --file=*) echo partial > "${a#--file=}";; esac; done\nexit 3\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(pgbin, "client_tool", lambda program, major: fake)
    with pytest.raises(backup.BackupFailed, match="pg_dump exited with 3"):
        await backup.backup(migrated, target, force=True)
    assert sorted(p.name for p in target.iterdir()) == ["leaderboard.dump"]  # the old one
    with pytest.raises(backup.BackupRefused, match=r"manifest\.json is missing"):
        backup.read_manifest(target)
    conn = await asyncpg.connect(migrated)
    try:
        assert await conn.fetchval("SELECT count(*) FROM backup_runs") == 1  # the good one only
    finally:
        await conn.close()


def test_client_tools_match_the_server_or_say_what_is_missing() -> None:
    for program in ("pg_dump", "pg_restore"):
        found = pgbin.bindirs(program)
        assert found, f"no {program}: the drill needs the embedded or the system's binaries"
        majors = sorted({pgbin.major_version(d / program)[0] for d in found})
        for major in majors:  # the same major when installed
            assert pgbin.major_version(pgbin.client_tool(program, major))[0] == major
        with pytest.raises(RuntimeError, match=f"no {program} of PostgreSQL 999 or newer"):
            pgbin.client_tool(program, 999)
        # Older servers get the oldest newer tool.
        assert pgbin.major_version(pgbin.client_tool(program, 9))[0] == majors[0]
