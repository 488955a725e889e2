"""Gateway settings: the shared ones plus the listener, coalescing, limits and shutdown."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.netaddr import parse_networks
from shared.settings import SharedSettings

DEV_ORIGINS = ("http://127.0.0.1:8000", "http://localhost:8000")


class GatewaySettings(SharedSettings):
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8001, ge=0, le=65535)
    gateway_path: str = "/ws/score"
    gateway_tick_ms: int = Field(default=50, ge=1, le=10_000)
    gateway_top_n: int = Field(default=10, ge=1, le=100)
    gateway_ping_seconds: float = Field(default=25.0, gt=0)
    gateway_protocol_ping_interval: float = Field(default=20.0, gt=0)
    gateway_protocol_ping_timeout: float = Field(default=20.0, gt=0)
    # "*" allows every origin; a request without an Origin header is not from a browser page.
    gateway_allowed_origins: list[str] = Field(default_factory=lambda: list(DEV_ORIGINS))
    gateway_allow_missing_origin: bool = True
    gateway_max_connections: int = Field(default=10_000, ge=1)
    # Per client address and instance (0: unlimited). Behind a proxy, list it in
    # ``gateway_trusted_proxies``, or every client counts as the proxy's address.
    gateway_max_connections_per_ip: int = Field(default=20, ge=0)
    # CIDRs whose X-Forwarded-For is believed (the rule of shared.netaddr.client_ip).
    gateway_trusted_proxies: list[str] = Field(default_factory=list)
    gateway_handshake_timeout: float = Field(default=10.0, gt=0)
    gateway_max_message_bytes: int = Field(default=1024, ge=64)
    gateway_inbound_per_second: float = Field(default=2.0, gt=0)
    gateway_inbound_burst: int = Field(default=5, ge=1)
    gateway_slow_bytes: int = Field(default=64 * 1024, ge=1024)
    # Kernel send buffer per connection (0: the kernel's autotuning, up to MBs per socket).
    # Bounded, so a stalled client's backlog shows up in ``gateway_slow_bytes`` quickly.
    gateway_socket_send_buffer: int = Field(default=64 * 1024, ge=0)
    gateway_slow_seconds: float = Field(default=10.0, gt=0)
    gateway_close_timeout: float = Field(default=5.0, gt=0)
    gateway_shutdown_seconds: float = Field(default=10.0, gt=0)
    gateway_shutdown_batch: int = Field(default=500, ge=1)
    gateway_redis_timeout_seconds: float = Field(default=2.0, gt=0)
    gateway_reconnect_max_seconds: float = Field(default=5.0, gt=0)
    # Safety net for board changes that append no stream event (e.g. an offline rebuild).
    gateway_refresh_seconds: float = Field(default=30.0, gt=0)
    gateway_stream_batch: int = Field(default=1000, ge=1)

    @field_validator("gateway_trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        parse_networks(value)  # a typo must stop the start, not silently trust nobody
        return value
