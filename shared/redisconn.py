"""Redis connections and Lua script loading, the same way for every service.

The URL picks the client: ``redis://`` / ``rediss://`` one server; ``redis+cluster://host:port``
/ ``rediss+cluster://host:port`` a Redis Cluster, discovered from that one seed node. Every
key of a board shares one hash tag (``shared.keys``), so scripts, MULTI and stream commands
run unchanged on either.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.retry import Retry

from shared.formats import lua_constants

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

RedisClient: TypeAlias = Redis | RedisCluster


class ClusterUnavailable(RedisConnectionError):
    """No reachable node could describe the cluster, or none serves the slot."""


class _Cluster(RedisCluster):
    """RedisCluster whose "cannot reach the cluster" errors are RedisErrors, and whose
    ``aclose()`` always closes.

    redis-py raises ``RedisClusterException`` (not a ``RedisError``) when it cannot (re)load
    the topology, e.g. while every node is down; the services treat ``RedisError`` as "Redis
    unavailable" (503, reconnect with backoff), so the cluster client raises one too.
    """

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise ClusterUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await super().aclose()
        # redis-py skips closing once a timeout or connection error has flagged the topology
        # for reloading, leaving sockets open: close every node's connections regardless.
        await self.nodes_manager.aclose()
        await self.nodes_manager.aclose("startup_nodes")


def connect(
    url: str, *, timeout: float = 2.0, max_connections: int = 64, retries: int = 0
) -> RedisClient:
    """A pooled client; no silent retries by default, so a write is sent at most once.

    The pool blocks (up to ``timeout``) rather than failing when every connection is busy,
    so a burst of requests queues instead of turning into 503s. A cluster client has no
    blocking pool: ``max_connections`` is per node, and a burst beyond it fails fast.
    """
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        # MOVED/ASK redirections are still followed: the redirected command never ran.
        return _Cluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            max_connections=max_connections,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries),
            health_check_interval=30,
        )
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


def lua(package: str, name: str, *libraries: str) -> str:
    """The script ``<package>/lua/<name>.lua``, after the format constants it may use
    (``shared.formats.lua_constants``: widths, separators, event field names) and the
    package's Lua ``libraries`` (e.g. ``limits``: the clock and GCRA limits)."""
    folder = resources.files(package).joinpath("lua")
    parts = [folder.joinpath(f"{part}.lua").read_text() for part in (*libraries, name)]
    return lua_constants() + "".join(parts)


async def now_ms(redis: RedisClient) -> int:
    """Redis's clock (``TIME``) in Unix milliseconds: the clock every replica shares."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def text(value: bytes | str) -> str:
    """A Redis reply value as text (replies are bytes unless the client decodes them)."""
    return value.decode() if isinstance(value, bytes) else value
