"""The system under test: Redis and PostgreSQL (embedded or from URLs) and the three services.

Every service runs as ``python -m services.<name>`` with the settings it would read in
production; the benchmark only chooses ports, a key prefix of its own and permissive limits.
``Stack`` is a context manager that stops everything it started, even on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import asyncpg
import orjson

import devstack.run
from devstack.servers import Server, free_port, start_postgres, start_redis
from services.score_api.actions import MAX_OPEN

ROOT = Path(__file__).resolve().parent.parent
# No cooldowns: the benchmark repeats actions as fast as it can. ``bench_quest`` is the ticket
# path (start, then redeem at once: min_seconds 0). Its tickets are spread over the 1,000
# users of bench/update.py, and a run has at most one action in flight per connection, so a
# user rarely holds more than one open ticket; max_open is the catalogue's largest all the same.
ACTIONS: dict[str, object] = {
    "quest_complete": 10,
    "achievement_unlocked": 50,
    "bench_big": 1_000_000,
    "bench_quest": {
        "points": 10,
        "mode": "ticket",
        "min_seconds": 0,
        "max_seconds": 3600,
        "max_open": MAX_OPEN,
    },
}
# Every abuse limit and points budget off: the benchmark measures the write path, not the
# refusals (a budget left on would answer 429 points-budget, and its quota below bench_big's
# points would stop the API at start).
NO_LIMITS = {
    "RATE_LIMIT_USER_PER_SECOND": "0",
    "RATE_LIMIT_USER_PER_MINUTE": "0",
    "RATE_LIMIT_USER_PER_HOUR": "0",
    "RATE_LIMIT_IP_PER_SECOND": "0",
    "RATE_LIMIT_REPORTER_PER_SECOND": "0",
    "POINTS_PER_USER_PER_HOUR": "0",
    "POINTS_PER_USER_PER_DAY": "0",
}


def api_env() -> dict[str, str]:
    """The score API's benchmark settings: the catalogue above and no limits."""
    return NO_LIMITS | {"ACTIONS": orjson.dumps(ACTIONS).decode()}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


@dataclass
class Service:
    name: str
    module: str
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@dataclass
class Stack:
    """Servers, per-run names and the services; ``with Stack(...) as stack:`` cleans up."""

    workdir: Path
    redis_url: str = ""
    database_url: str = ""
    prefix: str = field(default_factory=lambda: f"bench{uuid.uuid4().hex[:8]}")
    _servers: list[Server] = field(default_factory=list)
    _services: list[Service] = field(default_factory=list)
    _database: str | None = None
    _admin_url: str | None = None

    def __enter__(self) -> Stack:
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis_url = os.environ.get("REDIS_URL", "")
        if not self.redis_url:
            self._servers.append(start_redis(self.workdir / "redis"))
            self.redis_url = self._servers[-1].url
            say(f"embedded Redis on {self.redis_url}")
        admin = os.environ.get("DATABASE_URL", "")
        if not admin:
            self._servers.append(start_postgres(self.workdir / "postgres"))
            admin = self._servers[-1].url
            say(f"embedded PostgreSQL on {admin}")
        # A fresh database every run, also on a server we were given.
        self._admin_url = admin
        self._database = f"bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_sql(admin, f'CREATE DATABASE "{self._database}"'))
        parts = urllib.parse.urlsplit(admin)
        self.database_url = urllib.parse.urlunsplit(parts._replace(path=f"/{self._database}"))
        subprocess.run(
            [sys.executable, "-m", "services.persister", "migrate"],
            env=self.base_env(self.prefix),
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def base_env(self, prefix: str) -> dict[str, str]:
        return os.environ | {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "REDIS_KEY_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
            "ENVIRONMENT": "development",
        }

    def start(self, name: str, prefix: str | None = None, **extra: str) -> Service:
        """Start ``services.<name>`` on a free port and wait until it is ready."""
        port = free_port()
        env = self.base_env(prefix or self.prefix) | {
            "API_PORT": str(port),
            "GATEWAY_PORT": str(port),
            "PERSISTER_METRICS_PORT": str(port),
            "PERSISTER_METRICS_HOST": "127.0.0.1",
            **api_env(),
            "GATEWAY_MAX_CONNECTIONS": "100000",
            "GATEWAY_MAX_CONNECTIONS_PER_IP": "0",
            "GATEWAY_ALLOWED_ORIGINS": '["*"]',
        }
        env |= extra
        log = self.workdir / f"{name}-{port}.log"
        service = Service(name, f"services.{name}", port, env, log=log)
        with log.open("ab") as out:
            service.proc = subprocess.Popen(
                [sys.executable, "-m", service.module],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._services.append(service)
        wait_ready(service)
        return service

    def stop(self, service: Service) -> None:
        proc = service.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if service in self._services:
            self._services.remove(service)

    def close(self) -> None:
        for service in reversed(list(self._services)):
            with contextlib.suppress(Exception):
                self.stop(service)
        if self._database and self._admin_url and not self._servers_own_postgres():
            with contextlib.suppress(Exception):
                asyncio.run(_sql(self._admin_url, f'DROP DATABASE "{self._database}" WITH (FORCE)'))
        if os.environ.get("REDIS_URL"):
            with contextlib.suppress(Exception):
                asyncio.run(_delete_prefixes(self.redis_url, self.prefix))
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                server.stop()
        self._servers.clear()

    def _servers_own_postgres(self) -> bool:
        return any(s.name == "postgres" for s in self._servers)

    @property
    def owns_redis(self) -> bool:
        """Redis is this run's embedded one, so its server-wide counts (``INFO
        commandstats``) are the benchmark's alone; a REDIS_URL server may serve others too."""
        return any(s.name == "redis" for s in self._servers)

    def versions(self) -> dict[str, str]:
        async def query() -> dict[str, str]:
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(self.redis_url)
            try:
                info = await client.info("server")
            finally:
                await client.aclose()
            conn = await asyncpg.connect(self.database_url)
            try:
                pg = str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()
            kind = "Valkey" if "valkey_version" in info else "Redis"
            version = info.get("valkey_version") or info.get("redis_version")
            return {"redis": f"{kind} {version}", "postgres": f"PostgreSQL {pg}"}

        return asyncio.run(query())


def wait_ready(service: Service, timeout: float = 60.0) -> None:
    assert service.proc is not None
    devstack.run.wait_ready(service.name, service.url, service.proc, timeout, service.log)


def metric(service: Service | str, name: str, **labels: str) -> float:
    """The sum of the samples of one Prometheus metric of a service (or base URL) whose
    labels include ``labels`` (0 when there are none)."""
    return metric_sum(scrape(service), name, **labels)


def scrape(service: Service | str) -> str:
    """A service's ``/metrics`` text."""
    url = service if isinstance(service, str) else service.url
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310
        text: str = response.read().decode()
    return text


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` in Prometheus text whose labels include ``labels``.

    Only the exposition that prometheus_client writes: ``name{a="b",c="d"} value``, with
    label values free of ``",`` sequences (route names, methods and statuses are)."""
    total = 0.0
    wanted = {f'{key}="{value}"' for key, value in labels.items()}
    for line in text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in (" ", "{"):
            continue
        head, _, value = line.rpartition(" ")
        if wanted:
            inside = head[len(name) + 1 : -1] if head.endswith("}") else ""
            if not wanted <= set(inside.split(",")):
                continue
        total += float(value)
    return total


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _delete_prefixes(url: str, prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{{{prefix}*", count=10_000):
            await client.unlink(key)
    finally:
        await client.aclose()


@contextlib.contextmanager
def temporary_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        yield Path(tmp)
