"""`make run`'s stack on embedded servers: it starts, serves one update, and stops clean."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_run_stack_starts_serves_an_update_and_stops_without_leftovers(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("API_PORT", "GATEWAY_PORT", "PERSISTER_METRICS_PORT")}
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL"}}
    env |= {k: str(v) for k, v in ports.items()}
    env["GATEWAY_ALLOWED_ORIGINS"] = f'["http://127.0.0.1:{ports["API_PORT"]}"]'
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack.run", "--dev-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(output)
        assert "Press Ctrl-C" in text, text
        token = re.search(r"TOKEN=(\S+)", text)
        reporter = re.search(r"Bearer (eyJ\S+)\"", text)
        assert token, text
        assert reporter, text
        api = f"http://127.0.0.1:{ports['API_PORT']}"
        response = httpx.post(
            f"{api}/api/score",
            json={"action": "daily_login"},
            timeout=10,
            headers={"Authorization": f"Bearer {token.group(1)}", "Idempotency-Key": "smoke-1"},
        )
        assert response.status_code == 200, response.text
        reported = httpx.post(
            f"{api}/api/score",
            json={"action": "match_win", "user_id": "player1"},
            timeout=10,
            headers={"Authorization": f"Bearer {reporter.group(1)}", "Idempotency-Key": "smoke-2"},
        )
        assert reported.status_code == 200, reported.text
        board = httpx.get(f"{api}/api/score-board", timeout=10).json()
        assert board["board"][0]["user_id"] == "player1"
        assert board["board"][0]["score"] == 25
        data_ports = [int(p) for p in re.findall(r"embedded \w+ on \S+?127\.0\.0\.1:(\d+)", text)]
        assert len(data_ports) == 2, text
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, text + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for port in [*ports.values(), *data_ports]:
        assert not listening(port), port
        assert not processes_mentioning(f"-p {port} "), port
        assert not processes_mentioning(f"--port {port} "), port
    assert not processes_mentioning(str(tmp_path))
