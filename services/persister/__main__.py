"""``python -m services.persister [run|migrate|rebuild [--force]|reconcile]`` (default: run)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import uvloop

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.persister", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="persist the score stream (the default)")
    commands.add_parser("migrate", help="apply the SQL migrations (idempotent)")
    rebuild_cmd = commands.add_parser("rebuild", help="rebuild the Redis board from PostgreSQL")
    rebuild_cmd.add_argument("--force", action="store_true", help="replace a non-empty board")
    commands.add_parser("reconcile", help="compare Redis and PostgreSQL totals; 1 if any differ")
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
    return uvloop.run(run(settings))  # as the other services: a cheaper event loop


if __name__ == "__main__":
    sys.exit(main())
