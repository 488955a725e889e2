"""Prometheus metrics of the persister (default registry; ``shared.health`` serves /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PERSISTED = Counter("persister_events_persisted_total", "Events newly inserted into PostgreSQL")
DUPLICATES = Counter(
    "persister_events_duplicate_total", "Delivered events already in PostgreSQL (ignored)"
)
BATCH_SIZE = Histogram(
    "persister_batch_size",
    "Stream entries per processed batch",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
COMMIT_SECONDS = Histogram(
    "persister_commit_seconds",
    "Time to store one batch in PostgreSQL (one transaction)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PENDING = Gauge("persister_pending_entries", "Entries delivered to the group but not acknowledged")
UNDELIVERED = Gauge(
    "persister_undelivered_entries", "Entries not yet delivered to the group (-1: unknown)"
)
OLDEST_AGE = Gauge(
    "persister_oldest_unpersisted_age_seconds", "Age of the oldest event not yet persisted"
)
RECLAIMED = Counter("persister_reclaimed_total", "Entries reclaimed from idle consumers")
DEAD_LETTERS = Counter(
    "persister_dead_letters_total", "Entries moved to the dead-letter stream", ["reason"]
)
RETRIES = Counter("persister_retries_total", "Failed attempts that will be retried", ["backend"])
TRIMMED = Counter("persister_stream_trimmed_total", "Entries trimmed from the stream")
GROUP_CREATED = Counter("persister_group_created_total", "Consumer group (re)creations")
FLAGS_RAISED = Counter(
    "persister_flags_raised_total", "Anomaly flags opened (services.persister.flags)", ["rule"]
)
FLAG_EVALUATIONS = Counter(
    "persister_flag_evaluations_total",
    "Flag rule evaluations by outcome: done, locked (another persister was evaluating), failed",
    ["outcome"],
)
FLAG_SECONDS = Histogram(
    "persister_flag_evaluation_seconds",
    "Time of one flag evaluation (read the window, evaluate, upsert the flags)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
AUTO_QUARANTINED = Counter(
    "persister_flags_auto_quarantined_total", "Users quarantined by AUTO_QUARANTINE"
)
LAST_BACKUP = Gauge(
    "persister_last_backup_timestamp_seconds",
    "Unix time of the last successful backup (backup_runs; 0: none recorded)",
)
