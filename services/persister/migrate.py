"""Versioned SQL migrations: ``migrations/NNNN_name.sql`` applied in order, each exactly once.

Each file runs in its own transaction together with its ``schema_migrations`` row, under a
session advisory lock, so concurrent runs (two pods starting a Job) apply each file once. A file
that changed after it was applied is refused rather than silently diverging.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

log = logging.getLogger(__name__)

# Arbitrary constant naming "leaderboard migrations" among advisory locks.
LOCK_KEY = 0x6C62_6D69
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The migration files or the database's history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def bundled() -> Traversable:
    return resources.files("services.persister").joinpath("migrations")


def load(directory: Traversable | None = None) -> list[Migration]:
    """The migrations in ``directory``, in version order; versions must run 1, 2, 3, ..."""
    found = []
    for item in (directory or bundled()).iterdir():
        if not item.name.endswith(".sql"):
            continue
        match = _FILE.match(item.name)
        if not match:
            raise MigrationError(f"bad migration file name {item.name!r} (want NNNN_name.sql)")
        found.append(Migration(int(match[1]), match[2], item.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..n without gaps, got {versions}")
    return found


async def migrate(database_url: str, directory: Traversable | None = None) -> list[int]:
    """Apply what is missing; return the versions applied now (empty when up to date)."""
    migrations = load(directory)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        try:
            return await _apply(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, migrations: list[Migration]) -> list[int]:
    await conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text NOT NULL,
               checksum   text NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    applied = {r["version"]: r["checksum"] for r in rows}
    known = {m.version for m in migrations}
    if unknown := sorted(set(applied) - known):
        raise MigrationError(f"the database has migrations this code does not know: {unknown}")
    done = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it was "
                    "applied; add a new migration instead"
                )
            continue
        async with conn.transaction():
            if migration.sql.strip():  # asyncpg cannot execute an empty string
                await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        log.info("applied migration %04d_%s", migration.version, migration.name)
        done.append(migration.version)
    return done
