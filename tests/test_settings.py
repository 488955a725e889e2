"""Settings validation: production refuses development defaults; key parts stay cluster-safe."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.score_api.settings import ApiSettings
from shared.settings import SharedSettings


def test_production_refuses_the_development_secret() -> None:
    with pytest.raises(ValidationError, match="development JWT secret"):
        SharedSettings(environment="production")
    assert SharedSettings(environment="production", jwt_secret="s" * 40).is_production


def test_none_algorithm_cannot_be_configured() -> None:
    with pytest.raises(ValidationError, match="none"):
        SharedSettings(jwt_algorithms=["HS256", "none"])


@pytest.mark.parametrize("prefix", ["", "has{brace", "with space", "x" * 33])
def test_key_prefix_must_be_hash_tag_safe(prefix: str) -> None:
    with pytest.raises(ValidationError):
        SharedSettings(redis_key_prefix=prefix)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_PORT", "9123")
    monkeypatch.setenv("ACTIONS", '{"boss_kill": 40}')
    monkeypatch.setenv("REDIS_URL", "redis://example:1/2")
    settings = ApiSettings()
    assert (settings.api_port, settings.actions, settings.redis_url) == (
        9123,
        {"boss_kill": 40},
        "redis://example:1/2",
    )


def test_invalid_catalogue_is_refused_at_startup() -> None:
    with pytest.raises(ValidationError, match="points"):
        ApiSettings(actions={"free_points": 0})
