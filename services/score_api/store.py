"""The score API's Redis side: the award script and the rank look-up."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from shared.board import Entry, entries_from_reply
from shared.board_reader import BoardReader
from shared.keys import BoardKeys
from shared.redisconn import lua

_AWARD = lua("services.score_api", "award")
_RANK = lua("services.score_api", "rank")


@dataclass(frozen=True, slots=True)
class AwardResult:
    status: str  # new | duplicate | conflict | overflow
    user_id: str
    name: str
    action: str
    awarded: int
    score: int
    rank: int
    event_id: str

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


def new_event_id(now_ms: int) -> str:
    """32 hex characters: time-ordered prefix plus 80 random bits; unique without Redis state."""
    return f"{now_ms:012x}{os.urandom(10).hex()}"


class ScoreStore:
    def __init__(self, redis: Redis, keys: BoardKeys, idempotency_ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.reader = BoardReader(redis, keys)
        self._ttl = idempotency_ttl
        self._award = redis.register_script(_AWARD)
        self._rank = redis.register_script(_RANK)

    async def award(
        self,
        *,
        user_id: str,
        name: str,
        action: str,
        points: int,
        idempotency_key: str,
        client_ip: str,
        extras: dict[str, str] | None = None,
    ) -> AwardResult:
        now_ms = time.time_ns() // 1_000_000
        k = self.keys
        args: list[str | int] = [
            user_id,
            name,
            action,
            points,
            new_event_id(now_ms),
            idempotency_key,
            now_ms,
            client_ip,
            self._ttl,
        ]
        for field, value in (extras or {}).items():
            args += [field, value]
        keys = [
            k.board,
            k.members,
            k.names,
            k.seq,
            k.stream,
            k.idempotency(user_id, idempotency_key),
        ]
        reply = [_text(v) for v in await self._award(keys=keys, args=args)]
        status, action_, awarded, score, rank, event_id, name_ = reply
        return AwardResult(
            status, user_id, name_, action_, int(awarded), int(score), int(rank), event_id
        )

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
        shas = [str(self._award.sha), str(self._rank.sha), self.reader.sha]
        present = await self.redis.script_exists(*shas)
        if not all(present):
            for script in (_AWARD, _RANK, self.reader.lua_text):
                await self.redis.script_load(script)
        return True


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
