"""The pure part of the persister: parsing entries, folding inserted rows, stream-id arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.persister.batch import (
    BIGINT_MAX,
    StreamEntry,
    claim_reply,
    next_stream_id,
    parse,
    parse_entry,
    previous_stream_id,
    stream_id_key,
    trim_point,
    user_deltas,
)
from shared.events import EventError


def fields(event_id: str = "e1", **overrides: str) -> dict[bytes, bytes]:
    base = {
        "v": "1",
        "type": "score",
        "event_id": event_id,
        "user_id": "alice",
        "name": "Alice",
        "action": "quest_complete",
        "points": "10",
        "score": "10",
        "seq": "7",
        "idempotency_key": "k1",
        "ts": "1700000000123",
        "client_ip": "10.0.0.1",
    }
    return {k.encode(): v.encode() for k, v in (base | overrides).items()}


def entry(stream_id: str, event_id: str = "e1", **overrides: str) -> StreamEntry:
    return StreamEntry(stream_id, fields(event_id, **overrides))


def test_a_valid_entry_becomes_one_row_with_every_column() -> None:
    batch = parse([entry("1-0", user_agent="ua", jti="j", iss="i", request_id="r")])
    [row] = batch.rows
    assert row.event_id == "e1"
    assert row.stream_id == "1-0"
    assert (row.user_id, row.name, row.action) == ("alice", "Alice", "quest_complete")
    assert (row.points, row.score_after, row.seq) == (10, 10, 7)
    assert (row.idempotency_key, row.client_ip) == ("k1", "10.0.0.1")
    assert row.created_at == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert (row.user_agent, row.jti, row.iss, row.request_id) == ("ua", "j", "i", "r")
    assert batch.stored_ids == ["1-0"]
    assert batch.refused == []


def test_missing_extras_are_null_and_a_missing_name_is_the_user_id() -> None:
    [row] = parse([entry("1-0", name="")]).rows
    assert row.name == "alice"
    assert (row.user_agent, row.jti, row.iss, row.request_id) == (None, None, None, None)


TICKET = "0123456789abcdef0123456789abcdef"


def test_proof_of_action_fields_fill_their_columns() -> None:
    row = parse_entry(entry("1-0", ticket=TICKET, duration_ms="31500", reporter="game-eu-1"))
    assert (row.ticket, row.duration_ms, row.reporter) == (TICKET, 31500, "game-eu-1")
    # The columns before periods, in the order _INSERT_EVENTS names them.
    at = row._fields.index("periods")
    assert row[at - 3 : at] == (TICKET, 31500, "game-eu-1")


def test_version_2_events_store_their_periods_and_version_1_events_none() -> None:
    periods = "daily=2026-12-01 weekly=2026-W49"
    assert parse_entry(entry("1-0", v="2", periods=periods)).periods == periods
    assert parse_entry(entry("1-0", v="2", periods="")).periods is None
    assert parse_entry(entry("1-0", v="1")).periods is None
    with pytest.raises(EventError, match="version"):
        parse_entry(entry("1-0", v="4"))


def test_proof_of_action_fields_are_null_when_absent() -> None:
    row = parse_entry(entry("1-0"))
    assert (row.ticket, row.duration_ms, row.reporter) == (None, None, None)


@pytest.mark.parametrize("value", ["0", "007", str(BIGINT_MAX)])
def test_duration_ms_takes_ascii_digits_up_to_bigint(value: str) -> None:
    assert parse_entry(entry("1-0", duration_ms=value)).duration_ms == int(value)


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "+5",
        " 5",
        "5 ",
        "1_000",
        "12.5",
        "1e3",
        "ten",
        "",
        "²",  # str.isdigit() says yes, int() says no
        "١٢",  # Arabic-Indic digits: int() would read 12
        "\uff11\uff12",  # fullwidth digits: int() would read 12
        str(BIGINT_MAX + 1),
        str(10**30),
        "0" * 20 + "1",  # small, but more digits than any bigint
    ],
)
def test_duration_ms_that_is_not_a_bigint_of_ascii_digits_is_refused(value: str) -> None:
    with pytest.raises(EventError, match="duration_ms"):
        parse_entry(entry("1-0", duration_ms=value))


def test_a_bad_duration_ms_dead_letters_that_entry_only() -> None:
    bad = entry("2-0", "e2", duration_ms="-1")
    batch = parse([entry("1-0"), bad, entry("3-0", "e3", duration_ms="5")])
    assert [(r.event_id, r.duration_ms) for r in batch.rows] == [("e1", None), ("e3", 5)]
    assert [r.stream_id for r in batch.refused] == ["2-0"]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"v": "4"}, "unsupported event version"),
        ({"type": "promote"}, "unknown event type 'promote'"),
        ({"type": "ban"}, "a ban event carries no points"),
        ({"points": "ten"}, "invalid literal"),
        ({"points": str(2**63)}, "points is out of range"),
        ({"ts": "99999999999999999"}, "ts is out of range"),
        ({"name": "a\x00b"}, "NUL"),
        ({"action": "x" * 2000}, "too long"),
        ({"event_id": "has space"}, "event_id must be"),
        ({"event_id": ""}, "empty identifier"),
    ],
)
def test_unusable_entries_are_refused_with_a_reason(overrides: dict[str, str], error: str) -> None:
    bad = StreamEntry("2-0", fields(**({"event_id": "e2"} | overrides)))
    batch = parse([entry("1-0"), bad, entry("3-0", "e3")])
    assert [r.event_id for r in batch.rows] == ["e1", "e3"]
    [refused] = batch.refused
    assert refused.stream_id == "2-0"
    assert error in refused.error
    assert batch.stored_ids == ["1-0", "3-0"]


def test_missing_required_field_and_deleted_entry_are_refused() -> None:
    no_ts = {k: v for k, v in fields().items() if k != b"ts"}
    batch = parse([StreamEntry("1-0", no_ts), StreamEntry("2-0", None)])
    assert [r.error for r in batch.refused] == [
        "missing field 'ts'",
        "the entry was deleted from the stream before it was persisted",
    ]


def test_an_entry_that_is_not_utf8_is_refused() -> None:
    bad = fields("e2") | {b"name": b"\xff\xfe"}
    batch = parse([entry("1-0"), StreamEntry("2-0", bad)])
    assert [r.stream_id for r in batch.rows] == ["1-0"]
    assert [(r.stream_id, r.error) for r in batch.refused] == [
        ("2-0", "a field is not valid UTF-8")
    ]


def test_text_fields_parse_like_bytes() -> None:
    text = {k.decode(): v.decode() for k, v in fields().items()}
    assert parse([StreamEntry("1-0", text)]).rows == parse([entry("1-0")]).rows  # type: ignore[arg-type]


def test_a_repeated_event_id_in_one_batch_is_kept_once_and_acknowledged() -> None:
    batch = parse([entry("1-0"), entry("2-0"), entry("3-0", "e3")])
    assert [r.stream_id for r in batch.rows] == ["1-0", "3-0"]
    assert batch.repeats == ["2-0"]
    assert sorted(batch.stored_ids) == ["1-0", "2-0", "3-0"]


def test_only_inserted_rows_count_towards_user_totals() -> None:
    rows = parse(
        [
            entry("1-0", "e1", points="10", seq="1"),
            entry("2-0", "e2", points="25", seq="2", name="Alice 2"),
            entry("3-0", "e3", points="5", seq="3", user_id="bob", name="Bob"),
            entry("4-0", "e4", points="7", seq="4", name="Alice 4"),
        ]
    ).rows
    deltas = user_deltas(rows, inserted={"e1", "e2", "e3"})
    assert [(d.user_id, d.points, d.name, d.last_seq) for d in deltas] == [
        ("alice", 35, "Alice 2", 2),
        ("bob", 5, "Bob", 3),
    ]
    assert user_deltas(rows, inserted=set()) == []


def test_user_deltas_are_sorted_by_user_and_take_the_latest_name_by_seq() -> None:
    rows = parse(
        [
            entry("1-0", "e1", user_id="zed", seq="9", name="Late"),
            entry("2-0", "e2", user_id="zed", seq="3", name="Early"),
            entry("3-0", "e3", user_id="amy", seq="5"),
        ]
    ).rows
    deltas = user_deltas(rows, {"e1", "e2", "e3"})
    assert [d.user_id for d in deltas] == ["amy", "zed"]
    assert (deltas[1].name, deltas[1].last_seq, deltas[1].points) == ("Late", 9, 20)


def test_stream_ids_order_numerically_and_step_both_ways() -> None:
    assert sorted(["10-0", "9-5", "9-10"], key=stream_id_key) == ["9-5", "9-10", "10-0"]
    assert next_stream_id("5-3") == "5-4"
    assert next_stream_id(f"5-{2**64 - 1}") == "6-0"
    assert previous_stream_id("5-3") == "5-2"
    assert previous_stream_id("5-0") == f"4-{2**64 - 1}"
    assert previous_stream_id("0-0") == "0-0"


def test_trim_point_never_passes_the_oldest_pending_or_the_tail() -> None:
    # Pending entries: the oldest pending one is the first unpersisted.
    assert trim_point("5-0", "9-0", None) == ("5-0", "5-0")
    # Nothing pending: everything up to last-delivered is persisted.
    assert trim_point(None, "9-0", None) == ("9-1", "9-1")
    # The tail wins when it starts earlier.
    assert trim_point(None, "9-0", "7-0") == ("9-1", "7-0")
    assert trim_point("5-0", "9-0", "7-0") == ("5-0", "5-0")
    # A tail id that sorts before as a string but not as a number.
    assert trim_point("10-0", "20-0", "9-0") == ("10-0", "9-0")


def test_xautoclaim_replies_of_redis_6_and_7_are_both_understood() -> None:
    rows = [(b"1-0", {b"v": b"1"})]
    assert claim_reply([b"0-0", rows]) == ("0-0", rows, [])
    assert claim_reply([b"2-0", rows, [b"3-0"]]) == ("2-0", rows, ["3-0"])
    assert claim_reply(["0-0", None, []]) == ("0-0", [], [])
    with pytest.raises(ValueError, match="4 elements"):
        claim_reply([b"0-0", [], [], []])
