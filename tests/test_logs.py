"""Structured logs: one JSON object per line, extras kept, and request ids end to end."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import httpx
import orjson

from services.score_api.settings import ApiSettings
from shared.logs import JsonFormatter
from shared.tokens import issue
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent


def record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("svc", logging.WARNING, __file__, 1, msg, None, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_line_with_its_extras() -> None:
    line = JsonFormatter().format(record("persisted %d", request_id="r-1", count=3))
    assert "\n" not in line
    entry = orjson.loads(line)
    assert {k: entry[k] for k in ("level", "logger", "msg", "request_id", "count")} == {
        "level": "WARNING",
        "logger": "svc",
        "msg": "persisted %d",
        "request_id": "r-1",
        "count": 3,
    }
    assert entry["ts"].endswith("+00:00")


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = record("failed", exc_info=None)
        rec.exc_info = sys.exc_info()
    entry = orjson.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exc"]


async def test_api_logs_json_lines_carrying_the_request_id(
    redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": key_prefix,
        "API_PORT": str(port),
        "LOG_LEVEL": "DEBUG",
    }
    log_file = tmp_path / "api.log"
    with log_file.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.score_api", env=env, cwd=ROOT, stderr=out
        )
    token = issue(ApiSettings(), "alice")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(200):
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            response = await http.post(
                "/api/score",
                json={"action": "quest_complete"},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Idempotency-Key": "k1",
                    "X-Request-ID": "trace-me-42",
                },
            )
            assert response.status_code == 200
    finally:
        proc.terminate()
        await proc.wait()
    lines = [orjson.loads(line) for line in log_file.read_text().splitlines() if line]
    assert lines, "no log lines"
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    [award] = [e for e in lines if e.get("request_id") == "trace-me-42"]
    assert award["event_id"] == response.json()["event_id"]
    assert token not in log_file.read_text()
