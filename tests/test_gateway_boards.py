"""Live periodic boards on the gateway: a subscription per board, frames naming the board and
the period, the new period's snapshot at each boundary, and unknown boards refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from services.broadcast_gateway.server import Gateway, requested_board
from services.score_api.app import create_app
from services.score_api.settings import ApiSettings
from shared.keys import BoardKeys
from shared.periods import Schedule
from tests.gateway_fixtures import run_gateway
from tests.support import CLIENT_ACTIONS, NO_LIMITS, serve
from tests.test_score_api import Api

BOARDS: dict[str, Any] = {
    "all-time": {"reset": "never"},
    "daily": {"reset": "daily"},
    "tens": {"reset": "interval", "interval_seconds": 10},
}
TENS = Schedule("interval", interval_seconds=10)


async def frame(ws: ClientConnection) -> dict[str, Any]:
    """The next snapshot or diff (pings skipped)."""
    while True:
        body: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 15))
        if body["type"] != "ping":
            return body


@pytest.mark.parametrize(
    ("query", "board"),
    [
        ("", "all-time"),
        ("board=daily", "daily"),
        ("board=tens&x=1", "tens"),
        ("board=weekly", None),
        ("board=DAILY", None),
        ("board=daily&board=tens", None),
        ("board=", None),
        ("board=%00", None),
        ("board=" + "d" * 5000, None),
    ],
)
def test_the_board_a_handshake_asks_for(query: str, board: str | None) -> None:
    assert requested_board(query, dict.fromkeys(BOARDS)) == board


@asynccontextmanager
async def live(redis_url: str, key_prefix: str) -> AsyncIterator[tuple[Gateway, Api]]:
    """A gateway and a score API serving BOARDS, on one key prefix."""
    settings = ApiSettings(
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        actions=CLIENT_ACTIONS,
        boards=BOARDS,
        **NO_LIMITS,
    )
    async with (
        run_gateway(redis_url, key_prefix, boards=BOARDS) as gateway,
        serve(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        yield gateway, Api(http, BoardKeys(key_prefix, "global"), settings)


async def test_each_board_has_its_own_subscription_and_frames_name_board_and_period(
    redis_url: str, key_prefix: str
) -> None:
    async with live(redis_url, key_prefix) as (gateway, api):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{gateway.url}?board=weekly"):
                pass
        assert refused.value.response.status_code == 404
        async with (
            connect(gateway.url) as all_time,
            connect(f"{gateway.url}?board=daily") as daily,
        ):
            first = [await frame(all_time), await frame(daily)]
            today = Schedule("daily").at(int(time.time() * 1000)).id
            assert [(f["type"], f["board_id"], f["period"]) for f in first] == [
                ("snapshot", "all-time", "all"),
                ("snapshot", "daily", today),
            ]
            assert (await api.post("ann", "k1")).status_code == 200
            for ws, board_id, period in (
                (all_time, "all-time", "all"),
                (daily, "daily", today),
            ):
                diff = await frame(ws)
                assert (diff["type"], diff["board_id"], diff["period"]) == (
                    "diff",
                    board_id,
                    period,
                )
                assert [c["user_id"] for c in diff["changes"]] == ["ann"]


async def test_clients_of_a_10_s_board_get_the_new_period_s_snapshot_at_the_boundary(
    redis_url: str, key_prefix: str
) -> None:
    """Black box, in real time: one boundary of a 10 s board (at most 10 s of waiting)."""
    async with (
        live(redis_url, key_prefix) as (gateway, api),
        connect(f"{gateway.url}?board=tens") as ws,
    ):
        snapshot = await frame(ws)
        assert (await api.post("ann", "k1")).status_code == 200
        diff = await frame(ws)
        assert diff["type"] == "diff"
        period = diff["period"]
        ends = TENS.named(period).end_ms or 0
        # The next frame is the new period's snapshot: empty, its version the next one.
        rolled = await frame(ws)
        arrived = time.time() * 1000
        assert (rolled["type"], rolled["board"]) == ("snapshot", [])
        assert rolled["period"] == TENS.following(TENS.named(period)).id
        assert rolled["version"] == diff["version"] + 1
        assert snapshot["version"] < diff["version"]
        # Within a tick of the boundary (50 ms), plus scheduling on a shared machine.
        assert ends <= arrived < ends + 1000
