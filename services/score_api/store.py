"""The score API's Redis side: the award, ban and rank scripts.

Time in the scripts is Redis's own (``TIME``), so limits, cooldowns and event timestamps
agree across replicas whatever their clocks say; ``now_ms`` overrides it for tests that
replay a timeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from redis.asyncio import Redis

from services.score_api.autopipe import ScriptPipeline
from services.score_api.ratelimit import Limit
from shared.board import Entry, entries_from_reply
from shared.board_reader import BoardReader
from shared.clock import SYSTEM, Clock, ms
from shared.keys import BoardKeys
from shared.redisconn import RedisClient, lua, text

_AWARD = lua("services.score_api", "award")
_RANK = lua("services.score_api", "rank")
_BAN = lua("services.score_api", "ban")


@dataclass(frozen=True, slots=True)
class AwardResult:
    """What the award script decided.

    ``status``: new | duplicate | conflict (the stored result of the key) | limited |
    cooldown (``limit`` names what refused, ``wait_ms`` how long until allowed) | banned |
    overflow. For ``new``, ``limit``/``remaining``/``reset_ms`` describe the tightest limit.
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

    def as_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "action": self.action,
            "awarded": self.awarded,
            "score": self.score,
            "rank": self.rank,
            "event_id": self.event_id,
            "duplicate": self.status == "duplicate",
        }


@dataclass(frozen=True, slots=True)
class AwardRequest:
    user_id: str
    name: str
    action: str
    points: int
    cooldown_seconds: int
    idempotency_key: str
    client_ip: str
    user_limits: list[Limit]
    ip_limits: list[Limit]
    extras: dict[str, str]
    # What the address limits count the caller under (shared.netaddr.limit_subject); None:
    # client_ip itself. The event keeps client_ip whole, for the audit.
    ip_subject: str | None = None


def new_event_id(now_ms: int) -> str:
    """32 hex characters: time-ordered prefix plus 80 random bits; unique without Redis state."""
    return f"{now_ms:012x}{os.urandom(10).hex()}"


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
        self._ban = redis.register_script(_BAN)

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
            len(req.ip_limits),
            len(req.user_limits),
        ]
        # Address limits first: the script counts replays against them too.
        ip_subject = req.ip_subject or req.client_ip
        for limits, subject in ((req.ip_limits, ip_subject), (req.user_limits, req.user_id)):
            for limit in limits:
                keys.append(k.rate(limit.name, subject))
                args += [limit.name, limit.quota, limit.window_ms]
        for field, value in req.extras.items():
            args += [field, value]
        if self._award_pipeline is not None:
            raw = await self._award_pipeline(keys, args)
        else:
            raw = await self._award(keys=keys, args=args)
        reply = [text(v) for v in raw]
        return _result(req.user_id, reply)

    async def moderate(
        self, op: str, user_id: str, client_ip: str, extras: dict[str, str]
    ) -> tuple[bool, int | None]:
        """Ban or unban; (changed, score at the ban or None if the user never scored)."""
        k = self.keys
        args: list[str | int] = [op, user_id, new_event_id(ms(self.clock)), "", client_ip]
        for field, value in extras.items():
            args += [field, value]
        status, score = (
            text(v)
            for v in await self._ban(
                keys=[k.board, k.members, k.names, k.banned, k.stream], args=args
            )
        )
        return status == "done", int(score) if score else None

    async def rank(self, user_id: str, around: int) -> tuple[Entry, list[Entry]] | None:
        """The user's entry and the neighbours within ``around`` ranks, or None if unranked."""
        k = self.keys
        reply = await self._rank(keys=[k.board, k.names, k.members], args=[user_id, around])
        if not reply:
            return None
        entries = entries_from_reply(reply[1:], int(reply[0]))
        own = next(e for e in entries if e.user_id == user_id)
        return own, [e for e in entries if e.user_id != user_id]

    async def ready(self) -> bool:
        """Redis answers and the scripts are cached there (loading them if it restarted)."""
        shas = [str(self._award.sha), str(self._rank.sha), str(self._ban.sha), self.reader.sha]
        present = await self.redis.script_exists(*shas)
        if not all(present):
            for script in (_AWARD, _RANK, _BAN, self.reader.lua_text):
                await self.redis.script_load(script)
        return True


def _result(user_id: str, reply: list[str]) -> AwardResult:
    status = reply[0]
    if status in ("new", "duplicate", "conflict"):
        action, awarded, score, rank, event_id, name = reply[1:7]
        limit, remaining, reset = ([*reply[7:10], "", "0", "0"])[:3]
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
        )
    if status in ("limited", "cooldown"):
        return AwardResult(status, user_id, limit=reply[1], wait_ms=int(reply[2]))
    return AwardResult(status, user_id)
