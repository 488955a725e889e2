"""Moderation states and what each action does to them, decided without I/O.

A user is ``active``, ``quarantined`` (a shadow ban: hidden from everyone else, their writes
still scored) or ``banned`` (off every board, their writes refused). ``shared/lua/moderate.lua``
carries out the same table atomically in Redis; the persister mirrors the resulting state in
``users.banned`` / ``users.quarantined``. ``tests/test_moderation_model.py`` checks every
(state, action) pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from shared.formats import EventType


class State(StrEnum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"
    BANNED = "banned"


# The actions that move a user between states (revoke and dismiss change no state).
STATE_ACTIONS: Final = (EventType.BAN, EventType.UNBAN, EventType.QUARANTINE, EventType.RELEASE)


@dataclass(frozen=True, slots=True)
class Outcome:
    state: State  # the state after the action
    changed: bool  # False: the action was already in effect (idempotent), or refused
    refused: str = ""  # why the action cannot apply ("" when it applies or is a no-op)


def apply(state: State, action: str) -> Outcome:
    """The outcome of ``action`` (one of ``STATE_ACTIONS``) on a user in ``state``.

    - ban: from any state to banned (a quarantine ends: the ban supersedes it);
    - unban: banned to active;
    - quarantine: active to quarantined; refused for a banned user, who is already hidden and
      refused, so that a quarantine can never quietly undo a ban;
    - release: quarantined to active.
    Anything else leaves the state as it is, unchanged (repeating an action is harmless).
    """
    if action == EventType.BAN:
        return Outcome(State.BANNED, state != State.BANNED)
    if action == EventType.UNBAN:
        return Outcome(State.ACTIVE, True) if state == State.BANNED else Outcome(state, False)
    if action == EventType.QUARANTINE:
        if state == State.BANNED:
            return Outcome(state, False, "banned")
        return Outcome(State.QUARANTINED, state == State.ACTIVE)
    if action == EventType.RELEASE:
        if state == State.QUARANTINED:
            return Outcome(State.ACTIVE, True)
        return Outcome(state, False)
    raise ValueError(f"{action!r} is not a state action")


# (banned, quarantined) after a recorded state action: each one fully determines both,
# since a ban ends a quarantine and a quarantine never applies to a banned user.
FLAGS_AFTER: Final = {
    EventType.BAN: (True, False),
    EventType.UNBAN: (False, False),
    EventType.QUARANTINE: (False, True),
    EventType.RELEASE: (False, False),
}
