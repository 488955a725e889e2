"""Drive an HTTP endpoint with ``wrk`` and read its figures back as a dict.

The Lua scenario is assembled from ``wrk/common.lua`` (thread ids and a JSON summary line),
the scenario's own file and, for a paced run, ``wrk/paced.lua`` with the pause written in.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

LUA = Path(__file__).parent / "wrk"


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise WrkError("wrk is not installed: apt-get install -y wrk (make bench does this)")
    return found


def run_wrk(
    url: str,
    *,
    scenario: str | None = None,
    args: tuple[str, ...] = (),
    seconds: float = 10.0,
    connections: int = 32,
    threads: int = 1,
    pace_ms: float | None = None,
) -> dict[str, float]:
    """Run wrk once; returns its summary plus ``rps`` and ``non_2xx``-style error counts."""
    parts = [(LUA / "common.lua").read_text()]
    if scenario:
        parts.append((LUA / f"{scenario}.lua").read_text())
    if pace_ms is not None:
        parts.append((LUA / "paced.lua").read_text().replace("PACE_MS", f"{pace_ms:.3f}"))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write("\n".join(parts))
        script.flush()
        argv = [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            script.name,
            url,
        ]
        if args:
            argv += ["--", *args]
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=seconds + 60
        )
    return parse_wrk_output(done.stdout, done.stderr)


def parse_wrk_output(stdout: str, stderr: str = "") -> dict[str, float]:
    """The ``WRKJSON`` line of common.lua's ``done`` as numbers, plus requests per second."""
    for line in stdout.splitlines():
        if line.startswith("WRKJSON "):
            figures: dict[str, float] = orjson.loads(line[len("WRKJSON ") :])
            seconds = figures["duration_us"] / 1e6
            figures["rps"] = figures["requests"] / seconds if seconds else 0.0
            figures["errors"] = sum(v for k, v in figures.items() if k.startswith("errors_"))
            return figures
    raise WrkError(f"wrk printed no summary:\n{stdout[-2000:]}\n{stderr[-2000:]}")
