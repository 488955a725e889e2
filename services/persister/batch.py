"""What a batch of stream entries means for PostgreSQL, decided without any I/O.

``parse`` turns raw entries into rows to insert, entries to acknowledge as duplicates within
the batch, and entries that are refused (dead-letter candidates). ``user_deltas`` folds the rows
that PostgreSQL reports as newly inserted into one change per user: only those points count, so
a redelivered event never adds twice. ``moderation_states`` and ``flag_decisions`` fold the
inserted moderation events into the users' states and the flags they decide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from shared import redisconn
from shared.events import EventError, ScoreEvent, stream_order
from shared.formats import EVENT_ID, EventType, Field
from shared.moderation import FLAGS_AFTER, STATE_ACTIONS

BIGINT_MAX = 2**63 - 1
_BIGINT_DIGITS = len(str(BIGINT_MAX))
MAX_TEXT = 1024


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry as Redis returned it; ``fields`` is None when it was deleted from the stream."""

    stream_id: str
    fields: Mapping[bytes, bytes] | None


class EventRow(NamedTuple):
    """One ``score_events`` row (a tuple: built once per event, so it must be cheap)."""

    event_id: str
    stream_id: str
    seq: int
    type: str
    user_id: str
    name: str
    action: str
    points: int
    score_after: int
    idempotency_key: str
    client_ip: str
    created_at: datetime
    request_id: str | None = None
    user_agent: str | None = None
    jti: str | None = None
    iss: str | None = None
    moderator: str | None = None
    ticket: str | None = None
    duration_ms: int | None = None
    reporter: str | None = None
    periods: str | None = None
    # Version 3, moderation events: the moderator's reason, the revocation (revoke), the
    # flag (dismiss).
    reason: str | None = None
    revocation: str | None = None
    flag: int | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry that cannot be stored as it is, and why."""

    stream_id: str
    error: str


@dataclass(frozen=True, slots=True)
class UserDelta:
    """What one batch adds to a ``users`` row."""

    user_id: str
    points: int
    name: str
    last_seq: int
    updated_at: datetime
    # The user's earliest award in the batch: ``users.first_award_at`` keeps the earliest.
    first_award_at: datetime


@dataclass(frozen=True)
class Batch:
    rows: list[EventRow] = field(default_factory=list)  # unique event ids, in stream order
    repeats: list[str] = field(default_factory=list)  # stream ids repeating an earlier event id
    refused: list[Refused] = field(default_factory=list)

    @property
    def stored_ids(self) -> list[str]:
        """Stream ids to acknowledge once ``rows`` are committed."""
        return [r.stream_id for r in self.rows] + self.repeats


def parse(entries: Iterable[StreamEntry]) -> Batch:
    batch = Batch()
    seen: set[str] = set()
    for entry in entries:
        try:
            row = parse_entry(entry)
        except EventError as exc:
            batch.refused.append(Refused(entry.stream_id, str(exc)))
            continue
        if row.event_id in seen:
            batch.repeats.append(entry.stream_id)
            continue
        seen.add(row.event_id)
        batch.rows.append(row)
    return batch


def parse_entry(entry: StreamEntry) -> EventRow:
    """The row for one entry (the format is ``shared.events``'); ``EventError`` if it is not a
    storable event. Runs for every persisted event, so it builds the row in one step."""
    if entry.fields is None:
        raise EventError("the entry was deleted from the stream before it was persisted")
    event = ScoreEvent.from_fields(entry.fields)
    if event.type not in EVENT_TYPES:
        raise EventError(f"unknown event type {event.type!r}")
    if event.type in MODERATION_TYPES:
        _check_moderation(event)
    if not EVENT_ID.matches(event.event_id):
        raise EventError(f"event_id must be {EVENT_ID.describe()}")
    for label, number in (("points", event.points), ("score", event.score), ("seq", event.seq)):
        if not -BIGINT_MAX <= number <= BIGINT_MAX:
            raise EventError(f"{label} is out of range")
    extras = event.extras
    texts = (event.user_id, event.name, event.action, event.idempotency_key, event.client_ip)
    for text in (*texts, *extras.values()):
        # PostgreSQL text cannot hold NUL; a huge field is a bug or an attack, not a score.
        if "\x00" in text or len(text) > MAX_TEXT:
            raise EventError("a text field contains NUL or is too long")
    try:
        created = datetime.fromtimestamp(event.ts / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise EventError("ts is out of range") from None
    duration = extras.get(Field.DURATION_MS)
    flag = extras.get(Field.FLAG)
    return EventRow(
        event.event_id,
        entry.stream_id,
        event.seq,
        event.type,
        event.user_id,
        event.name or event.user_id,
        event.action,
        event.points,
        event.score,
        event.idempotency_key,
        event.client_ip,
        created,
        extras.get(Field.REQUEST_ID),
        extras.get(Field.USER_AGENT),
        extras.get(Field.JTI),
        extras.get(Field.ISS),
        extras.get(Field.BY),
        extras.get(Field.TICKET),
        None if duration is None else digits(duration, Field.DURATION_MS),
        extras.get(Field.REPORTER),
        extras.get(Field.PERIODS) or None,
        extras.get(Field.REASON),
        extras.get(Field.REVOCATION),
        None if flag is None else digits(flag, Field.FLAG),
    )


def digits(value: str, label: str) -> int:
    """A field of ASCII digits (``duration_ms``, ``flag``) as a number. ``int()`` alone would
    take more than the format's digits (signs, spaces, underscores, Unicode digits such as
    ``"١٢"``); ``str.isdigit`` alone takes ``"²"``, which ``int()`` then refuses with a
    ValueError that is no ``EventError``. At most 19 digits, so a long string is refused
    before converting it."""
    if value.isascii() and value.isdigit() and len(value) <= _BIGINT_DIGITS:
        number = int(value)
        if number <= BIGINT_MAX:
            return number
    raise EventError(f"{label} must be a decimal integer in 0..2**63-1")


def _check_moderation(event: ScoreEvent) -> None:
    """A moderation event carries no points, and a revoke / dismiss names what it is about
    (the revocation / the flag); only moderation events are checked, off the award path."""
    if event.points:
        raise EventError(f"a {event.type} event carries no points")
    if event.type == EventType.REVOKE and not event.extras.get(Field.REVOCATION):
        raise EventError("a revoke event names its revocation")
    if event.type == EventType.DISMISS and Field.FLAG not in event.extras:
        raise EventError("a dismiss event names its flag")


# The one place that knows event types: a type missing here is refused (and dead-lettered).
# Types whose points count towards ``users.score``.
SCORING_TYPES = frozenset({EventType.SCORE})
# Moderation types carry no points. State types set a user's state (users.banned and
# users.quarantined, shared.moderation.FLAGS_AFTER); revoke records a revocation the score API
# already applied in PostgreSQL; dismiss closes one flag.
STATE_TYPES = frozenset(STATE_ACTIONS)
MODERATION_TYPES = STATE_TYPES | {EventType.REVOKE, EventType.DISMISS}
EVENT_TYPES = SCORING_TYPES | MODERATION_TYPES
# Types that action a user's open flags (user_flags: open -> actioned).
ACTIONING_TYPES = frozenset({EventType.BAN, EventType.QUARANTINE, EventType.REVOKE})


@dataclass(frozen=True, slots=True)
class ModerationState:
    """What a batch's newest inserted state event says about one user."""

    user_id: str
    name: str
    banned: bool
    quarantined: bool
    at: datetime


def moderation_states(rows: Sequence[EventRow], inserted: set[str]) -> list[ModerationState]:
    """Per user, the newest newly inserted state event (ban, unban, quarantine, release) of
    the batch, sorted by user id. Each one sets both flags (``FLAGS_AFTER``)."""
    newest: dict[str, EventRow] = {}
    for row in rows:
        if row.type not in STATE_TYPES or row.event_id not in inserted:
            continue
        seen = newest.get(row.user_id)
        if seen is None or stream_id_key(row.stream_id) > stream_id_key(seen.stream_id):
            newest[row.user_id] = row
    return [
        ModerationState(user, row.name, *FLAGS_AFTER[row.type], row.created_at)
        for user, row in sorted(newest.items())
    ]


@dataclass(frozen=True, slots=True)
class FlagAction:
    """A ban, quarantine or revoke that actions the user's open flags."""

    user_id: str
    moderator: str | None
    at: datetime
    decision: str  # "<type>: <reason>" (the type alone without a reason)


@dataclass(frozen=True, slots=True)
class FlagDismissal:
    """A dismiss event: one flag, dismissed by a moderator."""

    flag_id: int
    moderator: str | None
    at: datetime
    reason: str | None


@dataclass(frozen=True)
class FlagDecisions:
    """What the batch's inserted events decide about flags, in the order to apply them:
    dismissals that came before any action on the same user, then the actions (the first per
    user), then the other dismissals (which find an actioned flag no longer open)."""

    early: list[FlagDismissal] = field(default_factory=list)
    actions: list[FlagAction] = field(default_factory=list)
    late: list[FlagDismissal] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.early or self.actions or self.late)


def flag_decisions(rows: Sequence[EventRow], inserted: set[str]) -> FlagDecisions:
    """The flag decisions of the newly inserted rows; each list sorted by user / flag id (a
    fixed lock order), one entry per user or flag (the first in stream order)."""
    events = [
        r
        for r in rows
        if r.type in ACTIONING_TYPES or r.type == EventType.DISMISS
        if r.event_id in inserted
    ]
    if not events:
        return FlagDecisions()
    events.sort(key=lambda r: stream_id_key(r.stream_id))
    actions: dict[str, FlagAction] = {}
    early: dict[int, FlagDismissal] = {}
    late: dict[int, FlagDismissal] = {}
    for r in events:
        if r.type == EventType.DISMISS:
            assert r.flag is not None  # parse_entry refuses a dismiss without one
            after = late if r.user_id in actions else early
            if r.flag not in early and r.flag not in late:
                after[r.flag] = FlagDismissal(r.flag, r.moderator, r.created_at, r.reason)
        elif r.user_id not in actions:
            decision = r.type if r.reason is None else f"{r.type}: {r.reason}"
            actions[r.user_id] = FlagAction(r.user_id, r.moderator, r.created_at, decision)
    return FlagDecisions(
        [early[k] for k in sorted(early)],
        [actions[k] for k in sorted(actions)],
        [late[k] for k in sorted(late)],
    )


def user_deltas(rows: Sequence[EventRow], inserted: set[str]) -> list[UserDelta]:
    """Per-user totals of the newly inserted rows, sorted by user id (a fixed lock order).

    The name is the one carried by the user's latest event (highest ``seq``) in the batch.
    """
    latest: dict[str, EventRow] = {}
    points: dict[str, int] = {}
    newest: dict[str, datetime] = {}
    oldest: dict[str, datetime] = {}
    for row in rows:
        if row.event_id not in inserted or row.type not in SCORING_TYPES:
            continue
        points[row.user_id] = points.get(row.user_id, 0) + row.points
        if row.user_id not in latest or row.seq > latest[row.user_id].seq:
            latest[row.user_id] = row
        newest[row.user_id] = max(newest.get(row.user_id, row.created_at), row.created_at)
        oldest[row.user_id] = min(oldest.get(row.user_id, row.created_at), row.created_at)
    return [
        UserDelta(
            user, points[user], latest[user].name, latest[user].seq, newest[user], oldest[user]
        )
        for user in sorted(points)
    ]


def claim_reply(reply: Sequence[Any]) -> tuple[str, list[Any], list[str]]:
    """(next cursor, claimed rows, deleted ids) of an XAUTOCLAIM reply.

    Redis 6.2 replies ``[cursor, entries]`` (a deleted entry shows as a nil row); Redis 7+ and
    Valkey add a third element, the ids of deleted entries it dropped from the pending list.
    """
    if len(reply) not in (2, 3):
        raise ValueError(f"unexpected XAUTOCLAIM reply of {len(reply)} elements")
    deleted = [redisconn.text(d) for d in reply[2]] if len(reply) == 3 else []
    return redisconn.text(reply[0]), list(reply[1] or []), deleted


# Numeric order of stream ids, which string order gets wrong (shared: the score API waits on it).
stream_id_key = stream_order


def next_stream_id(stream_id: str) -> str:
    """The smallest id greater than ``stream_id``."""
    ms, seq = stream_id_key(stream_id)
    if seq == 2**64 - 1:
        return f"{ms + 1}-0"
    return f"{ms}-{seq + 1}"


def previous_stream_id(stream_id: str) -> str:
    """The greatest id smaller than ``stream_id`` (``0-0`` for the first)."""
    ms, seq = stream_id_key(stream_id)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{2**64 - 1}"
    return "0-0"


def trim_point(
    pending_min: str | None, last_delivered: str, tail_start: str | None
) -> tuple[str, str]:
    """(first unpersisted id, id below which the stream may be trimmed).

    Every entry below the first unpersisted id has been committed (or dead-lettered) and
    acknowledged: that id is the oldest pending entry, or else the first one never delivered.
    ``tail_start`` is the first entry of the tail kept for the gateways (None: keep no tail);
    the trim point is the lower of the two, so neither unpersisted entries nor the tail go.
    """
    safe = pending_min if pending_min is not None else next_stream_id(last_delivered)
    if tail_start is None:
        return safe, safe
    return safe, min(safe, tail_start, key=stream_id_key)
