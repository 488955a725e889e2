"""The fan-out policy against an in-memory sink: every slow-client path, without a socket."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.broadcast_gateway.fanout import NOTHING, Client, Fanout, Outcome
from services.broadcast_gateway.protocol import Board, Diff
from shared.board import Entry
from tests.models import ClientView, Ping, Snapshot, decode_message

LIMIT, GRACE = 1000, 10.0


class MemorySink:
    """A sink whose writability the test sets; it keeps every frame written to it."""

    def __init__(self, writable: bool = True) -> None:
        self.writable = writable
        self.accepts = True  # False: write() reports the connection going away
        self.unsent = 0
        self.frames: list[bytes] = []
        self.closed: list[tuple[int, str]] = []

    def write(self, frame: bytes) -> bool:
        assert self.writable, "written while not writable"
        if not self.accepts:
            return False
        self.frames.append(frame)
        self.unsent += len(frame)
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def drain(self) -> None:
        self.unsent = 0
        self.writable = True

    def messages(self) -> list[object]:
        return [decode_message(frame) for frame in self.frames]


def board(*scores: int) -> Board:
    return tuple(Entry(i + 1, f"u{s}", f"U{s}", s) for i, s in enumerate(scores))


def follow(fanout: Fanout, writable: bool = True) -> tuple[Client, MemorySink]:
    sink = MemorySink(writable)
    client = Client(sink)
    fanout.add(client)
    return client, sink


def loaded(*scores: int) -> Fanout:
    fanout = Fanout()
    fanout.reset(board(*scores))
    return fanout


def test_a_client_gets_nothing_until_the_board_is_loaded_then_one_snapshot() -> None:
    fanout = Fanout()
    client, sink = follow(fanout)
    assert sink.frames == []
    fanout.reset(board(5))
    assert sink.messages() == [Snapshot(1, board(5))]
    assert client.version == 1
    assert fanout.catch_up(client) is NOTHING  # in step: nothing more


def test_in_step_clients_get_the_same_diff_bytes_framed_once() -> None:
    framed: list[bytes] = []

    def frame(message: bytes) -> bytes:
        framed.append(message)
        return b"F" + message

    fanout = Fanout(frame)
    fanout.reset(board(5))
    sinks = [follow(fanout)[1] for _ in range(3)]
    framed.clear()
    outcome = fanout.publish(board(7, 5))
    assert len(framed) == 1
    assert all(sink.frames[-1] is sinks[0].frames[-1] for sink in sinks)
    assert outcome.diff == Diff(2, (Entry(1, "u7", "U7", 7), Entry(2, "u5", "U5", 5)), 2)
    size = len(sinks[0].frames[-1])
    assert outcome == Outcome(diff=outcome.diff, diffs=3, diff_bytes=3 * size)
    # The snapshot of a version is framed once, however many clients take it.
    for sink in sinks:
        fanout.resync(next(c for c in fanout.clients if c.sink is sink))
    assert len(framed) == 2
    assert fanout.snapshot_frame() is sinks[0].frames[-1]


def test_an_unchanged_board_writes_nothing_and_keeps_the_version() -> None:
    fanout = loaded(5, 3)
    _, sink = follow(fanout)
    assert fanout.publish(board(5, 3), [123]) is NOTHING
    assert (fanout.version, len(sink.frames)) == (1, 1)


def test_a_client_that_cannot_take_a_diff_skips_it_and_gets_the_latest_snapshot_on_drain() -> None:
    fanout = loaded(5)
    slow, sink = follow(fanout)
    sink.writable = False
    first = fanout.publish(board(6))
    second = fanout.publish(board(7))
    assert (first.conflated, second.conflated) == (1, 1)
    assert (first.diffs, first.snapshots) == (0, 0)
    assert len(sink.frames) == 1
    assert slow.version == 1
    sink.drain()
    outcome = fanout.catch_up(slow)
    assert sink.messages()[-1] == Snapshot(3, board(7))
    assert outcome == Outcome(snapshots=1, snapshot_bytes=len(sink.frames[-1]))
    assert slow.version == 3
    fanout.publish(board(8))  # in step again: diffs
    assert isinstance(sink.messages()[-1], Diff)


def test_a_behind_client_writable_again_at_the_next_broadcast_gets_the_snapshot_not_the_diff() -> (
    None
):
    fanout = loaded(5)
    client, sink = follow(fanout)
    sink.writable = False
    fanout.publish(board(6))
    sink.drain()  # drained, but the drain was not reported before the next change
    outcome = fanout.publish(board(7))
    assert sink.messages()[-1] == Snapshot(3, board(7))
    assert (outcome.diffs, outcome.snapshots, outcome.conflated) == (0, 1, 1)
    assert outcome.snapshot_bytes == len(sink.frames[-1])
    assert client.version == 3


def test_a_write_that_fails_leaves_the_client_behind_until_a_snapshot_gets_through() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    sink.accepts = False
    outcome = fanout.publish(board(6))
    assert (outcome.diffs, client.version) == (0, 1)
    assert fanout.catch_up(client) is NOTHING
    sink.accepts = True
    fanout.publish(board(7))
    assert sink.messages()[-1] == Snapshot(3, board(7))


def test_resync_sends_the_current_snapshot_again() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    fanout.publish(board(6))
    outcome = fanout.resync(client)
    assert sink.messages()[-1] == Snapshot(2, board(6))
    assert outcome.snapshots == 1
    sink.writable = False
    assert fanout.resync(client) is NOTHING  # later, on drain
    sink.drain()
    assert fanout.catch_up(client).snapshots == 1


def test_reset_gives_every_client_a_snapshot_now_or_when_it_drains() -> None:
    fanout = loaded(5)
    clients = [follow(fanout) for _ in range(3)]
    _, stalled = clients[2]
    stalled.writable = False
    outcome = fanout.reset(board(9, 1))
    assert outcome.snapshots == 2
    assert outcome.snapshot_bytes == 2 * len(fanout.snapshot_frame())
    assert [s.messages()[-1] for _, s in clients[:2]] == [Snapshot(2, board(9, 1))] * 2
    stalled.drain()
    fanout.catch_up(clients[2][0])
    assert stalled.messages()[-1] == Snapshot(2, board(9, 1))


def test_ping_goes_to_writable_clients_only() -> None:
    fanout = loaded(5)
    _, ready = follow(fanout)
    _, stalled = follow(fanout)
    stalled.writable = False
    closing, closing_sink = follow(fanout)
    fanout.close(closing, 1013, "too slow", "slow")
    outcome = fanout.ping()
    assert ready.messages()[-1] == Ping()
    assert len(stalled.frames) == len(closing_sink.frames) == 1
    assert outcome == Outcome(pings=1, ping_bytes=len(ready.frames[-1]))
    assert orjson.loads(ready.frames[-1]) == {"type": "ping"}


def test_a_client_that_never_drains_is_stuck_only_after_the_grace() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    sink.unsent = LIMIT  # at the limit is not over it
    assert fanout.stuck(0.0, LIMIT, GRACE) == []
    sink.unsent = LIMIT + 1
    assert fanout.stuck(1.0, LIMIT, GRACE) == []  # over since 1.0
    assert fanout.stuck(1.0 + GRACE, LIMIT, GRACE) == []  # exactly the grace: not yet
    assert fanout.stuck(1.0 + GRACE + 0.001, LIMIT, GRACE) == [client]
    assert fanout.stuck(100.0, LIMIT, GRACE) == [client]  # until someone closes it


def test_a_slow_client_that_drains_in_time_starts_its_grace_over() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    sink.unsent = LIMIT + 1
    fanout.stuck(0.0, LIMIT, GRACE)
    sink.unsent = 0
    assert fanout.stuck(GRACE - 1, LIMIT, GRACE) == []
    sink.unsent = LIMIT + 1
    assert fanout.stuck(GRACE, LIMIT, GRACE) == []
    assert fanout.stuck(2 * GRACE, LIMIT, GRACE) == []
    assert fanout.stuck(2 * GRACE + 1, LIMIT, GRACE) == [client]


def test_a_closing_client_gets_nothing_more_and_is_not_reported_again() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    sink.unsent = LIMIT + 1
    fanout.stuck(0.0, LIMIT, GRACE)
    assert fanout.stuck(GRACE + 1, LIMIT, GRACE) == [client]
    assert fanout.close(client, 1013, "too slow", "slow")
    assert not fanout.close(client, 1012, "service restart", "shutdown")
    assert (sink.closed, client.closing) == ([(1013, "too slow")], "slow")
    written = len(sink.frames)
    fanout.publish(board(6))
    fanout.reset(board(7))
    fanout.ping()
    assert fanout.resync(client) is NOTHING
    assert fanout.catch_up(client) is NOTHING
    assert len(sink.frames) == written
    assert fanout.stuck(GRACE + 2, LIMIT, GRACE) == []
    assert fanout.publish(board(8)).conflated == 0  # being closed is not falling behind


def test_a_client_that_left_gets_nothing_from_a_late_drain_or_close() -> None:
    fanout = loaded(5)
    client, sink = follow(fanout)
    fanout.remove(client)
    fanout.publish(board(6))
    assert fanout.catch_up(client) is NOTHING
    assert not fanout.close(client, 1013, "too slow", "slow")
    assert (len(sink.frames), sink.closed) == (1, [])


def test_publish_passes_the_event_times_through_for_the_delay_metric() -> None:
    fanout = loaded(5)
    assert fanout.publish(board(6), [10, 20]).events_ms == [10, 20]


# Any interleaving of changes, stalls, failed writes, drains and resyncs: a client never sees
# a diff that does not follow what it holds, is never written to while unwritable (the sink
# asserts it), the outcomes count exactly what was written, and every client that drains ends
# up with the current board.

BOARDS = st.lists(st.integers(0, 6), unique=True, max_size=5).map(
    lambda scores: board(*sorted(scores, reverse=True))
)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), BOARDS),
        st.tuples(st.just("reset"), BOARDS),
        st.tuples(
            st.sampled_from(["stall", "drain", "fail", "accept", "resync"]), st.integers(0, 2)
        ),
        st.tuples(st.just("ping"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_any_interleaving_keeps_every_client_consistent_and_counted(steps: list[object]) -> None:
    fanout = loaded(1)
    clients = [follow(fanout) for _ in range(3)]
    counted = sum(len(f) for _, s in clients for f in s.frames)
    for step in steps:
        assert isinstance(step, tuple)
        op, arg = step
        outcome = NOTHING
        if op == "publish":
            outcome = fanout.publish(arg)
        elif op == "reset":
            outcome = fanout.reset(arg)
        elif op == "ping":
            outcome = fanout.ping()
        else:
            client, sink = clients[arg]
            if op == "stall":
                sink.writable = False
            elif op == "drain":
                sink.drain()
                outcome = fanout.catch_up(client)
            elif op == "fail":
                sink.accepts = False
            elif op == "accept":
                sink.accepts = True
            else:
                outcome = fanout.resync(client)
        counted += outcome.diff_bytes + outcome.snapshot_bytes + outcome.ping_bytes
        assert counted == sum(len(f) for _, s in clients for f in s.frames)
    for client, sink in clients:
        sink.accepts = True
        sink.drain()
        fanout.catch_up(client)
        view = ClientView()
        for message in sink.messages():
            assert isinstance(message, Snapshot | Diff | Ping)
            assert view.receive(message), "a diff that does not follow"
        assert (view.version, view.board) == (fanout.version, fanout.board)
        assert client.version == fanout.version


@pytest.mark.parametrize("writable", [True, False])
def test_a_client_added_before_the_first_load_follows_from_the_load(writable: bool) -> None:
    fanout = Fanout()
    client, sink = follow(fanout, writable)
    assert fanout.publish(board()) is NOTHING  # nothing loaded, nothing changed
    fanout.reset(board(3))
    sink.drain()
    fanout.catch_up(client)
    assert sink.messages() == [Snapshot(1, board(3))]
