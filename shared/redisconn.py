"""Redis connections and Lua script loading, the same way for every service."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect(
    url: str, *, timeout: float = 2.0, max_connections: int = 64, retries: int = 0
) -> Redis:
    """A pooled client; no silent retries by default, so a write is sent at most once.

    The pool blocks (up to ``timeout``) rather than failing when every connection is busy,
    so a burst of requests queues instead of turning into 503s.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        health_check_interval=30,
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def lua(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua``."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text()
