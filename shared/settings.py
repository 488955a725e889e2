"""Settings every service reads (pydantic-settings); each service subclasses one of these.

``SharedSettings`` is what every service needs (connections, key layout, logging, clock).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.boards import DEFAULT_BOARDS, Boards
from shared.formats import KEY_PART


def _default_boards() -> dict[str, dict[str, str | int]]:
    return {name: dict(spec) for name, spec in DEFAULT_BOARDS.items()}


class SharedSettings(BaseSettings):
    """Connection URLs and the key layout common to all services."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/leaderboard"
    redis_key_prefix: str = "lb"
    board_id: str = "global"
    log_level: str = "INFO"
    # Shifts this process's wall clock (shared.clock); for tests of replicas whose clocks
    # disagree. Limits and cooldowns follow Redis's TIME and are unaffected.
    clock_offset_seconds: float = Field(default=0.0, ge=-86_400, le=86_400)
    # Address limits count an IPv6 client per network of this length (shared.netaddr).
    ipv6_limit_prefix: int = Field(default=64, ge=32, le=128)
    # The boards of the family and their resets (shared.boards, shared.periods).
    boards: dict[str, dict[str, str | int]] = Field(default_factory=_default_boards)
    # Periods of each periodic board kept in Redis: the current one and the ones before.
    board_retention_periods: int = Field(default=2, ge=1, le=100)
    # The persisters' consumer group; the score API waits on it before a revocation.
    persister_group: str = Field(default="persister", min_length=1)

    @field_validator("redis_key_prefix", "board_id")
    @classmethod
    def _safe_key_part(cls, value: str) -> str:
        # These end up inside a Redis Cluster hash tag, so braces and spaces are refused.
        if not KEY_PART.matches(value):
            raise ValueError(f"must be {KEY_PART.describe()}")
        return value

    @field_validator("boards")
    @classmethod
    def _valid_boards(
        cls, value: dict[str, dict[str, str | int]]
    ) -> dict[str, dict[str, str | int]]:
        Boards.from_mapping(value)
        return value

    def board_family(self) -> Boards:
        return Boards.from_mapping(self.boards)

    @property
    def is_production(self) -> bool:
        return self.environment == "production"
