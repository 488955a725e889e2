"""Structured logs: one JSON object per line on stderr, the same shape for every service.

Fields: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg``, plus any ``extra={...}``
given to the call (e.g. ``request_id``, ``event_id``) and ``exc`` for tracebacks. Uvicorn's and
websockets' loggers go through the same handler, so a collector parses one format.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str) -> None:
    """Route every logger (ours, uvicorn's, websockets') to one JSON handler at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "websockets"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # websockets logs every connection and probe at INFO: per-client noise unless debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("websockets").setLevel(logging.WARNING)
