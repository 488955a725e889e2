"""Prometheus metrics of the broadcast gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("gateway_connections", "Open WebSocket connections")
MESSAGES = Counter("gateway_messages_sent_total", "Messages written to clients", ["type"])
BYTES = Counter("gateway_bytes_sent_total", "Bytes written to clients (whole frames)", ["type"])
CLOSES = Counter(
    "gateway_closes_total",
    "Connections refused or closed, by reason",
    ["reason"],  # client, slow, oversize, rate, origin, per_ip, capacity, shutdown, error
)
CONFLATED = Counter(
    "gateway_conflated_total", "Diffs skipped for a client that could not take them"
)
BROADCAST = Histogram(
    "gateway_broadcast_seconds",
    "Time to write one board change to every client",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
EVENT_DELAY = Histogram(
    "gateway_event_delay_seconds",
    "From a stream event's ts to the broadcast that carries its effect",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)
VERSION = Gauge("gateway_board_version", "Current board version of this instance")
REDIS_ERRORS = Counter("gateway_redis_errors_total", "Redis failures that forced a reconnect")
