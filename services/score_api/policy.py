"""Who may award what: the trust mode of each action, decided without I/O.

A player's token (scope ``score:write``) awards to its own ``sub``: ``client`` actions as
they are, ``ticket`` actions only with a ticket, ``server`` actions never. A trusted
reporter's token (scope ``score:report``, a game server's client credentials) names the user
in the body and may award any action; it is the witness, so it needs no ticket. With
``PLAYER_WRITES=false`` only reporters award.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.score_api.actions import Action
from services.score_api.problems import Problem
from services.score_api.tokens import SCOPE_REPORT, SCOPE_WRITE, Claims, ScopeError
from services.score_api.validation import AwardBody


@dataclass(frozen=True, slots=True)
class Writer:
    """Whose score an award raises, under which name ("" keeps the stored one), and the
    reporter that vouches for it (None: the player themself)."""

    user_id: str
    name: str
    reporter: str | None = None


def may_write(claims: Claims) -> None:
    """Any write needs a player's or a reporter's scope (checked before the body is read)."""
    if not claims.scopes & {SCOPE_WRITE, SCOPE_REPORT}:
        raise ScopeError(SCOPE_WRITE)


def authorise_award(
    body: AwardBody, claims: Claims, action: Action, *, player_writes: bool
) -> Writer:
    """The writer of this award, or the refusal (``ScopeError`` or a ``Problem``)."""
    if body.user_id is not None:
        claims.require(SCOPE_REPORT)
        return Writer(body.user_id, body.name or "", claims.sub)
    claims.require(SCOPE_WRITE)
    if not player_writes:
        raise player_writes_off()
    if action.mode == "server":
        raise Problem(
            403,
            "reporter-required",
            "this action is reported by the game server, not by a player",
            reason="reporter_required",
        )
    if action.mode == "ticket" and body.ticket is None:
        raise Problem(
            422,
            "ticket-required",
            "this action needs the ticket that POST /api/actions issued when it started",
            reason="ticket_required",
        )
    if action.mode != "ticket" and body.ticket is not None:
        raise Problem(
            422, "ticket-unexpected", "this action takes no ticket", reason="ticket_unexpected"
        )
    return Writer(claims.sub, claims.name)


def authorise_start(claims: Claims, action: Action, *, player_writes: bool) -> None:
    """A player may start (take a ticket for) a ticket-mode action."""
    claims.require(SCOPE_WRITE)
    if not player_writes:
        raise player_writes_off()
    if action.mode != "ticket":
        raise Problem(
            422,
            "not-a-ticket-action",
            f"this action is in {action.mode} mode and takes no ticket",
            reason="not_a_ticket_action",
        )


def player_writes_off() -> Problem:
    return Problem(
        403,
        "player-writes-off",
        "players cannot write scores here: the game server reports them",
        reason="player_writes_off",
    )
