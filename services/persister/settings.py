"""Persister settings: the shared ones plus the consumer group, batching, retries and trimming."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from shared.settings import SharedSettings


def default_consumer() -> str:
    """The pod (or host) name: stable across restarts of one replica, distinct between replicas."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


class PersisterSettings(SharedSettings):
    persister_group: str = Field(default="persister", min_length=1)
    persister_consumer: str = Field(default_factory=default_consumer, min_length=1)
    persister_batch_size: int = Field(default=1000, ge=1, le=10_000)
    persister_block_ms: int = Field(default=1000, ge=1, le=10_000)
    persister_claim_idle_ms: int = Field(default=30_000, ge=1)
    persister_max_attempts: int = Field(default=5, ge=1)
    persister_stream_tail: int = Field(default=10_000, ge=0)
    persister_trim_interval_ms: int = Field(default=1000, ge=1)
    persister_retry_max_seconds: float = Field(default=5.0, gt=0)
    persister_shutdown_seconds: float = Field(default=10.0, gt=0)
    persister_metrics_host: str = "0.0.0.0"
    persister_metrics_port: int = Field(default=8002, ge=0, le=65535)
    persister_pg_timeout_seconds: float = Field(default=5.0, gt=0)
    persister_redis_timeout_seconds: float = Field(default=5.0, gt=0)
