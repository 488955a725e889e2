"""``make run``: obtain Redis and PostgreSQL, migrate, start every service, stop all on Ctrl-C.

``REDIS_URL`` / ``DATABASE_URL`` select existing servers; without them embedded servers start
on loopback with their files under ``.dev/``. Services run as child processes with the same
settings they would read in production, so what works here works there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devstack.servers import Server, start_postgres, start_redis

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "leaderboard"


@dataclass
class Service:
    name: str
    module: str
    port_env: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


SERVICES = (
    Service("score API", "services.score_api", "API_PORT", 8000),
    Service("broadcast gateway", "services.broadcast_gateway", "GATEWAY_PORT", 8001),
    Service("persister", "services.persister", "PERSISTER_METRICS_PORT", 8002),
)


def say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


def ensure_database(server_url: str) -> str:
    """The ``leaderboard`` database on the embedded server, created on first use."""

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
                await conn.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())
    parts = urllib.parse.urlsplit(server_url)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{DATABASE}"))


def wait_ready(
    name: str,
    url: str,
    proc: subprocess.Popen[bytes],
    timeout: float = 30.0,
    log: Path | None = None,
) -> None:
    """Poll ``url``/readyz until it answers 200; fail early (with the log's tail) if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{name} exited with code {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} was not ready on {url} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def data_servers(dev_dir: Path) -> Iterator[tuple[str, str]]:
    """(redis_url, database_url): the configured ones, or embedded servers under dev_dir."""
    started: list[Server] = []
    try:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            started.append(start_redis(dev_dir / "redis"))
            redis_url = started[-1].url
            say(f"embedded Redis on {redis_url}")
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            started.append(start_postgres(dev_dir / "postgres"))
            database_url = ensure_database(started[-1].url)
            say(f"embedded PostgreSQL on {database_url}")
        yield redis_url, database_url
    finally:
        for server in reversed(started):
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.run", description=__doc__)
    parser.add_argument("--dev-dir", type=Path, default=ROOT / ".dev")
    args = parser.parse_args(argv)
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    procs: list[subprocess.Popen[bytes]] = []
    with data_servers(args.dev_dir) as (redis_url, database_url):
        env = os.environ | {"REDIS_URL": redis_url, "DATABASE_URL": database_url}
        services = [
            Service(s.name, s.module, s.port_env, int(env.get(s.port_env, s.port)))
            for s in SERVICES
        ]
        try:
            say("applying migrations")
            subprocess.run(
                [sys.executable, "-m", "services.persister", "migrate"],
                env=env,
                cwd=ROOT,
                check=True,
            )
            for service in services:
                proc = subprocess.Popen([sys.executable, "-m", service.module], env=env, cwd=ROOT)
                procs.append(proc)
                wait_ready(service.name, service.url, proc)
                say(f"{service.name} ready on {service.url}")
            print_welcome(services)
            while not stop_requested and all(p.poll() is None for p in procs):
                time.sleep(0.2)
            if not stop_requested:
                say("a service exited on its own; stopping the rest")
                return 1
            say("stopping")
            return 0
        finally:
            for proc in reversed(procs):
                stop_process(proc)
            say("stopped")


def dev_token(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "devstack.devtoken", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def print_welcome(services: list[Service]) -> None:
    token = dev_token("player1", "--name", "Player One")
    reporter = dev_token("game-server", "--scope", "score:report")
    moderator = dev_token("moderator", "--scope", "score:admin")
    api, gateway, persister = services
    post = f"curl -s -X POST {api.url}"
    print(
        f"""
Live leaderboard is running.
  Live page        {api.url}/
  Score API        {api.url}/api/score-board   (metrics {api.url}/metrics)
  WebSocket        ws://127.0.0.1:{gateway.port}/ws/score
  Persister        {persister.url}/metrics
  Admin console    {api.url}/admin   (paste the moderator token below)

Development token for player1 (valid 24 h):
  {token}
Development token for the game server "game-server" (scope score:report):
  {reporter}
Development token for a moderator (scope score:admin, for the admin console):
  {moderator}

Try (the catalogue: {api.url}/api/actions):
  TOKEN={token}
  # a client action, once a day:
  {post}/api/score -H "Authorization: Bearer $TOKEN" \\
    -H "Idempotency-Key: $(date +%s%N)" -H "Content-Type: application/json" \\
    -d '{{"action": "daily_login"}}'
  # a ticket action: start it, then complete it at least 30 s later with the ticket:
  {post}/api/actions -H "Authorization: Bearer $TOKEN" \\
    -H "Content-Type: application/json" -d '{{"action": "quest_complete"}}'
  {post}/api/score -H "Authorization: Bearer $TOKEN" \\
    -H "Idempotency-Key: $(date +%s%N)" -H "Content-Type: application/json" \\
    -d '{{"action": "quest_complete", "ticket": "<ticket>"}}'
  # a server action, reported by the game server for player1:
  {post}/api/score -H "Authorization: Bearer {reporter}" \\
    -H "Idempotency-Key: $(date +%s%N)" -H "Content-Type: application/json" \\
    -d '{{"action": "match_win", "user_id": "player1"}}'

Press Ctrl-C to stop everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
