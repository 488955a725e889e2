"""Settings every service reads (pydantic-settings); each service subclasses one of these.

``SharedSettings`` is what every service needs (connections, key layout, logging);
``TokenSettings`` adds the JWT rules, for the services and tools that handle tokens.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Clearly marked development default: refused whenever ENVIRONMENT=production.
DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
MIN_PRODUCTION_SECRET = 32

_KEY_PART = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


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

    @field_validator("redis_key_prefix", "board_id")
    @classmethod
    def _safe_key_part(cls, value: str) -> str:
        # These end up inside a Redis Cluster hash tag, so braces and spaces are refused.
        if not _KEY_PART.match(value):
            raise ValueError("must be 1..32 characters of [A-Za-z0-9_.-]")
        return value

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


class TokenSettings(SharedSettings):
    """How tokens are verified: algorithms, keys, issuer, audience, leeway."""

    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_seconds: int = Field(default=300, ge=1)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        if any(alg.lower() == "none" for alg in value):
            raise ValueError("the 'none' algorithm is never accepted")
        unknown = set(value) - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {sorted(unknown)}")
        return value

    @field_validator("jwt_jwks_url")
    @classmethod
    def _https_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("JWT_JWKS_URL must be an https:// URL")
        return value

    @model_validator(mode="after")
    def _key_rules(self) -> TokenSettings:
        algorithms = set(self.jwt_algorithms)
        if algorithms & HMAC_ALGORITHMS:
            if "-----BEGIN" in self.jwt_secret:
                # A PEM as an HMAC secret is exactly the algorithm-confusion attack's setup.
                raise ValueError("JWT_SECRET looks like a PEM key; HMAC needs a shared secret")
            if self.is_production and (
                self.jwt_secret == DEV_JWT_SECRET or len(self.jwt_secret) < MIN_PRODUCTION_SECRET
            ):
                raise ValueError(
                    "production needs a JWT_SECRET of at least 32 characters, "
                    "never the development secret"
                )
        has_public = self.jwt_public_key_file or self.jwt_jwks_file or self.jwt_jwks_url
        if algorithms & PUBLIC_KEY_ALGORITHMS and not has_public:
            raise ValueError("RS*/ES* algorithms need JWT_PUBLIC_KEY_FILE or a JWKS")
        if self.is_production and not (self.jwt_issuer and self.jwt_audience):
            raise ValueError("production requires JWT_ISSUER and JWT_AUDIENCE")
        return self
