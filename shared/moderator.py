"""Carry out a state action (ban, unban, quarantine, release) in Redis: ``moderate.lua``, one
atomic script that moves the user's entries and appends the stream event. The score API's
admin endpoints and the persister's automatic quarantine (``AUTO_QUARANTINE``) both use it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.boards import Slot
from shared.clock import SYSTEM, Clock, ms
from shared.events import new_event_id
from shared.keys import BoardKeys
from shared.moderation import STATE_ACTIONS, State
from shared.redisconn import RedisClient, lua, text

MODERATE = lua("shared", "moderate")


@dataclass(frozen=True, slots=True)
class Moderated:
    status: str  # done | unchanged | refused (shared.moderation.Outcome)
    score: int | None  # the user's all-time total; None if they never scored
    state: State  # after the call

    @property
    def changed(self) -> bool:
        return self.status == "done"


class Moderator:
    def __init__(self, redis: RedisClient, keys: BoardKeys, clock: Clock = SYSTEM) -> None:
        self.keys = keys
        self.clock = clock
        self._script = redis.register_script(MODERATE)

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    async def __call__(
        self,
        action: str,
        user_id: str,
        client_ip: str,
        extras: Mapping[str, str],
        slots: Sequence[Slot] = (),
        now_ms: int | None = None,
    ) -> Moderated:
        """Apply ``action`` on the all-time board and in every period of ``slots``;
        ``extras`` are the event's optional fields (by, reason, request_id, ...)."""
        if action not in STATE_ACTIONS:
            raise ValueError(f"{action!r} is not a state action")
        k = self.keys
        keys = [k.board, k.members, k.names, k.banned, k.stream, k.banned_periods]
        keys += [k.quarantined, k.hidden_board]
        args: list[str | int] = [action, user_id, new_event_id(ms(self.clock))]
        args.append("" if now_ms is None else now_ms)
        args += [client_ip, len(slots)]
        for slot in slots:
            pboard, pmembers = k.period_keys(slot.board_id, slot.period.id)
            keys += [pboard, pmembers, k.hidden_period_board(slot.board_id, slot.period.id)]
            args += [slot.board_id, slot.period.id, slot.expire_at_ms]
        for field, value in extras.items():
            args += [field, value]
        status, score, state = (text(v) for v in await self._script(keys=keys, args=args))
        return Moderated(status, int(score) if score else None, State(state))
