"""Structured logs: one JSON object per line, extras kept, and request ids end to end."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from devstack.devtoken import issue
from services.persister.migrate import migrate
from services.score_api.settings import ApiSettings
from shared.logs import JsonFormatter
from tests.persister_fixtures import drain, open_worker, running_api
from tests.support import api_process


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
    log_file = tmp_path / "api.log"
    token = issue(ApiSettings(), "alice")
    async with (
        api_process(redis_url, key_prefix, log=log_file, LOG_LEVEL="DEBUG") as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
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
    lines = [orjson.loads(line) for line in log_file.read_text().splitlines() if line]
    assert lines, "no log lines"
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    [award] = [e for e in lines if e.get("request_id") == "trace-me-42"]
    assert award["event_id"] == response.json()["event_id"]
    assert token not in log_file.read_text()


async def test_persister_logs_each_stored_event_with_its_request_id(
    redis_url: str, database_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await migrate(database_url)
    async with (
        running_api(redis_url, key_prefix) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        token = issue(api.settings, "alice")
        response = await api.http.post(
            "/api/score",
            json={"action": "quest_complete"},
            headers={
                "Authorization": f"Bearer {token}",
                "Idempotency-Key": "k1",
                "X-Request-ID": "follow-me-7",
            },
        )
        with caplog.at_level(logging.DEBUG, logger="services.persister"):
            await drain(worker)
    [stored] = [r for r in caplog.records if getattr(r, "request_id", None) == "follow-me-7"]
    assert getattr(stored, "event_id", None) == response.json()["event_id"]
    line = orjson.loads(JsonFormatter().format(stored))
    assert (line["request_id"], line["user_id"]) == ("follow-me-7", "alice")
