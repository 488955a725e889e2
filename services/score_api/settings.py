"""Score API settings: the shared ones plus the listener, the catalogue and idempotency."""

from __future__ import annotations

from pydantic import Field, field_validator

from services.score_api.actions import DEFAULT_ACTIONS, ActionCatalogue
from shared.settings import TokenSettings


class ApiSettings(TokenSettings):
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    actions: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    trusted_proxies: list[str] = Field(default_factory=list)
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    # WebSocket URL the live page connects to; "" means ws(s)://<page host>:8001/ws/score.
    api_gateway_url: str = ""

    @field_validator("actions")
    @classmethod
    def _valid_catalogue(cls, value: dict[str, int]) -> dict[str, int]:
        ActionCatalogue.from_mapping(value)
        return value

    def catalogue(self) -> ActionCatalogue:
        return ActionCatalogue.from_mapping(self.actions)
