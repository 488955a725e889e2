"""Development JWTs signed with the configured (by default the development) secret.

Usage: ``python -m devstack.devtoken USER_ID [--name N] [--ttl S] [--scope S]``. ``issue`` is
also what the tests and benchmarks sign their tokens with. Development tooling: it is not
part of any service image.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson
from jose import jws

from services.score_api.settings import TokenSettings
from services.score_api.tokens import SCOPE_WRITE, SUBJECT


def issue(
    settings: TokenSettings,
    sub: str,
    *,
    name: str | None = None,
    scopes: tuple[str, ...] = (SCOPE_WRITE,),
    ttl: int = 3600,
    now: float | None = None,
) -> str:
    """Sign an HS256 token with the configured secret."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "scope": " ".join(scopes), "iat": issued}
    claims["exp"] = issued + ttl
    if name is not None:
        claims["name"] = name
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    token: str = jws.sign(orjson.dumps(claims), settings.jwt_secret, algorithm="HS256")
    return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.devtoken", description=__doc__)
    parser.add_argument("user_id")
    parser.add_argument("--name", default=None)
    parser.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    parser.add_argument("--scope", action="append", help=f"repeatable; default {SCOPE_WRITE}")
    args = parser.parse_args(argv)
    settings = TokenSettings()
    if settings.is_production:
        print("refusing: development tokens are not issued in production", file=sys.stderr)
        return 2
    if not SUBJECT.matches(args.user_id):
        print(f"USER_ID must be {SUBJECT.describe()}", file=sys.stderr)
        return 2
    scopes = tuple(args.scope or [SCOPE_WRITE])
    print(issue(settings, args.user_id, name=args.name, scopes=scopes, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
