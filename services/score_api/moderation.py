"""The score API's moderation endpoints: ban, unban, quarantine, release and revoke (scope
score:admin), and ``GET /api/me``, where a quarantined user still sees themself. ``ScoreApi``
mixes this in; the attributes below are its wiring.

Every action is a stream event with its moderator (``by``), reason and request id, so every
replica, the persister's audit rows and the archive see it (README, Moderation).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from services.score_api import boardviews, revocations, validation
from services.score_api.boardcache import BoardCache
from services.score_api.database import DatabaseUnavailable
from services.score_api.httpparts import audit_fields, read_admin_body
from services.score_api.problems import (
    Problem,
    database_unavailable,
    redis_unavailable,
    unavailable,
)
from services.score_api.revocations import Revocation, RevocationConflict
from services.score_api.tokens import SCOPE_ADMIN, Claims
from services.score_api.wiring import ApiWiring
from shared.boards import Slots
from shared.clock import ms
from shared.formats import EventType, Field
from shared.health import json_response

_POLL_SECONDS = 0.02


class Moderation(ApiWiring):
    slots: Slots
    board_cache: BoardCache

    def view(self, request: Request) -> boardviews.View:
        raise NotImplementedError  # BoardReads'

    async def ban(self, request: Request) -> Response:
        """``DELETE /api/admin/users/{id}``: the first form of a ban, reason optional."""
        return await self._state_action(request, EventType.BAN, reason_required=False)

    async def ban_post(self, request: Request) -> Response:
        return await self._state_action(request, EventType.BAN)

    async def unban(self, request: Request) -> Response:
        return await self._state_action(request, EventType.UNBAN, reason_required=False)

    async def quarantine(self, request: Request) -> Response:
        return await self._state_action(request, EventType.QUARANTINE)

    async def release(self, request: Request) -> Response:
        return await self._state_action(request, EventType.RELEASE)

    async def _state_action(
        self, request: Request, action: str, reason_required: bool = True
    ) -> Response:
        claims = await self.authenticate(request, SCOPE_ADMIN)
        user_id = validation.user_id(request.path_params["user_id"])
        reason = validation.reason_body(await read_admin_body(request), required=reason_required)
        extras = self._audit(request, claims, reason)
        try:
            done = await self.store.moderate(
                action,
                user_id,
                self.client_ip(request),
                extras,
                self.slots.retained(ms(self.clock)),
            )
        except RedisError:
            raise redis_unavailable() from None
        finally:
            # Even unchanged: another replica may have acted moments ago.
            self.board_cache.invalidate()
        if done.status == "refused":
            raise Problem(
                409,
                "user-banned",
                f"user {user_id!r} is banned; a quarantine cannot apply (unban first)",
                reason="user_banned",
            )
        return json_response(
            {
                "user_id": user_id,
                "status": done.state.value,
                "changed": done.changed,
                "score": done.score,
            }
        )

    def _audit(self, request: Request, claims: Claims, reason: str) -> dict[str, str]:
        extras = audit_fields(request, claims) | {Field.BY: claims.sub}
        if reason:
            extras[Field.REASON] = reason
        return extras

    async def me(self, request: Request) -> Response:
        """``GET /api/me``: the caller's own entry, on any board and period. A quarantined
        user gets the rank they would have on the public board, so nothing looks changed."""
        claims = await self.authenticate(request, None)
        view = self.view(request)
        if not view.kept:
            raise boardviews.not_kept(view, self.settings.board_retention_periods)
        board_key, members_key = view.keys(self.store.keys)
        hidden = view.hidden_key(self.store.keys)
        try:
            found = await self.store.rank(claims.sub, 0, board_key, members_key, hidden)
        except RedisError:
            raise redis_unavailable() from None
        if found is None:
            raise Problem(404, "unranked", "you have no score on this board", reason="unranked")
        own, _ = found
        return json_response(own.as_dict() | view.fields())

    async def revoke(self, request: Request) -> Response:
        """``POST /api/admin/users/{id}/revoke``: remove the points of the user's events in
        [since, until), on every board; idempotent per revocation id (``Idempotency-Key``)."""
        claims = await self.authenticate(request, SCOPE_ADMIN)
        user_id = validation.user_id(request.path_params["user_id"])
        key = request.headers.get("idempotency-key")
        revocation_id = validation.idempotency_key(key) if key is not None else uuid.uuid4().hex
        body = validation.revoke_body(await read_admin_body(request))
        extras = self._audit(request, claims, body.reason)
        ip = self.client_ip(request)
        try:
            up_to_seq, last_id = await self.store.position()
            await self._wait_persisted(last_id)
            async with self.database.connection() as conn:
                for earlier in await revocations.unapplied(conn, user_id):
                    await self._apply(conn, earlier, ip, extras)
                recorded = await revocations.record(
                    conn,
                    revocation_id,
                    user_id,
                    body.since_ms,
                    body.until_ms,
                    up_to_seq,
                    body.reason,
                    claims.sub,
                    request.state.request_id,
                )
                score = await self._apply(conn, recorded, ip, extras)
        except RevocationConflict:
            raise Problem(
                409,
                "idempotency-conflict",
                "this Idempotency-Key was used for another revocation",
                reason="idempotency",
            ) from None
        except RedisError:
            raise redis_unavailable() from None
        except DatabaseUnavailable:
            raise database_unavailable() from None
        finally:
            self.board_cache.invalidate()
        return json_response(recorded.as_dict(score))

    async def _apply(
        self, conn: asyncpg.Connection, revocation: Revocation, ip: str, extras: dict[str, str]
    ) -> int:
        """Apply in Redis (once per id), then note it applied in PostgreSQL."""
        # Its own reason: an earlier revocation applied now keeps the one it was recorded with.
        extras = extras | {
            Field.REVOCATION: revocation.revocation_id,
            Field.REASON: revocation.reason,
        }
        slots = self.slots.retained(ms(self.clock))
        _, score = await self.store.revoke(revocation, ip, extras, slots)
        await revocations.mark_applied(conn, revocation.revocation_id)
        return score

    async def _wait_persisted(self, stream_id: str) -> None:
        """Until the persisters have committed every event up to ``stream_id``: the
        revocation then sees all the events it may revoke."""
        deadline = self.clock.monotonic() + self.settings.revoke_wait_seconds
        group = self.settings.persister_group
        while not await self.store.persisted_through(group, stream_id):
            if self.clock.monotonic() >= deadline:
                raise unavailable(
                    "the persisters have not stored every earlier event yet; retry",
                    "persister_behind",
                )
            await asyncio.sleep(_POLL_SECONDS)
