"""Redis Cluster: the score API, persister and gateway run unchanged on a three-master cluster.

The services get ``REDIS_URL=redis+cluster://<first node>``; the board's hash tag is chosen so
its slot lives on another node, so every command only works if the client really routes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
from redis.exceptions import MovedError, RedisError

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.reconcile import reconcile
from services.score_api.store import SCRIPTS
from shared.keys import BoardKeys
from shared.redisconn import connect, lua
from shared.settings import SharedSettings
from tests.cluster_fixtures import LocalCluster, local_cluster
from tests.gateway_fixtures import Follower, run_gateway
from tests.gateway_fixtures import wait_until as wait_for
from tests.persister_fixtures import (
    assert_consistent,
    drain,
    open_worker,
    redis_scores,
    running_api,
    wait_until,
)
from tests.support import RUN_ID, free_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


_prefixes = itertools.count()


@pytest.fixture
def prefix(cluster: LocalCluster) -> str:
    """A key prefix whose board slot is served by a node other than the URL's seed node."""
    seed = cluster.nodes[0].port
    while True:
        candidate = f"c{RUN_ID}-{next(_prefixes)}"
        if cluster.owner(cluster.keyslot(BoardKeys(candidate, "global").tag)).port != seed:
            return candidate


@pytest.fixture
async def owner(cluster: LocalCluster, prefix: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client of the one node that serves the board's slot: it holds every key."""
    node = cluster.owner(cluster.keyslot(BoardKeys(prefix, "global").tag))
    client = redis.asyncio.Redis(host="127.0.0.1", port=node.port)
    try:
        yield client
    finally:
        await client.aclose()


def all_keys(keys: BoardKeys) -> list[str]:
    return [
        keys.board,
        keys.members,
        keys.names,
        keys.seq,
        keys.stream,
        keys.dead_letters,
        keys.rebuild_board,
        keys.rebuild_members,
        keys.rebuild_names,
        keys.rebuild_banned,
        keys.banned,
        keys.idempotency("alice", "k-1"),
        keys.cooldown("alice", "quest_complete"),
        keys.rate("user-second", "alice"),
        keys.rate("ip-second", "203.0.113.9"),
    ]


def test_every_key_of_a_board_hashes_to_one_slot_away_from_the_seed(
    cluster: LocalCluster, prefix: str
) -> None:
    keys = BoardKeys(prefix, "global")
    slots = {cluster.keyslot(key) for key in all_keys(keys)}
    assert slots == {cluster.keyslot(keys.tag)}
    assert cluster.owner(slots.pop()).port != cluster.nodes[0].port


async def test_score_api_persister_and_gateway_work_unchanged_on_a_cluster(
    cluster: LocalCluster,
    prefix: str,
    owner: redis.asyncio.Redis,
    database_url: str,
) -> None:
    await migrate(database_url)
    keys = BoardKeys(prefix, "global")
    async with (
        running_api(cluster.url, prefix) as api,
        open_worker(cluster.url, database_url, prefix) as worker,
        run_gateway(cluster.url, prefix, gateway_tick_ms=20) as gateway,
        Follower(gateway.url) as follower,
    ):
        assert (await api.http.get("/readyz")).status_code == 200
        await api.load(120, users=15, concurrency=10)
        headers = {
            "Authorization": f"Bearer {issue(api.settings, 'u0', name='Name u0')}",
            "Idempotency-Key": "replayed",
        }
        replies = [
            (await api.http.post("/api/score", json={"action": "level_up"}, headers=headers))
            for _ in range(2)
        ]
        assert [r.json()["duplicate"] for r in replies] == [False, True]
        await drain(worker)
        await worker.trim()  # a MULTI of XINFO GROUPS + XPENDING + XLEN, then XTRIM
        assert api.accepted == 120
        await assert_consistent(owner, keys, database_url, api.accepted + 1)

        expected = (await api.http.get("/api/score-board")).json()["board"]
        assert len(expected) == 10
        await wait_for(
            lambda: [e.as_dict() for e in follower.board] == expected, what="gateway board"
        )
        single = await api.http.get("/api/users/u3/rank", params={"around": 1})
        assert single.status_code == 200

    # Every key is on the owner; the seed node redirects instead of answering.
    assert await owner.exists(keys.board, keys.names, keys.stream, keys.seq) == 4
    seed = cluster.nodes[0].client()
    with seed, pytest.raises(MovedError):
        seed.exists(keys.board)


async def test_refused_entries_are_dead_lettered_in_one_slot_transaction(
    cluster: LocalCluster, prefix: str, owner: redis.asyncio.Redis, database_url: str
) -> None:
    await migrate(database_url)
    keys = BoardKeys(prefix, "global")
    async with open_worker(cluster.url, database_url, prefix) as worker:
        await worker.ensure_group()
        await worker.redis.xadd(keys.stream, {"v": "1", "type": "score", "garbage": "yes"})

        async def dead_lettered() -> bool:
            await worker.step()
            return int(await owner.xlen(keys.dead_letters)) == 1

        await wait_until(dead_lettered, "the malformed entry in the dead-letter stream")
        pending = await owner.xpending(keys.stream, worker.group)
        assert pending["pending"] == 0


async def test_rebuild_and_reconcile_work_on_a_cluster(
    cluster: LocalCluster, prefix: str, owner: redis.asyncio.Redis, database_url: str
) -> None:
    await migrate(database_url)
    keys = BoardKeys(prefix, "global")
    settings = SharedSettings(
        redis_url=cluster.url, database_url=database_url, redis_key_prefix=prefix
    )
    async with (
        running_api(cluster.url, prefix) as api,
        open_worker(cluster.url, database_url, prefix) as worker,
    ):
        await api.load(40, users=8, concurrency=8)
        await drain(worker)
    before = await redis_scores(owner, keys)
    assert await reconcile(settings, out=io.StringIO()) == []
    assert await rebuild(settings, force=True, out=io.StringIO()) == len(before)
    assert await redis_scores(owner, keys) == before


async def test_readiness_reloads_scripts_flushed_from_the_slot_owner(
    cluster: LocalCluster, prefix: str, owner: redis.asyncio.Redis
) -> None:
    async with running_api(cluster.url, prefix) as api:
        assert (await api.http.get("/readyz")).status_code == 200
        shas = [
            hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
            for text in (*SCRIPTS, lua("shared", "top"))
        ]
        assert all(await owner.script_exists(*shas))
        await owner.script_flush()
        assert not any(await owner.script_exists(*shas))
        assert (await api.http.get("/readyz")).status_code == 200
        assert all(await owner.script_exists(*shas))
        assert (await api.post("u1")) is not None
        assert api.accepted == 1


async def test_only_the_cluster_scheme_selects_the_cluster_client(cluster: LocalCluster) -> None:
    clustered, single = connect(cluster.url), connect(f"redis://127.0.0.1:{cluster.nodes[0].port}")
    try:
        assert isinstance(clustered, redis.asyncio.RedisCluster)
        assert await clustered.ping()
        assert {int(n.port) for n in clustered.get_primaries()} == {n.port for n in cluster.nodes}
        assert isinstance(single, redis.asyncio.Redis)
    finally:
        await clustered.aclose()
        await single.aclose()


async def test_an_unreachable_cluster_is_a_redis_error() -> None:
    # The services map RedisError to 503 / reconnect; redis-py's own error here is not one.
    client = connect(f"redis+cluster://127.0.0.1:{free_port()}", timeout=1)
    try:
        with pytest.raises(RedisError, match="cannot be connected"):
            await client.ping()
    finally:
        await client.aclose()


async def test_closing_after_a_timeout_leaves_no_connection_open(cluster: LocalCluster) -> None:
    # A timeout flags redis-py's topology for reloading, after which its aclose() did nothing.
    client = connect(cluster.url, timeout=0.2)
    assert isinstance(client, redis.asyncio.RedisCluster)
    try:
        assert await client.ping()
        with pytest.raises(RedisError):
            await client.xread({"{timeout}:stream": "$"}, block=1000)
    finally:
        await client.aclose()
    nodes = client.nodes_manager.nodes_cache.values()
    assert not [c for node in nodes for c in node._connections if c.is_connected]
