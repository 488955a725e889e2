"""Pure request checks: idempotency keys, bodies, paging bounds (client addresses: test_netaddr)."""

from __future__ import annotations

import pytest

from services.score_api import validation
from services.score_api.problems import Problem
from services.score_api.validation import AwardBody


def status_of(fn: object, *args: object) -> int:
    with pytest.raises(Problem) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


@pytest.mark.parametrize("key", ["a", "A-b_9", "x" * 64])
def test_valid_idempotency_keys_pass(key: str) -> None:
    assert validation.idempotency_key(key) == key


@pytest.mark.parametrize("key", [None, "", "x" * 65, "has space", "dot.not.allowed", "é"])
def test_invalid_idempotency_keys_are_400(key: str | None) -> None:
    assert status_of(validation.idempotency_key, key) == 400


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(ctype: str | None) -> None:
    assert status_of(validation.content_type_is_json, ctype) == 415


def test_json_content_type_with_charset_passes() -> None:
    validation.content_type_is_json("Application/JSON; charset=utf-8")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"[]",
        b'"quest"',
        b"{}",
        b'{"action": 5}',
        b'{"action": ""}',
        b'{"action": "quest_complete", "points": 1000}',
        b'{"Action": "quest_complete"}',
        # A ticket that is not 32 lowercase hex characters, or not a string.
        b'{"action": "q", "ticket": "' + b"A" * 32 + b'"}',
        b'{"action": "q", "ticket": "' + b"a" * 31 + b'"}',
        b'{"action": "q", "ticket": "' + b"a" * 32 + b'\\n"}',
        b'{"action": "q", "ticket": 5}',
        b'{"action": "q", "ticket": null}',
        # Player and reporter fields mixed, or a reporter body without a valid user.
        b'{"action": "q", "ticket": "' + b"a" * 32 + b'", "user_id": "bob"}',
        b'{"action": "q", "name": "Bob"}',
        b'{"action": "q", "user_id": "bob\\n"}',
        b'{"action": "q", "user_id": ""}',
        b'{"action": "q", "user_id": "b o b"}',
        b'{"action": "q", "user_id": 7}',
        # A reporter's name that breaks the display-name rule.
        b'{"action": "q", "user_id": "bob", "name": ""}',
        b'{"action": "q", "user_id": "bob", "name": "\\u3164"}',
        b'{"action": "q", "user_id": "bob", "name": "a\\u2028b"}',
        b'{"action": "q", "user_id": "bob", "name": "e\\u0301\\u0301\\u0301\\u0301\\u0301\\u0301"}',
        b'{"action": "q", "user_id": "bob", "name": "' + b"n" * 65 + b'"}',
        b'{"action": "q", "user_id": "bob", "name": 5}',
        b'{"action": "q", "user_id": "bob", "name": "Bob\\u0000"}',
        b'{"action": "q", "user_id": "bob", "name": "Bob\\n"}',
        b'{"action": "q", "user_id": "bob", "name": null}',
    ],
)
def test_bodies_other_than_a_player_or_reporter_award_are_422(raw: bytes) -> None:
    assert status_of(validation.award_body, raw) == 422


def test_award_bodies_yield_the_action_ticket_user_and_name() -> None:
    ticket = "0123456789abcdef" * 2
    assert validation.award_body(b'{"action": "quest_complete"}') == AwardBody("quest_complete")
    with_ticket = b'{"action": "quest_complete", "ticket": "%s"}' % ticket.encode()
    assert validation.award_body(with_ticket) == AwardBody("quest_complete", ticket)
    reported = b'{"action": "match_win", "user_id": "bob", "name": " Bob "}'
    assert validation.award_body(reported) == AwardBody("match_win", None, "bob", "Bob")
    unnamed = b'{"action": "match_win", "user_id": "bob"}'
    assert validation.award_body(unnamed) == AwardBody("match_win", None, "bob", None)


@pytest.mark.parametrize(
    "raw", [b"{}", b'{"action": "q", "ticket": "x"}', b'{"action": 1}', b"[]", b'{"action": ""}']
)
def test_start_bodies_other_than_exactly_one_action_are_422(raw: bytes) -> None:
    assert status_of(validation.start_body, raw) == 422
    assert validation.start_body(b'{"action": "quest_complete"}') == "quest_complete"


def test_paging_defaults_and_bounds() -> None:
    assert validation.paging({}) == (10, 0)
    assert validation.paging({"limit": "100", "offset": "10000"}) == (100, 10000)
    for bad in (
        {"limit": "0"},
        {"limit": "101"},
        {"offset": "10001"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"offset": "1e3"},
    ):
        assert status_of(validation.paging, bad) == 422


@pytest.mark.parametrize("raw", ["\u00b2", "\u2460", "\u00b9", "\u0663", "1" * 5000, "0" * 7])
def test_numeric_parameters_take_few_ascii_digits_only(raw: str) -> None:
    # Before: str.isdigit() accepted '²' and int() then raised: a 500 with a traceback.
    assert status_of(validation.paging, {"limit": raw}) == 422
    assert status_of(validation.bounded_int, {"around": raw}, "around", 0, 0, 25) == 422


@pytest.mark.parametrize("user", ["farm\n", "victim\n", "\nx", "a b", "", "x" * 65, "ü"])
def test_user_ids_are_full_matches(user: str) -> None:
    # Before: the pattern ended in '$', which also matches before a trailing newline.
    assert status_of(validation.user_id, user) == 422


def test_idempotency_key_with_a_trailing_newline_is_400() -> None:
    assert status_of(validation.idempotency_key, "key\n") == 400
