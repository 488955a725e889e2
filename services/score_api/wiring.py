"""What the handler mixins (``moderation.Moderation``, ``admin.AdminReads``) use of
``ScoreApi``: its wiring, declared once; ``ScoreApi`` provides it."""

from __future__ import annotations

from starlette.requests import Request

from services.score_api.database import Database
from services.score_api.settings import ApiSettings
from services.score_api.store import ScoreStore
from services.score_api.tokens import Claims
from shared.clock import Clock


class ApiWiring:
    settings: ApiSettings
    clock: Clock
    store: ScoreStore
    database: Database

    async def authenticate(self, request: Request, scope: str | None) -> Claims:
        """The request's verified claims (ScoreApi's)."""
        raise NotImplementedError

    def client_ip(self, request: Request) -> str:
        """The caller's address (ScoreApi's)."""
        raise NotImplementedError
