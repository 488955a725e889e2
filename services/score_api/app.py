"""The score API's HTTP surface (Starlette): routes, error mapping and lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.score_api import boardviews, policy, validation
from services.score_api.actions import Action, UnknownAction
from services.score_api.admin import AdminReads
from services.score_api.archives import Archives
from services.score_api.boardcache import BoardCache
from services.score_api.database import Database
from services.score_api.follower import CacheInvalidator
from services.score_api.httpparts import (
    EncodedJson,
    audit_fields,
    http_error_handler,
    limit_headers,
    problem_handler,
    read_body,
    scope_problems,
)
from services.score_api.jwks import KeySource
from services.score_api.metrics import (
    DUPLICATES,
    RequestMiddleware,
    count_award,
)
from services.score_api.moderation import Moderation
from services.score_api.openapi import openapi_document
from services.score_api.problems import Problem, missing_token, redis_unavailable
from services.score_api.ratelimit import policy_header
from services.score_api.reads import BoardReads
from services.score_api.refusals import refusal
from services.score_api.settings import ApiSettings
from services.score_api.statsreads import StatsReads
from services.score_api.store import AwardRequest, ScoreStore, TicketRequest
from services.score_api.tickets import new_ticket_id, rfc3339
from services.score_api.tokencache import TokenCache
from services.score_api.tokens import (
    SCOPE_WRITE,
    Claims,
    ScopeError,
    TokenError,
    TokenVerifier,
    UnknownKeyId,
)
from shared.boards import Slots
from shared.clock import Clock, clock_for, ms
from shared.formats import Field
from shared.health import Health, json_response
from shared.keys import BoardKeys
from shared.lifecycle import freeze_heap
from shared.redisconn import connect

STATIC = Path(__file__).parent / "static"
# Defence in depth for the live page: only its own scripts and styles, WebSockets anywhere.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The admin console: its own scripts and styles, and no connection but to this API.
ADMIN_HEADERS = PAGE_HEADERS | {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
}


log = logging.getLogger("services.score_api")


# Statuses of the award script after which the board may differ from what this process last
# read: "new" changed it, "duplicate" may answer a write another replica made moments ago.
BOARD_MAY_HAVE_CHANGED = frozenset({"new", "duplicate"})


class ScoreApi(BoardReads, Moderation, AdminReads, StatsReads):
    """Holds the wiring of one app instance; handlers are its methods."""

    def __init__(self, settings: ApiSettings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or clock_for(settings.clock_offset_seconds)
        self.catalogue = settings.catalogue()
        self.openapi_document = openapi_document(settings)
        self.openapi_body = orjson.dumps(self.openapi_document)
        self.key_source = KeySource(settings, self.clock)
        self.verifier = TokenVerifier.from_settings(settings, self.key_source.keys)
        # Signature checks dominate a write's CPU; a client reuses its token for many.
        self.token_cache = TokenCache(settings.jwt_leeway_seconds)
        self.trusted = validation.parse_networks(settings.trusted_proxies)
        self.redis = connect(settings.redis_url, timeout=settings.redis_timeout_seconds)
        self.user_limits = settings.user_limits()
        self.ip_limits = settings.ip_limits()
        self.reporter_limits = settings.reporter_limits()
        self.budgets = settings.budgets()
        self.budget_names = frozenset(b.name for b in self.budgets)
        # Awards count requests and points per user; starting a ticket only requests.
        self.award_limits = self.user_limits + self.budgets
        self.policy = policy_header(self.award_limits + self.ip_limits)
        self.reporter_policy = policy_header(self.award_limits + self.reporter_limits)
        self.start_policy = policy_header(self.user_limits + self.ip_limits)
        self.actions_body = orjson.dumps(
            {
                "actions": [
                    {"action": name} | action.as_dict()
                    for name, action in self.catalogue.actions.items()
                ],
                "player_writes": settings.player_writes,
            }
        )
        keys = BoardKeys(settings.redis_key_prefix, settings.board_id)
        self.store = ScoreStore(self.redis, keys, settings.idempotency_ttl_seconds, self.clock)
        self.board_cache = BoardCache(settings.api_board_cache_seconds)
        self.follower: CacheInvalidator | None = None
        if settings.api_board_cache_seconds > 0:
            timeout = settings.redis_timeout_seconds
            self.follower = CacheInvalidator(settings.redis_url, keys, self.board_cache, timeout)
        self.boards = settings.board_family()
        self.all_time = boardviews.all_time(self.boards)
        self.database = Database(settings.database_url, settings.redis_timeout_seconds)
        self.archives = Archives(self.database, self.clock)
        self.slots = Slots(self.boards, settings.board_retention_periods)
        self.health = Health(ready=self.ready_problems)

    async def authenticate(self, request: Request, scope: str | None) -> Claims:
        """The request's verified claims; with ``scope``, refused (403) unless granted."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise missing_token()
        token = token.strip()
        now = self.clock.time()
        try:
            claims = self.token_cache.get(token, now)
            if claims is None:
                try:
                    claims = self.verifier.verify(token, now)
                except UnknownKeyId:
                    if not await self.key_source.refresh():
                        raise
                    self.use_public_keys()
                    claims = self.verifier.verify(token, now)
                self.token_cache.put(token, claims)
            if scope is not None:
                claims.require(scope)
        except TokenError as exc:
            raise Problem.from_token_error(exc) from None
        except ScopeError as exc:
            raise Problem.from_scope_error(exc) from None
        return claims

    def client_ip(self, request: Request) -> str:
        """The caller's address: X-Forwarded-For only from a trusted proxy (shared.netaddr)."""
        client = request.client.host if request.client else None
        return validation.client_ip(client, request.headers.get("x-forwarded-for"), self.trusted)

    def use_public_keys(self) -> None:
        """Verify with the key source's current keys; tokens cached under the old ones go."""
        self.verifier = self.verifier.with_public_keys(self.key_source.keys)
        self.token_cache.clear()

    def action(self, name: str) -> Action:
        try:
            return self.catalogue.get(name)
        except UnknownAction:
            raise Problem(
                422, "unknown-action", f"unknown action {name!r}", reason="unknown_action"
            ) from None

    async def post_score(self, request: Request) -> Response:
        claims = await self.authenticate(request, None)
        with scope_problems():
            policy.may_write(claims)
        key = validation.idempotency_key(request.headers.get("idempotency-key"))
        validation.content_type_is_json(request.headers.get("content-type"))
        body = validation.award_body(await read_body(request))
        action = self.action(body.action)
        with scope_problems():
            writer = policy.authorise_award(
                body, claims, action, player_writes=self.settings.player_writes
            )
        ip = self.client_ip(request)
        extras = audit_fields(request, claims)
        if writer.reporter is None:
            ip_limits, subject, limit_policy = (
                self.ip_limits,
                validation.limit_subject(ip, self.settings.ipv6_limit_prefix),
                self.policy,
            )
        else:
            # A game server serves many players from one address: it has its own limit.
            extras[Field.REPORTER] = writer.reporter
            ip_limits, subject, limit_policy = (
                self.reporter_limits,
                writer.reporter,
                self.reporter_policy,
            )
        award = AwardRequest(
            user_id=writer.user_id,
            name=writer.name,
            action=body.action,
            points=action.points,
            cooldown_seconds=action.cooldown_seconds,
            idempotency_key=key,
            client_ip=ip,
            user_limits=self.award_limits,
            ip_limits=ip_limits,
            extras=extras,
            ip_subject=subject,
            max_per_day=action.max_per_day,
            ticket=body.ticket or "",
            slots=self.slots.at(ms(self.clock)),
        )
        try:
            result = await self.store.award(award)
        except RedisError:
            # The script may still have run: this replica's own writes are visible at once.
            self.board_cache.invalidate()
            raise redis_unavailable() from None
        if result.status in BOARD_MAY_HAVE_CHANGED:
            self.board_cache.invalidate()
        log.debug(
            "award %s",
            result.status,
            extra={
                "request_id": request.state.request_id,
                "user_id": writer.user_id,
                "action": body.action,
                "event_id": result.event_id,
            },
        )
        if result.status in ("new", "duplicate"):
            if result.status == "new":
                count_award(body.action, action.points)
            else:
                DUPLICATES.inc()
            response = json_response(result.as_dict())
            limit_headers(response, limit_policy, result.limit, result.remaining, result.reset_ms)
            return response
        raise refusal(result, limit_policy, self.budget_names)

    async def start_action(self, request: Request) -> Response:
        """Start a ticket-mode action: 201 with the ticket that its completion redeems."""
        claims = await self.authenticate(request, SCOPE_WRITE)
        validation.content_type_is_json(request.headers.get("content-type"))
        name = validation.start_body(await read_body(request))
        action = self.action(name)
        with scope_problems():
            policy.authorise_start(claims, action, player_writes=self.settings.player_writes)
        ip = self.client_ip(request)
        start = TicketRequest(
            user_id=claims.sub,
            action=name,
            ticket=new_ticket_id(),
            min_seconds=action.min_seconds,
            max_seconds=action.max_seconds,
            max_open=action.max_open,
            user_limits=self.user_limits,
            ip_limits=self.ip_limits,
            ip_subject=validation.limit_subject(ip, self.settings.ipv6_limit_prefix),
        )
        try:
            result = await self.store.start(start)
        except RedisError:
            raise redis_unavailable() from None
        if result.status != "new":
            raise refusal(result, self.start_policy)
        response = json_response(
            {
                "ticket": result.ticket,
                "action": name,
                "not_before": rfc3339(result.not_before_ms),
                "expires_at": rfc3339(result.expires_ms),
            },
            status=201,
        )
        limit_headers(response, self.start_policy, result.limit, result.remaining, result.reset_ms)
        return response

    async def list_actions(self, request: Request) -> Response:
        return EncodedJson(self.actions_body)

    async def ready_problems(self) -> dict[str, object]:
        try:
            await self.store.ready()
        except RedisError as exc:
            return {"redis": type(exc).__name__}
        return {}

    async def openapi(self, request: Request) -> Response:
        return Response(self.openapi_body, media_type="application/json")

    async def live_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    async def admin_page(self, request: Request) -> Response:
        return FileResponse(STATIC / "admin.html", headers=ADMIN_HEADERS)

    async def page_config(self, request: Request) -> Response:
        # "" lets the page use ws(s)://<its own host>:8001/ws/score.
        return json_response(
            {
                "gateway_url": self.settings.api_gateway_url,
                "player_writes": self.settings.player_writes,
            }
        )


def create_app(settings: ApiSettings | None = None, clock: Clock | None = None) -> Starlette:
    api = ScoreApi(settings or ApiSettings(), clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if await api.key_source.refresh(force=True):
            api.use_public_keys()
        # Same run, A/B: POST p99 at saturation 34-38 -> 9-10 ms, at half load 15-20 ->
        # 6-8 ms (docs/benchmarks.md).
        freeze_heap()
        follower = api.follower
        task = asyncio.create_task(follower.run()) if follower else None
        try:
            yield
        finally:
            try:
                if task:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            finally:
                if follower:
                    await follower.aclose()
                await api.refusal_counter.flushed()
                await api.database.aclose()
                await api.redis.aclose()

    routes = [
        Route("/api/score", api.post_score, methods=["POST"]),
        Route("/api/actions", api.start_action, methods=["POST"]),
        Route("/api/actions", api.list_actions, methods=["GET"]),
        Route("/api/score-board", api.score_board, methods=["GET"]),
        Route("/api/boards", api.list_boards, methods=["GET"]),
        Route("/api/me", api.me, methods=["GET"]),
        Route("/api/admin/users/{user_id}", api.ban, methods=["DELETE"]),
        Route("/api/admin/users/{user_id}/ban", api.ban_post, methods=["POST"]),
        Route("/api/admin/users/{user_id}/unban", api.unban, methods=["POST"]),
        Route("/api/admin/users/{user_id}/quarantine", api.quarantine, methods=["POST"]),
        Route("/api/admin/users/{user_id}/release", api.release, methods=["POST"]),
        Route("/api/admin/users/{user_id}/revoke", api.revoke, methods=["POST"]),
        Route("/api/admin/users/{user_id}/events", api.user_events, methods=["GET"]),
        Route("/api/admin/flags", api.list_flags, methods=["GET"]),
        Route("/api/admin/flags/{flag_id}/dismiss", api.dismiss_flag, methods=["POST"]),
        Route("/api/admin/audit", api.audit, methods=["GET"]),
        Route("/api/admin/stats", api.admin_stats, methods=["GET"]),
        Route("/api/users/{user_id}/rank", api.user_rank, methods=["GET"]),
        *api.health.routes(),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/", api.live_page, methods=["GET"]),
        Route("/admin", api.admin_page, methods=["GET"]),
        Route("/config.json", api.page_config, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestMiddleware)],
        exception_handlers={Problem: problem_handler, HTTPException: http_error_handler},
        lifespan=lifespan,
    )
    app.state.api = api
    return app
