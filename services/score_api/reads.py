"""The score API's board reads: pages and ranks of any board and period (Redis while it keeps
a period, the archives after), and the list of boards. ``ScoreApi`` mixes this in; the
attributes below are its wiring."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import orjson
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from services.score_api import boardviews, validation
from services.score_api.archives import Archives, ArchiveUnavailable
from services.score_api.boardcache import BoardCache
from services.score_api.httpparts import EncodedJson
from services.score_api.metrics import BOARD_CACHE_HITS, BOARD_CACHE_MISSES
from services.score_api.problems import Problem, redis_unavailable, unavailable
from services.score_api.settings import ApiSettings
from services.score_api.store import ScoreStore
from shared.boards import Boards
from shared.clock import Clock, ms
from shared.health import json_response

T = TypeVar("T")


class BoardReads:
    settings: ApiSettings
    clock: Clock
    boards: Boards
    all_time: boardviews.View
    archives: Archives
    board_cache: BoardCache
    store: ScoreStore

    def view(self, request: Request) -> boardviews.View:
        params = request.query_params
        if "board" not in params and "period" not in params:
            return self.all_time  # the seed's reads: no period arithmetic on the hot path
        return boardviews.view(
            self.boards, params, ms(self.clock), self.settings.board_retention_periods
        )

    async def final(self, view: boardviews.View) -> bool:
        """Whether an ended period's archive is complete (a period Redis no longer keeps and
        never archived is 404)."""
        if not view.ended:
            return False
        if view.kept:
            # Redis has the standings: without PostgreSQL they are served, not yet final.
            try:
                return await self.archives.final(view.board.board_id, view.period.id)
            except ArchiveUnavailable:
                return False
        final = await self.archived(self.archives.final(view.board.board_id, view.period.id))
        if not final:
            raise boardviews.not_kept(view, self.settings.board_retention_periods)
        return final

    async def archived(self, read: Awaitable[T]) -> T:
        try:
            return await read
        except ArchiveUnavailable:
            raise unavailable("the archive is unreachable; retry", "archive_unavailable") from None

    async def list_boards(self, request: Request) -> Response:
        return json_response({"boards": boardviews.board_list(self.boards, ms(self.clock))})

    async def score_board(self, request: Request) -> Response:
        limit, offset = validation.paging(request.query_params)
        view = self.view(request)
        # The all-time board's pages are cached; a period's are read each time.
        cache = self.board_cache if view.all_time else None
        now = self.clock.monotonic()
        body = cache.get(limit, offset, now) if cache is not None else None
        if body is not None:
            BOARD_CACHE_HITS.inc()
            return EncodedJson(body)
        if cache is not None:
            BOARD_CACHE_MISSES.inc()  # a period's page is never cached: no miss
        # Noted before the read: an invalidation during it means the page may be stale.
        generation = self.board_cache.generation
        final = await self.final(view)
        extra: dict[str, object] = {}
        if not view.kept:
            board_id, period_id = view.board.board_id, view.period.id
            entries, total = await self.archived(
                self.archives.page(board_id, period_id, offset, limit)
            )
            # An archive is never rewritten: what revocations removed from it is shown beside.
            extra["corrections"] = await self.archived(
                self.archives.corrections(board_id, period_id)
            )
        else:
            board_key, _ = view.keys(self.store.keys)
            try:
                entries, total = await self.store.reader.page(offset, limit, board_key)
            except RedisError:
                self.board_cache.invalidate()
                raise redis_unavailable() from None
        body = orjson.dumps(
            {"board": [e.as_dict() for e in entries], "total": total} | view.fields(final) | extra
        )
        if cache is not None:
            cache.put(limit, offset, body, generation, now)
        return EncodedJson(body)

    async def user_rank(self, request: Request) -> Response:
        user_id = validation.user_id(request.path_params["user_id"])
        around = validation.bounded_int(request.query_params, "around", 0, 0, validation.MAX_AROUND)
        view = self.view(request)
        final = await self.final(view)
        if not view.kept:
            found = await self.archived(
                self.archives.rank(view.board.board_id, view.period.id, user_id, around)
            )
        else:
            board_key, members_key = view.keys(self.store.keys)
            try:
                found = await self.store.rank(user_id, around, board_key, members_key)
            except RedisError:
                raise redis_unavailable() from None
        if found is None:
            raise Problem(404, "unranked", f"user {user_id!r} has no score", reason="unranked")
        own, neighbours = found
        return json_response(
            own.as_dict() | {"around": [e.as_dict() for e in neighbours]} | view.fields(final)
        )
