"""Settings validation: production refuses development defaults; key parts stay cluster-safe."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.persister.settings import PersisterSettings
from services.score_api.settings import ApiSettings, TokenSettings
from shared.settings import SharedSettings

PROD: dict[str, Any] = {
    "environment": "production",
    "jwt_issuer": "https://id.example",
    "jwt_audience": "board",
}


def test_production_refuses_the_development_or_a_short_secret() -> None:
    with pytest.raises(ValidationError, match="never the development secret"):
        TokenSettings(**PROD)
    with pytest.raises(ValidationError, match="at least 32"):
        TokenSettings(**PROD, jwt_secret="short")
    assert TokenSettings(**PROD, jwt_secret="s" * 40).is_production


def test_production_requires_issuer_and_audience() -> None:
    with pytest.raises(ValidationError, match="JWT_ISSUER and JWT_AUDIENCE"):
        TokenSettings(environment="production", jwt_secret="s" * 40)


def test_services_without_tokens_start_in_production_without_jwt_settings() -> None:
    assert SharedSettings(environment="production").is_production


def test_none_algorithm_cannot_be_configured() -> None:
    with pytest.raises(ValidationError, match="none"):
        TokenSettings(jwt_algorithms=["HS256", "none"])


def test_a_pem_is_refused_as_an_hmac_secret() -> None:
    with pytest.raises(ValidationError, match="PEM"):
        TokenSettings(jwt_secret="-----BEGIN PUBLIC KEY-----\nMIIB...")


def test_public_key_algorithms_need_a_key_source() -> None:
    with pytest.raises(ValidationError, match="JWKS"):
        TokenSettings(jwt_algorithms=["RS256"])


def test_jwks_url_must_be_https() -> None:
    with pytest.raises(ValidationError, match="https"):
        TokenSettings(jwt_algorithms=["RS256"], jwt_jwks_url="http://id.example/jwks")


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


@pytest.mark.parametrize(
    "setting",
    [
        {"rate_limit_ip_per_second": 1_000_001},
        {"rate_limit_user_per_second": 5_000_000},
    ],
)
def test_a_quota_larger_than_its_window_in_microseconds_is_refused_at_start(
    setting: dict[str, int],
) -> None:
    # Before: the interval window/quota rounded to 0 us and the award script divided by zero.
    with pytest.raises(ValidationError, match="one per microsecond"):
        ApiSettings(**setting)  # type: ignore[arg-type]


def test_the_largest_quota_a_window_holds_is_accepted() -> None:
    assert ApiSettings(rate_limit_ip_per_second=1_000_000).ip_limits()[0].interval_us == 1


@pytest.mark.parametrize("value", ["nan", "inf", "1e9", "-86401", "²", "", "abc"])
def test_a_clock_offset_that_is_no_bounded_number_stops_the_start(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOCK_OFFSET_SECONDS", value)
    with pytest.raises(ValidationError, match="clock_offset_seconds"):
        SharedSettings()


def test_the_clock_offset_defaults_to_none_and_takes_a_bounded_shift() -> None:
    assert SharedSettings().clock_offset_seconds == 0.0
    assert SharedSettings(clock_offset_seconds=-120).clock_offset_seconds == -120.0


PROOF_OF_ACTION_LIMITS = [
    "RATE_LIMIT_USER_PER_HOUR",
    "RATE_LIMIT_REPORTER_PER_SECOND",
    "POINTS_PER_USER_PER_HOUR",
    "POINTS_PER_USER_PER_DAY",
]


@pytest.mark.parametrize("name", PROOF_OF_ACTION_LIMITS)
@pytest.mark.parametrize(
    "value", ["-1", "1.5", "²", "\u0661\u0660\u0660\u0660", "", "1e3", "10" * 20, "nan"]
)
def test_hostile_values_of_the_new_limits_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ApiSettings()


@pytest.mark.parametrize(
    ("settings", "name", "value"),
    [
        *[
            (ApiSettings, "REVOKE_WAIT_SECONDS", v)
            for v in ["0", "-1", "61", "nan", "inf", "", "\u0665", "5\x00", "1e9"]
        ],
        *[
            (PersisterSettings, "BACKUP_KEEP", v)
            for v in ["0", "-1", "10001", "1.5", "", "\u0667", "7\x00", "1e3"]
        ],
        *[(SharedSettings, "PERSISTER_GROUP", v) for v in [""]],
    ],
)
def test_hostile_values_of_the_moderation_and_backup_settings_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, settings: type[SharedSettings], name: str, value: str
) -> None:
    if "\x00" in value:  # the environment cannot hold a NUL: it arrives as an argument
        with pytest.raises(ValidationError):
            settings.model_validate({name.lower(): value})
        return
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        settings()


def test_a_number_setting_read_with_a_trailing_newline_is_that_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value from a file keeps its newline: numbers are read as pydantic reads them, so
    the newline is whitespace around the same number, never a different one."""
    monkeypatch.setenv("REVOKE_WAIT_SECONDS", "5\n")
    monkeypatch.setenv("BACKUP_KEEP", "7\n")
    assert ApiSettings().revoke_wait_seconds == 5.0
    assert PersisterSettings().backup_keep == 7


@pytest.mark.parametrize("name", ["PLAYER_WRITES", "ALLOW_UNBOUNDED_CLIENT_ACTIONS"])
@pytest.mark.parametrize("value", ["maybe", "2", "", "tru", "yes please"])
def test_hostile_values_of_the_trust_switches_stop_the_start(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        ApiSettings()


@pytest.mark.parametrize(
    "actions",
    [
        '{"q": {"points": 10, "mode": "ticket", "max_open": 1000}}',
        '{"q": {"points": 10, "mode": "server", "min_seconds": 5}}',
        '{"q": {"points": 10, "max_per_day": -1}}',
        '{"q": {"points": "10"}}',
        '{"q|x": 10}',
        '["quest"]',
        '{"q": 10',
    ],
)
def test_hostile_catalogues_stop_the_start(monkeypatch: pytest.MonkeyPatch, actions: str) -> None:
    monkeypatch.setenv("ACTIONS", actions)
    # Invalid JSON is pydantic-settings' SettingsError; everything else a ValidationError.
    with pytest.raises((ValidationError, SettingsError)):
        ApiSettings()


def test_a_budget_beyond_its_window_in_microseconds_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POINTS_PER_USER_PER_DAY", str(86_400 * 10**6 + 1))
    with pytest.raises(ValidationError, match="one per microsecond"):
        ApiSettings()
