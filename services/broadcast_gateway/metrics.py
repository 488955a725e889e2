"""Prometheus metrics of the broadcast gateway, and the fan-out that records them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import Counter, Gauge, Histogram

from services.broadcast_gateway.fanout import NOTHING, Client, Fanout, Outcome, unframed
from services.broadcast_gateway.protocol import Board
from shared.boards import ALL_TIME
from shared.clock import SYSTEM, Clock

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

# Looked up once: a drained client's snapshot is recorded on its own, many times a second.
_SENT = {kind: (MESSAGES.labels(kind), BYTES.labels(kind)) for kind in ("diff", "snapshot", "ping")}


def record(outcome: Outcome) -> Outcome:
    """Count what one fan-out operation wrote."""
    if outcome is NOTHING:
        return outcome
    for kind, frames, size in (
        ("diff", outcome.diffs, outcome.diff_bytes),
        ("snapshot", outcome.snapshots, outcome.snapshot_bytes),
        ("ping", outcome.pings, outcome.ping_bytes),
    ):
        if frames:
            messages, written = _SENT[kind]
            messages.inc(frames)
            written.inc(size)
    if outcome.conflated:
        CONFLATED.inc(outcome.conflated)
    return outcome


class MeteredFanout(Fanout):
    """The fan-out, recording what each operation wrote and how long each broadcast took."""

    def __init__(
        self,
        frame: Callable[[bytes], bytes] = unframed,
        clock: Clock = SYSTEM,
        board_id: str = ALL_TIME,
    ) -> None:
        super().__init__(frame, board_id)
        self.clock = clock

    def add(self, client: Client) -> Outcome:
        return record(super().add(client))

    def resync(self, client: Client) -> Outcome:
        return record(super().resync(client))

    def catch_up(self, client: Client) -> Outcome:
        return record(super().catch_up(client))

    def ping(self) -> Outcome:
        return record(super().ping())

    def reset(self, board: Board, period: str | None = None) -> Outcome:
        outcome = record(super().reset(board, period))
        if self.board_id == ALL_TIME:
            VERSION.set(self.version)
        return outcome

    def publish(self, board: Board, event_times_ms: Sequence[int] = ()) -> Outcome:
        started = self.clock.monotonic()
        outcome = super().publish(board, event_times_ms)
        if outcome.diff is None:
            return outcome
        BROADCAST.observe(self.clock.monotonic() - started)
        record(outcome)
        if self.board_id == ALL_TIME:
            VERSION.set(self.version)
        now_ms = self.clock.time() * 1000
        for ts in outcome.events_ms:
            EVENT_DELAY.observe(max(0.0, now_ms - ts) / 1000)
        return outcome
