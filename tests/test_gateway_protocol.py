"""The gateway protocol without I/O: diffs reproduce boards, are minimal, versions consecutive."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.broadcast_gateway.fanout import Fanout
from services.broadcast_gateway.protocol import (
    Board,
    Diff,
    RateLimit,
    board_changes,
    diff_message,
    event_time_ms,
    is_resync,
    snapshot_message,
)
from services.broadcast_gateway.server import origin_allowed
from shared.board import Entry
from tests.models import ClientView, Ping, ProtocolError, Snapshot, apply_diff, decode_message

USERS = [f"u{i}" for i in range(14)]
NAMES = st.sampled_from(["Ann", "Bo", "Zoë", "李", "<img src=x onerror=alert(1)>"])


@st.composite
def boards(draw: st.DrawFn) -> Board:
    """A top-N board as Redis would return it: distinct users, best score first, ranks 1..n."""
    users = draw(st.lists(st.sampled_from(USERS), unique=True, max_size=10))
    rows = [(draw(st.integers(0, 30)), user, draw(NAMES)) for user in users]
    rows.sort(key=lambda row: (-row[0], row[1]))
    return tuple(Entry(i + 1, user, name, score) for i, (score, user, name) in enumerate(rows))


@given(st.lists(boards(), min_size=1, max_size=12))
def test_any_sequence_of_diffs_applied_to_the_snapshot_reproduces_every_board(
    sequence: list[Board],
) -> None:
    fanout = Fanout()
    fanout.reset(sequence[0])
    client = ClientView()
    version, snapshot = fanout.snapshot()
    assert client.receive(decode_message(snapshot))
    versions = [version]
    for board in sequence[1:]:
        diff = fanout.publish(board).diff
        if diff is None:
            assert board == client.board
            continue
        assert client.receive(decode_message(diff_message(diff)))
        assert client.board == board
        versions.append(diff.version)
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    assert client.version == fanout.version


@given(boards(), boards())
def test_diffs_are_minimal(old: Board, new: Board) -> None:
    changes = board_changes(old, new)
    differing = {i + 1 for i, e in enumerate(new) if i >= len(old) or old[i] != e}
    assert {c.rank for c in changes} == differing
    assert apply_diff(old, changes, len(new)) == new


def test_unchanged_board_makes_no_diff_and_no_version() -> None:
    board = (Entry(1, "a", "A", 5),)
    fanout = Fanout()
    fanout.reset(board)
    assert fanout.publish(board).diff is None
    assert fanout.version == 1


def test_removal_shrinks_the_board_with_a_size_only_diff() -> None:
    board = (Entry(1, "a", "A", 5), Entry(2, "b", "B", 3))
    fanout = Fanout()
    fanout.reset(board)
    diff = fanout.publish(board[:1]).diff
    assert diff == Diff(2, (), 1)
    assert orjson.loads(diff_message(diff)) == {
        "type": "diff",
        "version": 2,
        "base": 1,
        "board_id": "all-time",
        "period": "all",
        "changes": [],
        "size": 1,
    }
    weekly = orjson.loads(diff_message(diff, "weekly", "2026-W49"))
    assert (weekly["board_id"], weekly["period"]) == ("weekly", "2026-W49")


def test_client_with_another_version_refuses_the_diff_and_waits_for_a_snapshot() -> None:
    client = ClientView()
    client.receive(Snapshot(3, (Entry(1, "a", "A", 5),)))
    assert not client.receive(Diff(5, (Entry(1, "b", "B", 9),), 1))
    assert client.version == 3
    assert client.receive(Ping())
    assert client.receive(Snapshot(7, ()))
    assert (client.version, client.board) == (7, ())


def test_a_diff_that_leaves_a_gap_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        apply_diff((), (Entry(2, "b", "B", 1),), 2)


def test_snapshot_wire_format() -> None:
    raw = snapshot_message(4, (Entry(1, "a", "<b>A</b>", 5),), "daily", "2026-12-01")
    assert orjson.loads(raw) == {
        "type": "snapshot",
        "version": 4,
        "board_id": "daily",
        "period": "2026-12-01",
        "board": [{"rank": 1, "user_id": "a", "name": "<b>A</b>", "score": 5}],
    }


@pytest.mark.parametrize(
    "raw",
    [b"", b"[]", b'{"type": "nope"}', b'{"type": "diff", "version": 2, "base": 0}', b"{"],
)
def test_malformed_messages_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(raw)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ('{"type": "resync"}', True),
        (b'{"type":"resync","extra":1}', True),
        ('{"type": "snapshot"}', False),
        ("resync", False),
        ("[1, 2]", False),
        (b"\xff\xfe", False),
    ],
)
def test_only_resync_is_understood_inbound(frame: str | bytes, expected: bool) -> None:
    assert is_resync(frame) is expected


def test_rate_limit_allows_a_burst_then_the_sustained_rate() -> None:
    limit = RateLimit(rate=2, burst=3, now=0.0)
    assert [limit.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow(0.5)
    assert not limit.allow(0.5)
    assert [limit.allow(10.0) for _ in range(4)] == [True, True, True, False]


def test_origin_allowlist() -> None:
    allowed = ["http://127.0.0.1:8000"]
    assert origin_allowed("http://127.0.0.1:8000", allowed, allow_missing=True)
    assert not origin_allowed("http://evil.example", allowed, allow_missing=True)
    assert origin_allowed(None, allowed, allow_missing=True)
    assert not origin_allowed(None, allowed, allow_missing=False)
    assert origin_allowed("http://evil.example", ["*"], allow_missing=False)


def test_event_time_is_read_from_any_event_type() -> None:
    assert event_time_ms({b"type": b"ban", b"ts": b"1700000000000"}) == 1700000000000
    assert event_time_ms({b"type": b"score"}) is None
    assert event_time_ms({b"ts": b"soon"}) is None
