"""devstack.servers against real Redis/Valkey and PostgreSQL processes (no mocks)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from devstack.servers import Server, free_port, start_postgres, start_redis


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Collects servers a test starts and stops them even when the test fails."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (PostgreSQL workers setsid(), so not its group)."""
    parent_of = {}
    for stat_file in glob.glob("/proc/[0-9]*/stat"):
        try:
            state, ppid = Path(stat_file).read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            parent_of[int(stat_file.split("/")[2])] = int(ppid)
    tree = [pid] if pid in parent_of else []
    for parent in tree:  # grows while iterating: breadth-first walk
        tree += [child for child, ppid in parent_of.items() if ppid == parent]
    return tree


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` that still run (zombies awaiting init's reaping count as gone)."""
    live = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            live.append(pid)
    return live


def accepts_tcp(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def pg(url: str, *statements: str) -> list[asyncpg.Record]:
    """Run statements on a fresh connection; returns the rows of the last one."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            for sql in statements[:-1]:
                await conn.execute(sql)
            return list(await conn.fetch(statements[-1]))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_free_port_is_bindable_and_not_a_standard_port() -> None:
    port = free_port()
    assert port not in (5432, 6379)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_redis_serves_on_loopback_url(tmp_path: Path, servers: list[Server]) -> None:
    server = start_redis(tmp_path)
    servers.append(server)
    assert server.running
    assert server.name == "redis"
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    assert client.get("k") == b"v"
    client.close()


def test_redis_restart_after_stop_is_empty_on_same_port(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_redis(tmp_path)
    servers.append(server)
    client = redis.Redis.from_url(server.url)
    client.set("k", "v")
    server.stop()
    assert not server.running
    server.start()
    assert client.get("k") is None
    assert not list(tmp_path.glob("*.rdb"))
    assert not list(tmp_path.glob("appendonly*"))
    client.close()


def test_redis_stop_leaves_no_process(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    assert server.pid is not None
    tree = process_tree(server.pid)
    assert tree
    server.stop()
    assert alive(tree) == []
    assert not accepts_tcp(server.port)
    server.stop()  # idempotent


def test_redis_kill_then_start_serves_again(tmp_path: Path, servers: list[Server]) -> None:
    server = start_redis(tmp_path)
    servers.append(server)
    assert server.pid is not None
    tree = process_tree(server.pid)
    server.kill()
    assert not server.running
    assert alive(tree) == []
    server.start()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.close()


def test_redis_start_on_taken_port_raises_with_log_tail(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        with pytest.raises(RuntimeError, match=r"(?i)address already in use"):
            start_redis(tmp_path, port=squatter.getsockname()[1])


def test_postgres_keeps_data_across_stop_and_start(tmp_path: Path, servers: list[Server]) -> None:
    server = start_postgres(tmp_path)
    servers.append(server)
    assert server.url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
    pg(
        server.url,
        "CREATE TABLE scores (name text, points int)",
        "INSERT INTO scores VALUES ('ada', 7)",
        "SELECT 1",
    )
    server.stop()
    assert not server.running
    assert not accepts_tcp(server.port)
    server.start()
    assert [tuple(r) for r in pg(server.url, "SELECT name, points FROM scores")] == [("ada", 7)]


def test_postgres_reuses_data_dir_for_a_new_server_on_same_workdir(
    tmp_path: Path, servers: list[Server]
) -> None:
    first = start_postgres(tmp_path)
    pg(first.url, "CREATE TABLE kept (x int)", "INSERT INTO kept VALUES (1)", "SELECT 1")
    first.stop()
    second = start_postgres(tmp_path)
    servers.append(second)
    assert pg(second.url, "SELECT count(*) FROM kept")[0][0] == 1


def test_postgres_kill_keeps_committed_data_and_leaves_no_process(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_postgres(tmp_path)
    servers.append(server)
    pg(server.url, "CREATE TABLE t (x int)", "INSERT INTO t VALUES (1)", "SELECT 1")
    assert server.pid is not None
    tree = process_tree(server.pid)
    assert len(tree) > 1  # the postmaster and its workers
    server.kill()
    assert not server.running
    assert alive(tree) == []
    server.start()  # crash recovery
    assert pg(server.url, "SELECT count(*) FROM t")[0][0] == 1


def test_postgres_stop_leaves_no_process(tmp_path: Path) -> None:
    server = start_postgres(tmp_path)
    assert server.pid is not None
    tree = process_tree(server.pid)
    assert len(tree) > 1
    server.stop()
    assert alive(tree) == []
    assert not accepts_tcp(server.port)
    server.stop()  # idempotent
    server.kill()  # also harmless when stopped


@pytest.mark.skipif(os.geteuid() != 0, reason="root-only path: PostgreSQL runs as nobody")
def test_postgres_as_root_runs_as_nobody_from_a_private_workdir(
    tmp_path: Path, servers: list[Server]
) -> None:
    # Like CI: the clone sits in a folder only root can enter.
    private = tmp_path / "priv700"
    workdir = private / "repo" / ".dev"
    workdir.mkdir(parents=True)
    private.chmod(0o700)
    server = start_postgres(workdir)
    servers.append(server)
    assert server.pid is not None
    uid = int(Path(f"/proc/{server.pid}/status").read_text().split("Uid:")[1].split()[0])
    assert uid == pwd.getpwnam("nobody").pw_uid
    assert pg(server.url, "SELECT current_user")[0][0] == "postgres"
    assert (workdir / "postgres.log").stat().st_size > 0  # log stays in the workdir
