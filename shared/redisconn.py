"""Redis connections and Lua script loading, the same way for every service."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def connect(url: str, *, timeout: float = 2.0, retries: int = 0) -> Redis:
    """A pooled client; no silent retries by default, so a write is sent at most once."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        health_check_interval=30,
    )


def lua(package: str, name: str) -> str:
    """The text of ``<package>/lua/<name>.lua``."""
    return resources.files(package).joinpath("lua", f"{name}.lua").read_text()
