"""Settings every service reads (pydantic-settings); each service subclasses ``SharedSettings``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Clearly marked development default: usable only while ENVIRONMENT=development.
DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105

_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class SharedSettings(BaseSettings):
    """Connection URLs, key layout and token rules common to all services."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/leaderboard"
    redis_key_prefix: str = "lb"
    board_id: str = "global"
    log_level: str = "INFO"

    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_secret: str = DEV_JWT_SECRET
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    @field_validator("redis_key_prefix", "board_id")
    @classmethod
    def _safe_key_part(cls, value: str) -> str:
        # These end up inside a Redis Cluster hash tag, so braces and spaces are refused.
        if not _KEY_PART.match(value):
            raise ValueError("must be 1..32 characters of [A-Za-z0-9_.-]")
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _no_none_algorithm(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        if any(alg.lower() == "none" for alg in value):
            raise ValueError("the 'none' algorithm is never accepted")
        return value

    @model_validator(mode="after")
    def _production_rules(self) -> SharedSettings:
        if self.environment == "production" and self.jwt_secret == DEV_JWT_SECRET:
            raise ValueError("the development JWT secret is refused in production")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"
