"""Score API settings: the shared ones plus the listener, the catalogue and idempotency."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.score_api.actions import DEFAULT_ACTIONS, ActionCatalogue, ActionSpec
from services.score_api.ratelimit import Limit
from shared.settings import TokenSettings


class ApiSettings(TokenSettings):
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    actions: dict[str, ActionSpec] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    trusted_proxies: list[str] = Field(default_factory=list)
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    # Longest a cached board page is served (changes without a stream event); 0 turns it off.
    api_board_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Abuse limits, shared by all API replicas through Redis; 0 disables one.
    rate_limit_user_per_second: int = Field(default=5, ge=0)
    rate_limit_user_per_minute: int = Field(default=120, ge=0)
    rate_limit_ip_per_second: int = Field(default=50, ge=0)
    # WebSocket URL the live page connects to; "" means ws(s)://<page host>:8001/ws/score.
    api_gateway_url: str = ""

    @field_validator("actions")
    @classmethod
    def _valid_catalogue(cls, value: dict[str, ActionSpec]) -> dict[str, ActionSpec]:
        ActionCatalogue.from_mapping(value)
        return value

    def catalogue(self) -> ActionCatalogue:
        return ActionCatalogue.from_mapping(self.actions)

    def user_limits(self) -> list[Limit]:
        limits = [
            Limit("user-second", self.rate_limit_user_per_second, 1000),
            Limit("user-minute", self.rate_limit_user_per_minute, 60_000),
        ]
        return [limit for limit in limits if limit.quota > 0]

    def ip_limits(self) -> list[Limit]:
        limits = [Limit("ip-second", self.rate_limit_ip_per_second, 1000)]
        return [limit for limit in limits if limit.quota > 0]
