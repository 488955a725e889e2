"""Every format that crosses a process boundary, defined once.

Python code imports these names; the Lua scripts receive them as constants prepended when
they are loaded (``lua_constants``); the OpenAPI document and the validators build their
patterns from the same ``Pattern`` objects. ``tests/test_formats.py`` fails when a copy
drifts: a literal width, separator or field name in a script, or a pattern written out twice.

- Board members: ``<seq, zero-padded to SEQ_WIDTH digits>:<user_id>`` (see shared.board).
- The banned hash's value: ``<score>|<member>``, both parts empty for a user who never scored.
- Identifiers: ``USER_ID``, ``IDEMPOTENCY_KEY``, ``REQUEST_ID``, ``EVENT_ID`` below.
- Stream events: the field names of ``Field`` and the types of ``EventType``
  (shared.events describes the event).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

SEQ_WIDTH = 16
MEMBER_SEP = ":"
BANNED_SEP = "|"
# A score event's ``periods``: ``<board_id>=<period_id>`` pairs separated by spaces.
PERIOD_SEP = "="
MAX_SCORE = 2**53 - 1  # exact in a double: the sorted set's score and Lua's numbers


@dataclass(frozen=True)
class Pattern:
    """An identifier format: ``min_len..max_len`` characters of the class ``[chars]``.

    ``matches`` uses a full match, so a trailing newline is refused (``$`` would accept it).
    """

    chars: str
    max_len: int
    min_len: int = 1
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.regex))

    @property
    def regex(self) -> str:
        return f"[{self.chars}]{{{self.min_len},{self.max_len}}}"

    @property
    def schema_pattern(self) -> str:
        """The JSON Schema (ECMA-262) form, anchored at both ends."""
        return f"^{self.regex}$"

    def matches(self, value: str) -> bool:
        return self._compiled.fullmatch(value) is not None

    def describe(self) -> str:
        return f"{self.min_len}..{self.max_len} characters of [{self.chars}]"


USER_ID = Pattern("A-Za-z0-9_.:@-", 64)
IDEMPOTENCY_KEY = Pattern("A-Za-z0-9_-", 64)
REQUEST_ID = Pattern("A-Za-z0-9._-", 64)
# What the persister stores; the score API writes 32 lowercase hex characters.
EVENT_ID = Pattern("0-9A-Za-z_-", 64)
API_EVENT_ID = Pattern("0-9a-f", 32, 32)
# Parts of Redis key names (prefix, board id): inside a Cluster hash tag, so no braces.
KEY_PART = Pattern("A-Za-z0-9_.-", 32)
# Board ids (shared.boards): part of key names, query parameters and frames.
BOARD_ID = Pattern("a-z0-9_-", 32)
# IANA time zone names, as BOARDS gives them (shared.periods), before zoneinfo reads them.
TIMEZONE = Pattern("A-Za-z0-9_+/-", 64)
# Action tickets (services.score_api.tickets): 128 random bits, as lowercase hex.
TICKET = Pattern("0-9a-f", 32, 32)
# A SHA-256 digest as lowercase hex (backup manifests).
SHA256_HEX = Pattern("0-9a-f", 64, 64)
# Anomaly flags' ids (user_flags.flag_id, a bigserial) in paths and events: digits only.
FLAG_ID = Pattern("0-9", 18)
# Action names in the catalogue; they appear in key names, events and metrics labels.
ACTION = Pattern("A-Za-z0-9_.-", 64)


# Version 2 adds ``periods`` to score events; version 3 the moderation pipeline's types
# (quarantine, release, revoke, dismiss) and fields (reason, revocation, flag). Readers
# accept every version listed; an older reader refuses a newer event (and dead-letters it).
EVENT_VERSION = "3"
EVENT_VERSIONS = ("1", "2", "3")


class Field:
    """The field names of a stream event (shared.events); plain strings, read per event."""

    VERSION: Final = "v"
    TYPE: Final = "type"
    EVENT_ID: Final = "event_id"
    USER_ID: Final = "user_id"
    NAME: Final = "name"
    ACTION: Final = "action"
    POINTS: Final = "points"
    SCORE: Final = "score"
    SEQ: Final = "seq"
    IDEMPOTENCY_KEY: Final = "idempotency_key"
    TS: Final = "ts"
    CLIENT_IP: Final = "client_ip"
    # Optional audit fields.
    REQUEST_ID: Final = "request_id"
    USER_AGENT: Final = "user_agent"
    JTI: Final = "jti"
    ISS: Final = "iss"
    BY: Final = "by"
    # Proof of action: the redeemed ticket and how long the action took (start to award),
    # and the trusted reporter (a game server's token subject) that awarded it.
    TICKET: Final = "ticket"
    DURATION_MS: Final = "duration_ms"
    REPORTER: Final = "reporter"
    # Version 2: the periods a score event counted in, ``<board_id>=<period_id>`` separated
    # by spaces (empty without periodic boards; shared.boards).
    PERIODS: Final = "periods"
    # Version 3, on moderation events: the moderator's reason, the revocation's id (revoke),
    # the flag's id (dismiss).
    REASON: Final = "reason"
    REVOCATION: Final = "revocation"
    FLAG: Final = "flag"


def _constants(namespace: type) -> dict[str, str]:
    return {k: v for k, v in vars(namespace).items() if k.isupper() and isinstance(v, str)}


FIELDS = _constants(Field)
OPTIONAL_FIELDS = (
    Field.REQUEST_ID,
    Field.USER_AGENT,
    Field.JTI,
    Field.ISS,
    Field.BY,
    Field.TICKET,
    Field.DURATION_MS,
    Field.REPORTER,
    Field.PERIODS,
    Field.REASON,
    Field.REVOCATION,
    Field.FLAG,
)
REQUIRED_FIELDS = tuple(v for v in FIELDS.values() if v not in OPTIONAL_FIELDS)


class EventType:
    SCORE: Final = "score"
    BAN: Final = "ban"
    UNBAN: Final = "unban"
    # Version 3: the moderation pipeline (README, Moderation).
    QUARANTINE: Final = "quarantine"
    RELEASE: Final = "release"
    REVOKE: Final = "revoke"
    DISMISS: Final = "dismiss"


EVENT_TYPES = _constants(EventType)


class TicketState:
    """The ``state`` of an action ticket's hash (written by ticket.lua, read by award.lua)."""

    OPEN: Final = "open"
    REDEEMED: Final = "redeemed"


TICKET_STATES = _constants(TicketState)


def encode_member(seq: int, user_id: str) -> str:
    if not 0 <= seq < 10**SEQ_WIDTH:
        raise ValueError("sequence out of range")
    return f"{seq:0{SEQ_WIDTH}d}{MEMBER_SEP}{user_id}"


def decode_member(value: str) -> tuple[int, str]:
    return int(value[:SEQ_WIDTH]), value[SEQ_WIDTH + len(MEMBER_SEP) :]


def banned_value(score: int | None, board_member: str | None) -> str:
    """The ``banned`` hash's value; ``None`` parts (never scored) are stored empty."""
    return f"{'' if score is None else score}{BANNED_SEP}{board_member or ''}"


def banned_parts(value: str) -> tuple[int | None, str | None]:
    """(score, member) of a ``banned`` value; None for the empty parts."""
    score, _, board_member = value.partition(BANNED_SEP)
    return (int(score) if score else None), (board_member or None)


def period_tag(board_id: str, period_id: str) -> str:
    """One entry of a score event's ``periods``: ``<board_id>=<period_id>``."""
    return f"{board_id}{PERIOD_SEP}{period_id}"


def banned_period_field(user_id: str, board_id: str, period_id: str) -> str:
    """The ``banned:periods`` field of a banned user's entry in one period (ban.lua)."""
    return BANNED_SEP.join((user_id, board_id, period_id))


def _lua_string(value: str) -> str:
    if not re.fullmatch(r"[\w%:|.=-]*", value):
        raise ValueError(f"{value!r} is not a plain Lua string constant")
    return f"'{value}'"


def lua_constants() -> str:
    """The Lua prelude every script is loaded with: the formats above, as locals."""
    fields = ", ".join(f"{k.lower()} = {_lua_string(v)}" for k, v in FIELDS.items())
    types = ", ".join(f"{k.lower()} = {_lua_string(v)}" for k, v in EVENT_TYPES.items())
    states = ", ".join(f"{k.lower()} = {_lua_string(v)}" for k, v in TICKET_STATES.items())
    lines = [
        "-- Prepended by shared.formats.lua_constants(): the one source of these formats.",
        f"local SEQ_WIDTH = {SEQ_WIDTH}",
        f"local MEMBER_FORMAT = {_lua_string(f'%0{SEQ_WIDTH}d{MEMBER_SEP}')}",
        f"local MEMBER_USER_AT = {SEQ_WIDTH + len(MEMBER_SEP) + 1}",
        f"local BANNED_SEP = {_lua_string(BANNED_SEP)}",
        f"local PERIOD_SEP = {_lua_string(PERIOD_SEP)}",
        f"local MAX_SCORE = {MAX_SCORE}",
        f"local EVENT_VERSION = {_lua_string(EVENT_VERSION)}",
        f"local FIELD = {{{fields}}}",
        f"local TYPE = {{{types}}}",
        f"local TICKET_STATE = {{{states}}}",
    ]
    return "\n".join(lines) + "\n"
