"""Logical backups: ``backup DIR``, ``restore DIR`` and ``prune ROOT --keep N``.

A backup is ``DIR/leaderboard.dump`` (``pg_dump --format=custom``) and ``DIR/manifest.json``.
The manifest's stream position (the ``stream_checkpoints`` rows) and row counts are read in the
very snapshot the dump is taken from: a REPEATABLE READ transaction exports its snapshot and
stays open while ``pg_dump --snapshot`` runs. The dump is written under a temporary name and
renamed, then the manifest likewise: a manifest only ever sits next to a complete dump, and
``prune`` only counts directories with a manifest.

Passwords never reach a command line: the URL handed to pg_dump/pg_restore has its password
removed, which travels in ``PGPASSWORD`` instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.persister import metrics
from services.persister.errors import PG_ERRORS
from shared import pgbin
from shared.clock import Clock
from shared.formats import SHA256_HEX

log = logging.getLogger(__name__)

FORMAT: Final = "leaderboard-backup"
FORMAT_VERSION: Final = 1
DUMP: Final = "leaderboard.dump"
MANIFEST = "manifest.json"
# Tables whose row counts the manifest records (those that exist in the backed-up schema).
MAIN_TABLES = (
    "users",
    "score_events",
    "stream_checkpoints",
    "revocations",
    "user_flags",
    "board_archives",
    "board_periods_closed",
    "archive_corrections",
    "backup_runs",
)
_CHUNK = 1 << 20


class BackupRefused(Exception):
    """A user error: a non-empty directory or database, a bad or tampered backup (exit 2)."""


class BackupFailed(Exception):
    """pg_dump/pg_restore failed (exit 1)."""


class StreamPosition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stream: str
    consumer_group: str
    persisted_below: str


class Migration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    name: str


class DumpFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: Literal["leaderboard.dump"]
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_HEX.schema_pattern)


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["leaderboard-backup"]
    format_version: Literal[1]
    created_at: dt.datetime
    database: str
    server_version: str
    pg_dump_version: str
    migration: Migration | None
    stream_position: list[StreamPosition]
    row_counts: dict[str, int]
    dump: DumpFile

    def describe(self) -> str:
        position = ", ".join(
            f"{p.stream} ({p.consumer_group}) below {p.persisted_below}"
            for p in self.stream_position
        )
        migration = f"{self.migration.version:04d}_{self.migration.name}" if self.migration else "-"
        return (
            f"backup of database {self.database!r} taken at {_rfc3339(self.created_at)}"
            f" (schema {migration}); stream position: {position or 'none'}"
        )


@dataclass(frozen=True)
class Snapshot:
    """What the manifest says about the database, read in the dump's snapshot."""

    created_at: dt.datetime
    database: str
    server_version: str
    migration: Migration | None
    stream_position: list[StreamPosition]
    row_counts: dict[str, int]


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    seconds: float


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def libpq_target(database_url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password."""
    parts = urlsplit(database_url)
    env = dict(os.environ)
    if parts.password is None:
        return database_url, env
    env["PGPASSWORD"] = unquote(parts.password)
    netloc = parts.netloc.rsplit("@", 1)[1]
    if parts.username is not None:
        netloc = f"{parts.username}@{netloc}"  # still percent-encoded as given
    return urlunsplit(parts._replace(netloc=netloc)), env


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


async def _server_major(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num")) // 10_000


async def _run(argv: list[str], env: Mapping[str, str], what: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        tail = "\n".join((out + err).decode(errors="replace").strip().splitlines()[-20:])
        raise BackupFailed(f"{what} exited with {proc.returncode}:\n{tail}")


def _prepare_dir(directory: Path, force: bool) -> Path:
    """``directory`` made absolute, existing and ready for a backup (empty, unless forced)."""
    directory = directory.absolute()
    if directory.exists() and not directory.is_dir():
        raise BackupRefused(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        if not force:
            raise BackupRefused(f"{directory} is not empty (use --force to overwrite a backup)")
        # The old manifest goes first: never an old manifest beside a new, partial dump.
        (directory / MANIFEST).unlink(missing_ok=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupRefused(f"cannot create {directory}: {exc.strerror}") from exc
    return directory


async def backup(database_url: str, directory: Path, force: bool = False) -> Manifest:
    """Write a backup of ``database_url`` into ``directory``; record it in ``backup_runs``."""
    directory = _prepare_dir(directory, force)
    partial_dump = directory / f".{DUMP}.partial"
    partial_manifest = directory / f".{MANIFEST}.partial"
    url, env = libpq_target(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        pg_dump = pgbin.client_tool("pg_dump", await _server_major(conn))
        _, pg_dump_version = pgbin.major_version(pg_dump)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            facts = await _snapshot_facts(conn)
            argv = [str(pg_dump), "--format=custom", f"--snapshot={snapshot}"]
            argv += ["--no-password", f"--file={partial_dump}", f"--dbname={url}"]
            try:
                await _run(argv, env, "pg_dump")
            except BaseException:
                partial_dump.unlink(missing_ok=True)
                raise
        size = partial_dump.stat().st_size
        sha256 = await asyncio.to_thread(_sha256, partial_dump)
        with partial_dump.open("rb") as f:
            os.fsync(f.fileno())
        partial_dump.rename(directory / DUMP)
        manifest = Manifest(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            created_at=facts.created_at,
            database=facts.database,
            server_version=facts.server_version,
            pg_dump_version=pg_dump_version,
            migration=facts.migration,
            stream_position=facts.stream_position,
            row_counts=facts.row_counts,
            dump=DumpFile(file=DUMP, bytes=size, sha256=sha256),
        )
        _fsync_write(partial_manifest, _manifest_json(manifest).encode())
        partial_manifest.rename(directory / MANIFEST)
        _fsync_dir(directory)
        try:
            await conn.execute(
                "INSERT INTO backup_runs (path, sha256, bytes) VALUES ($1, $2, $3)",
                str(directory),
                sha256,
                size,
            )
        except asyncpg.UndefinedTableError:
            log.warning("backup written, but not recorded: no backup_runs table (run migrate)")
    finally:
        await conn.close()
    return manifest


def _manifest_json(manifest: Manifest) -> str:
    data = manifest.model_dump(mode="json")
    data["created_at"] = _rfc3339(manifest.created_at)
    return json.dumps(data, indent=2) + "\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _snapshot_facts(conn: asyncpg.Connection) -> Snapshot:
    exists = await conn.fetch(
        "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass('public.' || t) IS NOT NULL",
        ["schema_migrations", *MAIN_TABLES],
    )
    present = {r["t"] for r in exists}
    migration = None
    if "schema_migrations" in present:
        row = await conn.fetchrow(
            "SELECT version, name FROM schema_migrations ORDER BY version DESC LIMIT 1"
        )
        migration = Migration(version=row["version"], name=row["name"]) if row else None
    positions = []
    if "stream_checkpoints" in present:
        rows = await conn.fetch(
            "SELECT stream, consumer_group, persisted_below FROM stream_checkpoints"
            " ORDER BY stream, consumer_group"
        )
        positions = [StreamPosition(**dict(r)) for r in rows]
    counts = {}
    for table in MAIN_TABLES:
        if table in present:  # names from the constant above, never from input
            counts[table] = int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))  # noqa: S608
    return Snapshot(
        # The snapshot's start, not the wall clock after the dump: what the backup contains.
        created_at=await conn.fetchval("SELECT transaction_timestamp()"),
        database=await conn.fetchval("SELECT current_database()"),
        server_version=await conn.fetchval("SHOW server_version"),
        migration=migration,
        stream_position=positions,
        row_counts=counts,
    )


def read_manifest(directory: Path) -> Manifest:
    """The manifest of the backup in ``directory``, its dump checked against it."""
    path = directory / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BackupRefused(f"{path} is missing: not a backup, or an unfinished one") from None
    except OSError as exc:
        raise BackupRefused(f"cannot read {path}: {exc.strerror}") from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(document)"
        raise BackupRefused(f"{path} is not a valid manifest: {where}: {first['msg']}") from None
    dump = directory / manifest.dump.file
    try:
        size = dump.stat().st_size
    except OSError:
        raise BackupRefused(f"{dump} is missing") from None
    if size != manifest.dump.bytes:
        raise BackupRefused(
            f"{dump} has {size} bytes, the manifest says {manifest.dump.bytes}: refusing it"
        )
    if _sha256(dump) != manifest.dump.sha256:
        raise BackupRefused(f"{dump} does not match the manifest's sha256: refusing it")
    return manifest


async def restore(database_url: str, directory: Path, force: bool = False) -> Restored:
    """Restore the backup in ``directory`` into ``database_url`` (empty unless ``force``)."""
    started = time.monotonic()
    manifest = await asyncio.to_thread(read_manifest, directory)
    url, env = libpq_target(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        server_major = await _server_major(conn)
    finally:
        await conn.close()
    if tables and not force:
        raise BackupRefused(
            f"the target database has {tables} table(s) in its public schema; restore into an"
            " empty database, or use --force to replace its contents"
        )
    # pg_restore reads archives of its own and older pg_dump versions only.
    dumped = re.search(r"\(PostgreSQL\) (\d+)", manifest.pg_dump_version)
    dumped_by = int(dumped[1]) if dumped else 0
    pg_restore = pgbin.client_tool("pg_restore", max(server_major, dumped_by))
    argv = [str(pg_restore), "--no-owner", "--exit-on-error", "--single-transaction"]
    if force:
        argv += ["--clean", "--if-exists"]
    argv += ["--no-password", f"--dbname={url}", str(directory / manifest.dump.file)]
    await _run(argv, env, "pg_restore")
    return Restored(manifest, time.monotonic() - started)


def backup_dirs(root: Path) -> list[tuple[dt.datetime, Path]]:
    """The backups directly under ``root`` (directories with a manifest), oldest first."""
    found = []
    for entry in root.iterdir():
        if entry.is_symlink() or not entry.is_dir() or not (entry / MANIFEST).is_file():
            continue
        try:
            created = Manifest.model_validate_json((entry / MANIFEST).read_bytes()).created_at
        except (OSError, ValidationError):
            mtime = (entry / MANIFEST).stat().st_mtime
            created = dt.datetime.fromtimestamp(mtime, dt.UTC)
        found.append((created.astimezone(dt.UTC), entry))
    found.sort()
    return found


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups under ``root``; returns what it deleted."""
    if keep < 1:
        raise BackupRefused(f"--keep must be at least 1, got {keep}")
    if not root.is_dir():
        raise BackupRefused(f"{root} is not a directory")
    doomed = [path for _, path in backup_dirs(root)[:-keep]]
    for path in doomed:
        # The manifest first: a half-deleted directory is no longer counted as a backup.
        (path / MANIFEST).unlink()
        shutil.rmtree(path)
    return doomed


class BackupGauge:
    """Publishes ``persister_last_backup_timestamp_seconds`` from ``backup_runs`` now and then."""

    def __init__(self, pool: asyncpg.Pool, clock: Clock, interval: float = 60.0) -> None:
        self.pool = pool
        self.clock = clock
        self.interval = interval
        self._next = 0.0

    async def publish(self) -> None:
        if self.clock.monotonic() < self._next:
            return
        self._next = self.clock.monotonic() + self.interval
        try:
            async with self.pool.acquire() as conn:
                last = await conn.fetchval(
                    "SELECT extract(epoch FROM max(finished_at))::float8 FROM backup_runs"
                )
        except asyncpg.UndefinedTableError:
            return  # not migrated yet
        except PG_ERRORS as exc:
            log.debug("last backup not read: %s", exc)
            return
        if last is not None:
            metrics.LAST_BACKUP.set(last)
