"""Persister settings: the shared ones plus the consumer group, batching, retries, trimming
and the anomaly flags (``services.persister.flags``)."""

from __future__ import annotations

import os
import socket

from pydantic import Field, field_validator

from shared.formats import MAX_SCORE
from shared.settings import SharedSettings


def default_consumer() -> str:
    """The pod (or host) name: stable across restarts of one replica, distinct between replicas."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


class PersisterSettings(SharedSettings):
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
    # Anomaly flags (services.persister.flagrules): every FLAG_INTERVAL_SECONDS (0: never)
    # one persister sums each active user's points over the last FLAG_WINDOW_SECONDS.
    flag_interval_seconds: int = Field(default=60, ge=0, le=86_400)
    flag_window_seconds: int = Field(default=3600, ge=60, le=86_400)
    # Ceiling per hour, scaled to the window (0: rule off). The default budgets allow at most
    # 2,000 points in any rolling hour (GCRA: a burst of 1,000, then 1,000 an hour).
    flag_points_per_hour: int = Field(default=3000, ge=0, le=MAX_SCORE)
    # Outlier: more than this times the p99 of the other active users (0: rule off), once at
    # least FLAG_MIN_POPULATION users are active in the window.
    flag_outlier_factor: float = Field(default=5.0, ge=0, le=1000, allow_inf_nan=False)
    flag_min_population: int = Field(default=50, ge=2, le=10_000_000)
    # Quarantine a user as soon as a rule flags them (the flag is then "actioned").
    auto_quarantine: bool = False
    # Backups `prune` keeps when no --keep is given (services.persister.backup).
    backup_keep: int = Field(default=7, ge=1, le=10_000)

    @field_validator("flag_outlier_factor")
    @classmethod
    def _factor_off_or_at_least_one(cls, value: float) -> float:
        # Below 1 the rule would flag users who are not above the p99 at all.
        if 0 < value < 1:
            raise ValueError("must be 0 (off) or at least 1")
        return value
