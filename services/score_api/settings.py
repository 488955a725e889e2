"""Score API settings: the shared ones plus tokens, the listener, the catalogue and limits.

``TokenSettings`` holds the JWT rules; the score API is the only service that verifies
tokens (the development token tool in devstack/ reads them too).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.score_api.actions import DEFAULT_ACTIONS, ActionCatalogue, ActionSpec
from services.score_api.ratelimit import Limit
from shared.settings import SharedSettings

# Clearly marked development default: refused whenever ENVIRONMENT=production.
DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
MIN_PRODUCTION_SECRET = 32
DEFAULT_MAX_LIFETIME_SECONDS = 24 * 3600


class TokenSettings(SharedSettings):
    """How tokens are verified: algorithms, keys, issuer, audience, leeway, longest lifetime."""

    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_secret: str = DEV_JWT_SECRET
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_jwks_url: str | None = None
    jwt_jwks_refresh_seconds: int = Field(default=300, ge=1)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Longest accepted exp - iat (exp - now without iat): a minute to a week.
    jwt_max_lifetime_seconds: int = Field(default=DEFAULT_MAX_LIFETIME_SECONDS, ge=60, le=7 * 86400)

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


class ApiSettings(TokenSettings):
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    actions: dict[str, ActionSpec] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    trusted_proxies: list[str] = Field(default_factory=list)
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    # Longest a cached board page is served (changes without a stream event); 0 turns it off.
    api_board_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # A revocation waits this long for the persisters to store every earlier event (503 after).
    revoke_wait_seconds: float = Field(default=5.0, gt=0, le=60)
    # Abuse limits, shared by all API replicas through Redis; 0 disables one.
    rate_limit_user_per_second: int = Field(default=5, ge=0)
    rate_limit_user_per_minute: int = Field(default=120, ge=0)
    rate_limit_user_per_hour: int = Field(default=1800, ge=0)
    rate_limit_ip_per_second: int = Field(default=50, ge=0)
    # A reporter (game server) counts against its own limit instead of its address's.
    rate_limit_reporter_per_second: int = Field(default=500, ge=0)
    # Points budgets per user, shared by all replicas (GCRA with cost = points; 0 disables).
    points_per_user_per_hour: int = Field(default=1000, ge=0)
    points_per_user_per_day: int = Field(default=5000, ge=0)
    # false: only trusted reporters (score:report tokens) may award points (PlayFab's default).
    player_writes: bool = True
    # Production refuses a client action with neither a cooldown nor a daily cap unless true.
    allow_unbounded_client_actions: bool = False
    # WebSocket URL the live page connects to; "" means ws(s)://<page host>:8001/ws/score.
    api_gateway_url: str = ""
    # What one client may hold before its request reaches the app (services.score_api.httplimits).
    api_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    api_max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    api_max_connections: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _valid_limits(self) -> ApiSettings:
        # Each limit checks its own arithmetic: a bad one stops the start, with its name.
        self.user_limits()
        self.ip_limits()
        self.reporter_limits()
        catalogue = self.catalogue()
        for budget in self.budgets():
            if budget.quota < catalogue.max_points():
                raise ValueError(
                    f"{budget.name} ({budget.quota}) is below the largest action's points "
                    f"({catalogue.max_points()}): that action could never be awarded"
                )
        unbounded = catalogue.unbounded()
        if self.is_production and unbounded and not self.allow_unbounded_client_actions:
            raise ValueError(
                f"client actions with neither cooldown_seconds nor max_per_day: {unbounded}; "
                "a player's token could repeat them as fast as the rate limits allow. Give "
                "them a mode, a cooldown or a daily cap, or set ALLOW_UNBOUNDED_CLIENT_ACTIONS"
            )
        return self

    @field_validator("actions")
    @classmethod
    def _valid_catalogue(cls, value: dict[str, ActionSpec]) -> dict[str, ActionSpec]:
        ActionCatalogue.from_mapping(value)
        return value

    def catalogue(self) -> ActionCatalogue:
        return ActionCatalogue.from_mapping(self.actions)

    def user_limits(self) -> list[Limit]:
        limits = [
            ("user-second", self.rate_limit_user_per_second, 1000),
            ("user-minute", self.rate_limit_user_per_minute, 60_000),
            ("user-hour", self.rate_limit_user_per_hour, 3_600_000),
        ]
        return [Limit(name, quota, window) for name, quota, window in limits if quota > 0]

    def budgets(self) -> list[Limit]:
        """Points per user per rolling hour and day: each award costs its points."""
        limits = [
            ("points-hour", self.points_per_user_per_hour, 3_600_000),
            ("points-day", self.points_per_user_per_day, 86_400_000),
        ]
        return [Limit(name, quota, window, True) for name, quota, window in limits if quota > 0]

    def reporter_limits(self) -> list[Limit]:
        quota = self.rate_limit_reporter_per_second
        return [Limit("reporter-second", quota, 1000)] if quota > 0 else []

    def ip_limits(self) -> list[Limit]:
        limits = [("ip-second", self.rate_limit_ip_per_second, 1000)]
        return [Limit(name, quota, window) for name, quota, window in limits if quota > 0]
