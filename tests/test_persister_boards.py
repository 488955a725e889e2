"""Periodic boards in the long-term record: events of version 2 name their periods in
PostgreSQL, ``reconcile`` checks the current period of every board, and ``rebuild`` rebuilds
it from the events, banned users kept aside as a ban leaves them."""

from __future__ import annotations

import io
from typing import Any

import asyncpg
import redis.asyncio

from services.persister.migrate import migrate
from services.persister.rebuild import rebuild
from services.persister.reconcile import reconcile
from services.persister.settings import PersisterSettings
from shared.periods import Schedule
from tests.persister_fixtures import drain, open_worker
from tests.test_score_api import running_api

BOARDS: dict[str, Any] = {
    "all-time": {"reset": "never"},
    "daily": {"reset": "daily"},
    "weekly": {"reset": "weekly"},
}


async def test_periods_are_recorded_reconciled_and_rebuilt(
    redis_url: str, database_url: str, key_prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    await migrate(database_url)
    settings = PersisterSettings(
        redis_url=redis_url, database_url=database_url, redis_key_prefix=key_prefix, boards=BOARDS
    )
    async with (
        running_api(redis_url=redis_url, redis_key_prefix=key_prefix, boards=BOARDS) as api,
        open_worker(redis_url, database_url, key_prefix) as worker,
    ):
        for i, user in enumerate(["ann", "bob", "cid", "ann", "dan"]):
            assert (await api.post(user, f"k{i}")).status_code == 200
        admin = {"Authorization": f"Bearer {api.token('mod', scopes=('score:admin',))}"}
        assert (await api.http.delete("/api/admin/users/dan", headers=admin)).status_code == 200

        async def pages() -> dict[str, object]:
            out = {}
            for board in BOARDS:
                page = await api.http.get("/api/score-board", params={"board": board})
                out[board] = page.json()["board"]
            return out

        before = await pages()
        await drain(worker)
        report = io.StringIO()
        assert await reconcile(settings, out=report) == []
        conn = await asyncpg.connect(database_url)
        try:
            periods = await conn.fetchval(
                "SELECT periods FROM score_events WHERE user_id = 'ann' LIMIT 1"
            )
        finally:
            await conn.close()
        today = Schedule("daily").at(int((await redis_client.time())[0]) * 1000).id
        assert periods.split(" ")[0] == f"daily={today}"
        # A period that disagrees with the events is reported, naming board and period.
        daily_key = api.keys.period_board("daily", today)
        top: list[bytes] = await redis_client.zrange(daily_key, 0, 0)  # type: ignore[assignment]
        member = top[0]
        await redis_client.zincrby(daily_key, -5, member)
        differences = await reconcile(settings, out=io.StringIO())
        assert [(d.user_id, d.board.split()[0], d.redis, d.events) for d in differences] == [
            ("ann", "daily", 25, 20)
        ]
        # Redis lost: rebuild restores every board's current period, the ban kept aside.
        await redis_client.unlink(*[k async for k in redis_client.scan_iter(f"{{{key_prefix}:*")])
        out = io.StringIO()
        await rebuild(settings, out=out)
        assert await pages() == before
        assert "rebuilt daily" in out.getvalue()
        assert "rebuilt weekly" in out.getvalue()
        assert await reconcile(settings, out=io.StringIO()) == []
        unban = await api.http.post("/api/admin/users/dan/unban", headers=admin)
        assert unban.status_code == 200
        daily = await api.http.get("/api/score-board", params={"board": "daily"})
        assert "dan" in [e["user_id"] for e in daily.json()["board"]]
