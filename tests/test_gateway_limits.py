"""Per-address connection counting without I/O, and the settings that configure it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.broadcast_gateway.limits import IpCounter
from services.broadcast_gateway.settings import GatewaySettings

ADDRESSES = ["198.51.100.1", "198.51.100.2", "2001:db8::1"]


def test_an_address_gets_its_limit_and_no_more() -> None:
    counter = IpCounter(limit=3)
    assert [counter.acquire("198.51.100.1") for _ in range(4)] == [True, True, True, False]
    assert counter.count("198.51.100.1") == 3


def test_a_refusal_counts_nothing() -> None:
    counter = IpCounter(limit=1)
    assert counter.acquire("a")
    assert not counter.acquire("a")
    counter.release("a")
    assert counter.count("a") == 0
    assert counter.acquire("a")


def test_addresses_are_counted_apart() -> None:
    counter = IpCounter(limit=1)
    assert counter.acquire("198.51.100.1")
    assert counter.acquire("198.51.100.2")
    assert not counter.acquire("198.51.100.1")


def test_a_release_makes_room_again() -> None:
    counter = IpCounter(limit=2)
    assert counter.acquire("a")
    assert counter.acquire("a")
    counter.release("a")
    assert counter.acquire("a")
    assert not counter.acquire("a")


def test_zero_means_unlimited_but_still_counted() -> None:
    counter = IpCounter(limit=0)
    assert all(counter.acquire("a") for _ in range(1000))
    assert counter.count("a") == 1000


def test_an_address_is_forgotten_with_its_last_connection() -> None:
    counter = IpCounter(limit=5)
    for address in ADDRESSES:
        counter.acquire(address)
    assert len(counter) == 3
    for address in ADDRESSES:
        counter.release(address)
    assert len(counter) == 0


def test_releasing_more_than_was_acquired_is_an_error() -> None:
    counter = IpCounter(limit=5)
    counter.acquire("a")
    counter.release("a")
    with pytest.raises(ValueError, match="holds no connection"):
        counter.release("a")
    with pytest.raises(ValueError, match="holds no connection"):
        counter.release("never-seen")
    assert len(counter) == 0


def test_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="unlimited"):
        IpCounter(limit=-1)


OPS = st.lists(st.tuples(st.booleans(), st.sampled_from(ADDRESSES)), max_size=60)


@given(st.integers(0, 4), OPS)
def test_counts_follow_a_model_of_open_connections(limit: int, ops: list[tuple[bool, str]]) -> None:
    counter = IpCounter(limit)
    model: dict[str, int] = {}
    for opening, address in ops:
        held = model.get(address, 0)
        if opening:
            allowed = limit == 0 or held < limit
            assert counter.acquire(address) is allowed
            model[address] = held + allowed
        elif held:
            counter.release(address)
            model[address] = held - 1
        for a in ADDRESSES:
            assert counter.count(a) == model.get(a, 0)
            assert limit == 0 or counter.count(a) <= limit
        assert len(counter) == sum(1 for n in model.values() if n)


def test_per_ip_settings_defaults() -> None:
    settings = GatewaySettings()
    assert settings.gateway_max_connections_per_ip == 20
    assert settings.gateway_trusted_proxies == []


def test_per_ip_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MAX_CONNECTIONS_PER_IP", "0")
    monkeypatch.setenv("GATEWAY_TRUSTED_PROXIES", '["10.0.0.0/8", "::1"]')
    settings = GatewaySettings()
    assert settings.gateway_max_connections_per_ip == 0
    assert settings.gateway_trusted_proxies == ["10.0.0.0/8", "::1"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"gateway_trusted_proxies": ["10.0.0.0/33"]},
        {"gateway_trusted_proxies": ["proxy.internal"]},
        {"gateway_max_connections_per_ip": -1},
    ],
)
def test_bad_per_ip_settings_stop_the_start(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**overrides)  # type: ignore[arg-type]
