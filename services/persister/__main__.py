"""``python -m services.persister [run|migrate|rebuild [--force]|reconcile|backup DIR [--force]|
restore DIR [--force]|prune ROOT --keep N]`` (default: run)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import asyncpg
import uvloop

from services.persister import backup
from services.persister.migrate import migrate
from services.persister.rebuild import RebuildRefused, rebuild
from services.persister.reconcile import reconcile
from services.persister.service import Service
from services.persister.settings import PersisterSettings
from shared import logs
from shared.lifecycle import serve_until_signalled

log = logging.getLogger("services.persister")


async def run(settings: PersisterSettings) -> int:
    """Persist until SIGTERM/SIGINT, or until the persist loop crashes (then exit 1)."""
    service = Service(settings)
    await serve_until_signalled(service.running(), log, stop=service.ended)
    return service.exit_code


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {number}): keep some backups")
    return number


def _backups(command: str, args: argparse.Namespace, settings: PersisterSettings) -> int:
    try:
        if command == "backup":
            manifest = asyncio.run(backup.backup(settings.database_url, args.dir, args.force))
            print(f"backed up to {args.dir}: {manifest.dump.bytes} bytes; {manifest.describe()}")
        elif command == "restore":
            restored = asyncio.run(backup.restore(settings.database_url, args.dir, args.force))
            print(f"restored {restored.manifest.describe()} in {restored.seconds:.1f}s")
        else:
            keep = settings.backup_keep if args.keep is None else args.keep
            for path in backup.prune(args.root, keep):
                print(f"deleted {path}")
    except backup.BackupRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except (backup.BackupFailed, RuntimeError) as exc:
        print(f"{command} failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"{command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.persister", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="persist the score stream (the default)")
    commands.add_parser("migrate", help="apply the SQL migrations (idempotent)")
    rebuild_cmd = commands.add_parser("rebuild", help="rebuild the Redis board from PostgreSQL")
    rebuild_cmd.add_argument("--force", action="store_true", help="replace a non-empty board")
    commands.add_parser("reconcile", help="compare Redis and PostgreSQL totals; 1 if any differ")
    backup_cmd = commands.add_parser("backup", help="pg_dump the database and a manifest into DIR")
    backup_cmd.add_argument("dir", type=Path, metavar="DIR")
    backup_cmd.add_argument("--force", action="store_true", help="write into a non-empty DIR")
    restore_cmd = commands.add_parser("restore", help="restore the backup in DIR (empty database)")
    restore_cmd.add_argument("dir", type=Path, metavar="DIR")
    restore_cmd.add_argument("--force", action="store_true", help="replace a non-empty database")
    prune_cmd = commands.add_parser("prune", help="delete all but the newest N backups in ROOT")
    prune_cmd.add_argument("root", type=Path, metavar="ROOT")
    prune_cmd.add_argument(
        "--keep", type=_at_least_one, metavar="N", help="backups to keep (default: BACKUP_KEEP)"
    )
    args = parser.parse_args(argv)
    settings = PersisterSettings()
    logs.configure(settings.log_level)
    command = args.command or "run"
    if command == "migrate":
        applied = asyncio.run(migrate(settings.database_url))
        print(f"applied {applied}" if applied else "schema is up to date")
        return 0
    if command == "rebuild":
        try:
            asyncio.run(rebuild(settings, force=args.force))
        except RebuildRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 2
        return 0
    if command == "reconcile":
        return 1 if asyncio.run(reconcile(settings)) else 0
    if command in ("backup", "restore", "prune"):
        return _backups(command, args, settings)
    return uvloop.run(run(settings))  # as the other services: a cheaper event loop


if __name__ == "__main__":
    sys.exit(main())
