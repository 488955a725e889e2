"""Print a development JWT signed with the development secret.

Usage: ``python -m shared.devtoken USER_ID [--name N] [--ttl S] [--scope S]``.
"""

from __future__ import annotations

import argparse
import sys

from shared.settings import TokenSettings
from shared.tokens import SCOPE_WRITE, SUBJECT, issue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.devtoken", description=__doc__)
    parser.add_argument("user_id")
    parser.add_argument("--name", default=None)
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    parser.add_argument("--scope", action="append", help=f"repeatable; default {SCOPE_WRITE}")
    args = parser.parse_args(argv)
    settings = TokenSettings()
    if settings.is_production:
        print("refusing: development tokens are not issued in production", file=sys.stderr)
        return 2
    if not SUBJECT.match(args.user_id):
        print("USER_ID must be 1..64 characters of [A-Za-z0-9_.:@-]", file=sys.stderr)
        return 2
    scopes = tuple(args.scope or [SCOPE_WRITE])
    print(issue(settings, args.user_id, name=args.name, scopes=scopes, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
