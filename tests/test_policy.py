"""Who may award what (services.score_api.policy), over every combination of scopes, body
form, trust mode and PLAYER_WRITES: exhaustively, since it is small."""

from __future__ import annotations

import itertools

import pytest

from services.score_api.actions import MODES, Action, Mode
from services.score_api.policy import Writer, authorise_award, authorise_start, may_write
from services.score_api.problems import Problem
from services.score_api.tokens import SCOPE_ADMIN, SCOPE_REPORT, SCOPE_WRITE, Claims, ScopeError
from services.score_api.validation import AwardBody

TICKET = "ab" * 16
SCOPE_SETS = [
    frozenset(s)
    for n in range(4)
    for s in itertools.combinations((SCOPE_WRITE, SCOPE_REPORT, SCOPE_ADMIN), n)
]
BODIES = {
    "player": AwardBody("a"),
    "player+ticket": AwardBody("a", TICKET),
    "reporter": AwardBody("a", None, "bob", "Bob"),
    "reporter unnamed": AwardBody("a", None, "bob"),
}


def claims(scopes: frozenset[str]) -> Claims:
    return Claims("alice", "Alice", scopes, 0)


def action(mode: Mode) -> Action:
    return Action(5, mode=mode, max_seconds=60 if mode == "ticket" else 0)


def expected(scopes: frozenset[str], body: str, mode: Mode, player_writes: bool) -> Writer | str:
    """The rule, written out plainly: the outcome or the refusal's slug."""
    if not scopes & {SCOPE_WRITE, SCOPE_REPORT}:
        return "insufficient-scope"
    if body.startswith("reporter"):
        if SCOPE_REPORT not in scopes:
            return "insufficient-scope"
        return Writer("bob", "Bob" if body == "reporter" else "", "alice")
    if SCOPE_WRITE not in scopes:
        return "insufficient-scope"
    if not player_writes:
        return "player-writes-off"
    if mode == "server":
        return "reporter-required"
    has_ticket = body == "player+ticket"
    if mode == "ticket" and not has_ticket:
        return "ticket-required"
    if mode != "ticket" and has_ticket:
        return "ticket-unexpected"
    return Writer("alice", "Alice")


@pytest.mark.parametrize("player_writes", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_every_combination_gets_exactly_the_documented_answer(
    scopes: frozenset[str], body: str, mode: Mode, player_writes: bool
) -> None:
    want = expected(scopes, body, mode, player_writes)
    try:
        may_write(claims(scopes))
        got: Writer | str = authorise_award(
            BODIES[body], claims(scopes), action(mode), player_writes=player_writes
        )
    except ScopeError:
        got = "insufficient-scope"
    except Problem as exc:
        got = exc.slug
    assert got == want


@pytest.mark.parametrize("player_writes", [True, False])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scopes", SCOPE_SETS, ids=lambda s: "+".join(sorted(s)) or "none")
def test_only_a_player_may_start_and_only_a_ticket_action(
    scopes: frozenset[str], mode: Mode, player_writes: bool
) -> None:
    if SCOPE_WRITE not in scopes:
        want = "insufficient-scope"
    elif not player_writes:
        want = "player-writes-off"
    elif mode != "ticket":
        want = "not-a-ticket-action"
    else:
        want = "started"
    try:
        authorise_start(claims(scopes), action(mode), player_writes=player_writes)
        got = "started"
    except ScopeError:
        got = "insufficient-scope"
    except Problem as exc:
        got = exc.slug
    assert got == want
