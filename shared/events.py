"""The score stream's event format (versions 1 and 2), written by the score API's scripts.

Every accepted update appends one entry whose fields are all strings; their names are
``shared.formats.Field`` (the scripts receive the same names as constants):

    v, type, event_id, user_id, name, action, points, score, seq, idempotency_key, ts,
    client_ip, and optional extras (request_id, user_agent, jti, iss, by; the proof of
    action: ticket, duration_ms, reporter; in version 2, periods)

``type`` is ``score`` for an award, ``ban`` / ``unban`` for moderation (``points`` 0,
``score`` the total at the ban, ``seq`` 0, ``by`` the administrator's subject). Readers
refuse an entry they cannot parse with ``EventError`` rather than guess; the persister
dead-letters such entries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.formats import EVENT_VERSIONS, OPTIONAL_FIELDS
from shared.formats import Field as F
from shared.redisconn import text


class EventError(ValueError):
    """A stream entry that is not a valid version-1 event."""


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    type: str
    event_id: str
    user_id: str
    name: str
    action: str
    points: int
    score: int
    seq: int
    idempotency_key: str
    ts: int
    client_ip: str
    extras: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> ScoreEvent:
        # Runs once per persisted event: decode each field once, on the fast path for bytes.
        try:
            fields = {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]
        except AttributeError:  # already text
            fields = {text(k): text(v) for k, v in raw.items()}
        except UnicodeDecodeError:
            raise EventError("a field is not valid UTF-8") from None
        if fields.get(F.VERSION) not in EVENT_VERSIONS:
            raise EventError(f"unsupported event version {fields.get(F.VERSION)!r}")
        try:
            return cls(
                type=fields[F.TYPE],
                event_id=_nonempty(fields[F.EVENT_ID]),
                user_id=_nonempty(fields[F.USER_ID]),
                name=fields.get(F.NAME, ""),
                action=fields.get(F.ACTION, ""),
                points=int(fields.get(F.POINTS, "0")),
                score=int(fields.get(F.SCORE, "0")),
                seq=int(fields.get(F.SEQ, "0")),
                idempotency_key=fields.get(F.IDEMPOTENCY_KEY, ""),
                ts=int(fields[F.TS]),
                client_ip=fields.get(F.CLIENT_IP, ""),
                extras={k: fields[k] for k in OPTIONAL_FIELDS if k in fields},
            )
        except KeyError as exc:
            raise EventError(f"missing field {exc.args[0]!r}") from None
        except ValueError as exc:
            raise EventError(str(exc)) from None


def _nonempty(value: str) -> str:
    if not value:
        raise ValueError("empty identifier")
    return value


def new_event_id(now_ms: int) -> str:
    """32 hex characters: time-ordered prefix plus 80 random bits; unique without Redis state."""
    return f"{now_ms:012x}{os.urandom(10).hex()}"


def stream_order(stream_id: str) -> tuple[int, int]:
    """Numeric order of stream ids (``ms-seq``), which string order gets wrong."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
