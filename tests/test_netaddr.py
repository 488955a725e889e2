"""Which address a request comes from: ``X-Forwarded-For`` only through trusted proxies."""

from __future__ import annotations

import pytest

from services.score_api import validation
from shared.netaddr import client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


def test_forwarded_for_ignored_from_untrusted_peer() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"


def test_forwarded_for_believed_from_trusted_proxy() -> None:
    assert client_ip("10.1.1.1", "198.51.100.7", TRUSTED) == "198.51.100.7"


def test_client_cannot_forge_address_through_the_proxy() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1"; the proxy appended the real address.
    assert client_ip("10.1.1.1", "1.1.1.1, 198.51.100.7", TRUSTED) == "198.51.100.7"


def test_chain_of_trusted_proxies_is_skipped() -> None:
    assert client_ip("10.1.1.1", "198.51.100.7, 10.2.2.2", TRUSTED) == "198.51.100.7"


def test_garbage_forwarded_for_falls_back_to_peer() -> None:
    assert client_ip("10.1.1.1", "not-an-ip", TRUSTED) == "10.1.1.1"


def test_garbage_left_of_a_real_hop_stops_at_the_last_believable_hop() -> None:
    assert client_ip("10.1.1.1", "junk, 10.2.2.2", TRUSTED) == "10.2.2.2"


def test_only_trusted_proxies_in_the_header_yield_the_leftmost_one() -> None:
    assert client_ip("10.1.1.1", "10.3.3.3, 10.2.2.2", TRUSTED) == "10.3.3.3"


def test_no_header_or_no_trust_gives_the_peer() -> None:
    assert client_ip("10.1.1.1", None, TRUSTED) == "10.1.1.1"
    assert client_ip("10.1.1.1", "198.51.100.7", ()) == "10.1.1.1"


def test_ipv6_proxy_and_client() -> None:
    assert client_ip("::1", "2001:db8::5", TRUSTED) == "2001:db8::5"


def test_missing_peer_is_an_empty_address() -> None:
    assert client_ip(None, "198.51.100.7", TRUSTED) == ""


def test_networks_accept_host_bits_and_refuse_garbage() -> None:
    assert [str(n) for n in parse_networks(["192.0.2.7/24", "::1"])] == ["192.0.2.0/24", "::1/128"]
    with pytest.raises(ValueError, match="does not appear to be"):
        parse_networks(["not-a-network"])


def test_score_api_validation_still_exports_the_moved_names() -> None:
    assert validation.client_ip is client_ip
    assert validation.parse_networks is parse_networks


def test_ipv4_mapped_addresses_count_as_ipv4() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("::ffff:10.1.1.1", "::ffff:198.51.100.7", trusted) == "198.51.100.7"
    assert client_ip("::ffff:203.0.113.9", None, trusted) == "203.0.113.9"
