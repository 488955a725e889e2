"""The score API's Redis side: the award, ban and rank scripts.

Time in the scripts is Redis's own (``TIME``), so limits, cooldowns and event timestamps
agree across replicas whatever their clocks say; ``now_ms`` overrides it for tests that
replay a timeline.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from services.score_api.autopipe import ScriptPipeline
from services.score_api.ratelimit import Limit
from services.score_api.revocations import ALL as ALL_BOARDS
from services.score_api.revocations import Revocation
from shared.board import Entry, entries_from_reply
from shared.board_reader import BoardReader
from shared.boards import ALL_TIME, Slot
from shared.clock import SYSTEM, Clock, ms
from shared.events import new_event_id, stream_order
from shared.keys import BoardKeys
from shared.moderator import MODERATE, Moderator
from shared.periods import ALL_TIME as ALL_TIME_PERIOD
from shared.redisconn import RedisClient, lua, text

_AWARD = lua("services.score_api", "award", "limits", "standing")
_TICKET = lua("services.score_api", "ticket", "limits")
_RANK = lua("services.score_api", "rank", "standing")
_POSITION = lua("services.score_api", "position")
_REVOKE = lua("services.score_api", "revoke")
MAX_SLOT_PARTS = 256
# Every script this store runs, as loaded (readiness reloads them after a Redis restart).
SCRIPTS = (_AWARD, _RANK, _TICKET, _POSITION, _REVOKE, MODERATE)


@dataclass(frozen=True, slots=True)
class AwardResult:
    """What the award script decided.

    ``status``: new | duplicate | conflict (the stored result of the key) | limited |
    cooldown | daily-cap (``limit`` names what refused, ``wait_ms`` how long until allowed) |
    too-early (``wait_ms``) | ticket-invalid | ticket-used | banned | overflow. For ``new``,
    ``limit``/``remaining``/``reset_ms`` describe the tightest limit.
    """

    status: str
    user_id: str
    name: str = ""
    action: str = ""
    awarded: int = 0
    score: int = 0
    rank: int = 0
    event_id: str = ""
    limit: str = ""
    remaining: int = 0
    reset_ms: int = 0
    wait_ms: int = 0
    # (board_id, period_id, score, rank) on each periodic board the award counted in.
    boards: tuple[tuple[str, str, int, int], ...] = ()

    def as_dict(self) -> dict[str, object]:
        standings = [(ALL_TIME, ALL_TIME_PERIOD, self.score, self.rank), *self.boards]
        return {
            "user_id": self.user_id,
            "name": self.name,
            "action": self.action,
            "awarded": self.awarded,
            "score": self.score,
            "rank": self.rank,
            "event_id": self.event_id,
            "duplicate": self.status == "duplicate",
            "boards": [
                {"board_id": b, "period": p, "score": score, "rank": rank}
                for b, p, score, rank in standings
            ],
        }


@dataclass(frozen=True, slots=True)
class AwardRequest:
    user_id: str
    name: str  # "" keeps the user's stored name (a reporter that names no one)
    action: str
    points: int
    cooldown_seconds: int
    idempotency_key: str
    client_ip: str
    user_limits: list[Limit]
    ip_limits: list[Limit]
    extras: dict[str, str]
    # What the address limits count the caller under (shared.netaddr.limit_subject, or the
    # reporter); None: client_ip itself. The event keeps client_ip whole, for the audit.
    ip_subject: str | None = None
    max_per_day: int = 0
    ticket: str = ""
    # The periods this award may land in (shared.boards.Slots); the script picks by TIME.
    slots: tuple[Slot, ...] = ()


@dataclass(frozen=True, slots=True)
class TicketRequest:
    user_id: str
    action: str
    ticket: str
    min_seconds: int
    max_seconds: int
    max_open: int
    user_limits: list[Limit]
    ip_limits: list[Limit]
    ip_subject: str


@dataclass(frozen=True, slots=True)
class TicketResult:
    """``status`` new (``not_before_ms``, ``expires_ms``, how many older tickets were
    ``cancelled``, the tightest limit) | limited (``limit``, ``wait_ms``) | banned."""

    status: str
    ticket: str = ""
    not_before_ms: int = 0
    expires_ms: int = 0
    cancelled: int = 0
    limit: str = ""
    remaining: int = 0
    reset_ms: int = 0
    wait_ms: int = 0


class ScoreStore:
    def __init__(
        self, redis: RedisClient, keys: BoardKeys, idempotency_ttl: int, clock: Clock = SYSTEM
    ) -> None:
        self.redis = redis
        self.clock = clock
        self.keys = keys
        self.reader = BoardReader(redis, keys)
        self._ttl = idempotency_ttl
        self._award = redis.register_script(_AWARD)
        self._award_pipeline = (
            ScriptPipeline(redis, self._award) if isinstance(redis, Redis) else None
        )
        self._rank = redis.register_script(_RANK)
        self.moderate = Moderator(redis, keys, clock)
        self._position = redis.register_script(_POSITION)
        self._revoke = redis.register_script(_REVOKE)
        self._ticket = redis.register_script(_TICKET)
        self._slots: dict[Slot, tuple[tuple[str, ...], tuple[str | int, ...]]] = {}
        self._ticket_pipeline = (
            ScriptPipeline(redis, self._ticket) if isinstance(redis, Redis) else None
        )

    async def award(self, req: AwardRequest, now_ms: int | None = None) -> AwardResult:
        """Run the award script at Redis's time, or at ``now_ms`` (tests replaying a timeline)."""
        k = self.keys
        keys = [
            k.board,
            k.members,
            k.names,
            k.seq,
            k.stream,
            k.idempotency(req.user_id, req.idempotency_key),
            k.banned,
            k.cooldown(req.user_id, req.action),
            k.daily(req.user_id, req.action),
            k.ticket(req.ticket),
            k.open_tickets(req.user_id, req.action),
            k.quarantined,
            k.hidden_board,
        ]
        args: list[str | int] = [
            req.user_id,
            req.name,
            req.action,
            req.points,
            new_event_id(ms(self.clock)),
            req.idempotency_key,
            "" if now_ms is None else now_ms,
            req.client_ip,
            self._ttl,
            req.cooldown_seconds * 1000,
            req.max_per_day,
            req.ticket,
            len(req.ip_limits),
            len(req.user_limits),
            len(req.slots),
        ]
        # Address limits first: the script counts replays against them too.
        ip_subject = req.ip_subject or req.client_ip
        self._limits(keys, args, req.points, req.ip_limits, ip_subject)
        self._limits(keys, args, req.points, req.user_limits, req.user_id)
        for slot in req.slots:
            slot_keys, slot_args = self._slot_parts(slot)
            keys += slot_keys
            args += slot_args
        for field, value in req.extras.items():
            args += [field, value]
        if self._award_pipeline is not None:
            raw = await self._award_pipeline(keys, args)
        else:
            raw = await self._award(keys=keys, args=args)
        reply = [text(v) for v in raw]
        return _result(req.user_id, reply)

    async def start(self, req: TicketRequest, now_ms: int | None = None) -> TicketResult:
        """Issue a ticket for an action the user starts (ticket.lua), at Redis's time."""
        k = self.keys
        keys = [k.open_tickets(req.user_id, req.action), k.ticket(req.ticket), k.banned]
        args: list[str | int] = [
            req.user_id,
            req.action,
            req.ticket,
            req.min_seconds * 1000,
            req.max_seconds * 1000,
            req.max_open,
            "" if now_ms is None else now_ms,
            len(req.ip_limits),
            len(req.user_limits),
        ]
        self._limits(keys, args, 0, req.ip_limits, req.ip_subject)
        self._limits(keys, args, 0, req.user_limits, req.user_id)
        if self._ticket_pipeline is not None:
            raw = await self._ticket_pipeline(keys, args)
        else:
            raw = await self._ticket(keys=keys, args=args)
        reply = [text(v) for v in raw]
        status = reply[0]
        if status == "new":
            ticket, not_before, expires, cancelled, limit, remaining, reset = reply[1:8]
            return TicketResult(
                status,
                ticket,
                int(not_before),
                int(expires),
                int(cancelled),
                limit,
                int(remaining),
                int(reset),
            )
        if status == "limited":
            return TicketResult(status, limit=reply[1], wait_ms=int(reply[2]))
        return TicketResult(status)

    def _slot_parts(self, slot: Slot) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
        """The award script's keys and arguments for one period slot, built once per slot
        (the same few serve every award of a period)."""
        parts = self._slots.get(slot)
        if parts is None:
            if len(self._slots) >= MAX_SLOT_PARTS:
                self._slots.clear()
            period = slot.period
            parts = (
                (*self.keys.period_keys(slot.board_id, period.id),
                 self.keys.hidden_period_board(slot.board_id, period.id)),
                (slot.board_id, period.id, period.start_ms or 0, period.end_ms or 0,
                 slot.expire_at_ms),
            )  # fmt: skip
            self._slots[slot] = parts
        return parts

    def _limits(
        self,
        keys: list[str],
        args: list[str | int],
        points: int,
        limits: list[Limit],
        subject: str,
    ) -> None:
        """Append one key and (name, quota, window_ms, cost) per limit of one subject."""
        for limit in limits:
            keys.append(self.keys.rate(limit.name, subject))
            args += [limit.name, limit.quota, limit.window_ms, limit.cost(points)]

    async def rank(
        self,
        user_id: str,
        around: int,
        board: str | None = None,
        members: str | None = None,
        hidden: str | None = None,
    ) -> tuple[Entry, list[Entry]] | None:
        """The user's entry and the neighbours within ``around`` ranks, or None if unranked,
        on the all-time board or on ``board`` with its ``members`` hash (a period's). With
        ``hidden`` (that board's hidden sorted set: the user asking about themself), a
        quarantined user's entry at the rank they would have, without neighbours."""
        k = self.keys
        keys = [board or k.board, k.names, members or k.members]
        if hidden:
            keys.append(hidden)
        reply = await self._rank(keys=keys, args=[user_id, around])
        if not reply:
            return None
        entries = entries_from_reply(reply[1:], int(reply[0]))
        own = next(e for e in entries if e.user_id == user_id)
        return own, [e for e in entries if e.user_id != user_id]

    async def position(self) -> tuple[int, str]:
        """(arrival counter, last stream id), read in one atomic step (position.lua)."""
        seq, last = await self._position(keys=[self.keys.seq, self.keys.stream])
        return int(seq), text(last)

    async def persisted_through(self, group: str, stream_id: str) -> bool:
        """Whether the persisters' group has committed every entry up to ``stream_id``: it
        was delivered, and nothing at or before it is still pending."""
        if stream_id == "0-0":
            return True
        stream = self.keys.stream
        groups = await self.redis.xinfo_groups(stream)
        found = [g for g in groups if text(g["name"]) == group]
        if not found or stream_order(text(found[0]["last-delivered-id"])) < stream_order(stream_id):
            return False
        pending = await self.redis.xpending(stream, group)
        oldest = pending.get("min")
        if not pending.get("pending") or oldest is None:
            return True
        return stream_order(text(oldest)) > stream_order(stream_id)

    async def revoke(
        self,
        revocation: Revocation,
        client_ip: str,
        extras: dict[str, str],
        slots: tuple[Slot, ...],
    ) -> tuple[bool, int]:
        """Apply a recorded revocation in Redis once (revoke.lua): (applied now, score)."""
        k = self.keys
        keys = [k.board, k.members, k.hidden_board, k.banned, k.banned_periods, k.revocations]
        keys += [k.stream, k.names]
        points, last_kept = revocation.boards.get(ALL_BOARDS, (0, 0))
        args: list[str | int] = [revocation.user_id, revocation.revocation_id]
        args += [new_event_id(ms(self.clock)), "", client_ip, revocation.up_to_seq]
        periods = revocation.periods()
        touched = [s for s in slots if (s.board_id, s.period.id) in periods]
        args += [points, last_kept, len(touched)]
        for slot in touched:
            keys += [*k.period_keys(slot.board_id, slot.period.id)]
            keys.append(k.hidden_period_board(slot.board_id, slot.period.id))
            args += [slot.board_id, slot.period.id, *periods[(slot.board_id, slot.period.id)]]
        for name, value in extras.items():
            args += [name, value]
        status, score = (text(v) for v in await self._revoke(keys=keys, args=args))
        return status == "done", int(score)

    async def ready(self) -> bool:
        """Redis answers and the scripts are cached there (loading them if it restarted)."""
        scripts = (self._award, self._rank, self._ticket, self._position, self._revoke)
        shas = [*(str(script.sha) for script in scripts), self.moderate.sha, self.reader.sha]
        present = await self.redis.script_exists(*shas)
        if not all(present):
            for script in (*SCRIPTS, self.reader.lua_text):
                await self.redis.script_load(script)
        return True


def _result(user_id: str, reply: list[str]) -> AwardResult:
    status = reply[0]
    if status in ("new", "duplicate", "conflict"):
        action, awarded, score, rank, event_id, name, on_boards = reply[1:8]
        limit, remaining, reset = ([*reply[8:11], "", "0", "0"])[:3]
        words = on_boards.split()
        boards = tuple(
            (words[i], words[i + 1], int(words[i + 2]), int(words[i + 3]))
            for i in range(0, len(words), 4)
        )
        return AwardResult(
            status,
            user_id,
            name,
            action,
            int(awarded),
            int(score),
            int(rank),
            event_id,
            limit,
            int(remaining),
            int(reset),
            boards=boards,
        )
    if status in ("limited", "cooldown", "daily-cap"):
        return AwardResult(status, user_id, limit=reply[1], wait_ms=int(reply[2]))
    if status == "too-early":
        return AwardResult(status, user_id, wait_ms=int(reply[1]))
    return AwardResult(status, user_id)
