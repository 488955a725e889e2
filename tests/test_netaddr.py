"""Which address a request comes from (``X-Forwarded-For`` only through trusted proxies), one
spelling per address, and the subject limits count it under."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.score_api import validation
from shared.netaddr import (
    DEFAULT_IPV6_PREFIX,
    client_ip,
    limit_subject,
    normalise,
    parse,
    parse_networks,
)
from shared.settings import SharedSettings

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


# One address, many spellings: each used to be a counter of its own.

ADDRESS = ipaddress.IPv6Address("2001:db8:0:7::a:1")


@st.composite
def spellings(draw: st.DrawFn, address: ipaddress.IPv6Address) -> str:
    """Any text ``ipaddress`` reads as ``address``: case, leading zeros, any run of zero
    groups as ``::``, an IPv4 tail, brackets, a zone id, blanks."""
    groups = [int(address) >> (16 * (7 - i)) & 0xFFFF for i in range(8)]
    dotted = draw(st.booleans())
    hexes = groups[:6] if dotted else groups
    words = []
    for group in hexes:
        digits = f"{group:x}".zfill(draw(st.integers(len(f"{group:x}"), 4)))
        words.append("".join(c.upper() if draw(st.booleans()) else c for c in digits))
    zero_runs = [
        (i, j)
        for i in range(len(hexes))
        for j in range(i + 1, len(hexes) + 1)
        if all(g == 0 for g in hexes[i:j])
    ]
    if draw(st.booleans()) and zero_runs:
        i, j = draw(st.sampled_from(zero_runs))
        text = ":".join(words[:i]) + "::" + ":".join(words[j:])
    else:
        text = ":".join(words)
    if dotted:
        tail = str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        text += tail if text.endswith("::") else ":" + tail
    if draw(st.booleans()):
        text += "%" + draw(st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8))
    if draw(st.booleans()):
        text = f"[{text}]"
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " "]))


ipv6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@given(ipv6.flatmap(lambda a: st.tuples(st.just(a), spellings(a))))
def test_every_spelling_of_an_address_normalises_to_one_canonical_form(
    case: tuple[ipaddress.IPv6Address, str],
) -> None:
    address, spelling = case
    expected = str(address.ipv4_mapped or address)
    assert normalise(spelling) == expected
    assert client_ip("10.1.1.1", spelling, TRUSTED) == expected
    assert client_ip(spelling, None, TRUSTED) == expected


@given(st.lists(spellings(ADDRESS), min_size=1, max_size=80))
def test_every_spelling_of_one_address_is_one_limit_subject(texts: list[str]) -> None:
    assert {limit_subject(client_ip("10.1.1.1", t, TRUSTED)) for t in texts} == {
        "2001:db8:0:7::/64"
    }


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_addresses_of_one_64_share_a_subject_and_other_64s_do_not(low: int, other: int) -> None:
    base = int(ADDRESS) >> 64 << 64
    assert limit_subject(str(ipaddress.IPv6Address(base | low))) == "2001:db8:0:7::/64"
    neighbour = ipaddress.IPv6Address(((int(ADDRESS) >> 64) ^ (other | 1)) << 64)
    assert limit_subject(str(neighbour)) != "2001:db8:0:7::/64"


@given(st.integers(32, 128), ipv6)
def test_subject_is_the_network_of_the_configured_length(
    prefix: int, address: ipaddress.IPv6Address
) -> None:
    if address.ipv4_mapped is not None:
        return
    subject = limit_subject(str(address), prefix)
    if prefix == 128:
        assert subject == str(address)
    else:
        assert ipaddress.IPv6Network(subject) == ipaddress.IPv6Network((address, prefix), False)


def test_zone_ids_are_dropped() -> None:
    assert normalise("fe80::1%eth0") == "fe80::1"
    assert normalise("[FE80::0001%25]") == "fe80::1"
    assert client_ip("::1%lo", "2001:db8::5%1", TRUSTED) == "2001:db8::5"


def test_brackets_and_blanks_are_accepted_around_an_address() -> None:
    assert parse(" [2001:db8::1] ") == ipaddress.IPv6Address("2001:db8::1")
    assert client_ip("10.1.1.1", " [2001:DB8::1] ,10.2.2.2", TRUSTED) == "2001:db8::1"


def test_a_trusted_proxy_is_recognised_in_any_spelling() -> None:
    assert client_ip("0:0:0:0:0:0:0:1", "198.51.100.7", TRUSTED) == "198.51.100.7"
    assert client_ip("::ffff:10.0.0.1", "198.51.100.7", TRUSTED) == "198.51.100.7"


def test_text_that_is_no_address_is_kept_as_it_is() -> None:
    for text in ("", "testclient", "/run/api.sock", "1.2.3.4%eth0", "010.1.1.1", "[1.2.3.4"):
        assert parse(text) is None
        assert normalise(text) == text
        assert limit_subject(text) == text


def test_ipv4_is_its_own_subject_whatever_the_ipv6_prefix() -> None:
    for prefix in (32, 48, 64, 128):
        assert limit_subject("198.51.100.7", prefix) == "198.51.100.7"
        assert limit_subject("::ffff:198.51.100.7", prefix) == "198.51.100.7"


def test_subject_examples_at_common_prefixes() -> None:
    assert limit_subject("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert limit_subject("2001:db8:1:2:3:4:5:6", 48) == "2001:db8:1::/48"
    assert limit_subject("2001:db8:1:2:3:4:5:6", 56) == "2001:db8:1::/56"
    assert limit_subject("2001:DB8:1:2:3:4:5:6%eth0", 128) == "2001:db8:1:2:3:4:5:6"


def test_a_prefix_outside_ipv6_is_refused() -> None:
    with pytest.raises(ValueError, match=r"0\.\.128"):
        limit_subject("2001:db8::1", 129)


def test_the_shared_setting_defaults_to_64_and_refuses_short_prefixes() -> None:
    assert SharedSettings().ipv6_limit_prefix == DEFAULT_IPV6_PREFIX == 64
    assert SharedSettings(ipv6_limit_prefix=48).ipv6_limit_prefix == 48
    for bad in (31, 129):
        with pytest.raises(ValidationError):
            SharedSettings(ipv6_limit_prefix=bad)
