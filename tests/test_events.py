"""Parsing stream events of versions 1 and 2; anything else is refused, never guessed."""

from __future__ import annotations

import pytest

from shared.events import EventError, ScoreEvent

RAW = {
    b"v": b"1",
    b"type": b"score",
    b"event_id": b"e1",
    b"user_id": b"u1",
    b"name": b"U",
    b"action": b"quest_complete",
    b"points": b"10",
    b"score": b"30",
    b"seq": b"7",
    b"idempotency_key": b"k",
    b"ts": b"1700000000000",
    b"client_ip": b"127.0.0.1",
    b"request_id": b"r1",
}


def test_version_one_event_parses_with_extras() -> None:
    event = ScoreEvent.from_fields(RAW)
    assert (event.user_id, event.points, event.score, event.seq) == ("u1", 10, 30, 7)
    assert event.extras == {"request_id": "r1"}


@pytest.mark.parametrize(
    "change",
    [{b"v": b"4"}, {b"v": b"1\n"}, {b"points": b"ten"}, {b"event_id": b""}, {b"ts": b"soon"}],
)
def test_invalid_events_are_refused(change: dict[bytes, bytes]) -> None:
    with pytest.raises(EventError):
        ScoreEvent.from_fields(RAW | change)


def test_event_missing_a_required_field_is_refused() -> None:
    raw = dict(RAW)
    del raw[b"user_id"]
    with pytest.raises(EventError, match="user_id"):
        ScoreEvent.from_fields(raw)
