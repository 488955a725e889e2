"""This persister as a member of the consumer group: what every part of its loop works with."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.persister.settings import PersisterSettings
from services.persister.store import EventStore
from shared.clock import Clock
from shared.keys import BoardKeys
from shared.redisconn import RedisClient


@dataclass(frozen=True)
class Member:
    """Settings, connections and clock of one persister; ``dataclasses.replace`` it to vary
    a setting in a test."""

    settings: PersisterSettings
    redis: RedisClient
    store: EventStore
    clock: Clock
    keys: BoardKeys = field(init=False)

    def __post_init__(self) -> None:
        keys = BoardKeys(self.settings.redis_key_prefix, self.settings.board_id)
        object.__setattr__(self, "keys", keys)

    @property
    def stream(self) -> str:
        return self.keys.stream

    @property
    def group(self) -> str:
        return self.settings.persister_group

    @property
    def consumer(self) -> str:
        return self.settings.persister_consumer
