"""``GET /api/admin/stats?window=`` (scope score:admin): user analytics from PostgreSQL
(``stats``), and the refusal counter the problem handler feeds (``refusalcount``).
``ScoreApi`` mixes this in. PostgreSQL away: 503."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from services.score_api import stats
from services.score_api.database import DatabaseUnavailable
from services.score_api.problems import database_unavailable
from services.score_api.refusalcount import RefusalCounter
from services.score_api.tokens import SCOPE_ADMIN
from services.score_api.wiring import ApiWiring
from shared.clock import ms
from shared.health import json_response


class StatsReads(ApiWiring):
    _refusal_counter: RefusalCounter | None = None

    @property
    def refusal_counter(self) -> RefusalCounter:
        if self._refusal_counter is None:
            self._refusal_counter = RefusalCounter(self.store.redis, self.store.keys)
        return self._refusal_counter

    def count_refusal(self, reason: str) -> None:
        """One refusal now, by its problem reason (no I/O on this path)."""
        self.refusal_counter.add(reason, self.clock.time())

    async def admin_stats(self, request: Request) -> Response:
        """``GET /api/admin/stats?window=24h``: active and new users, awards and points by
        action and by hour, top movers and refusals by reason, over the window."""
        await self.authenticate(request, SCOPE_ADMIN)
        span = stats.window(request.query_params, ms(self.clock))
        try:
            rows = await self.database.fetch(stats.QUERY, span.start, span.end, stats.TOP_MOVERS)
        except DatabaseUnavailable:
            raise database_unavailable() from None
        return json_response(stats.shape(rows, span))
