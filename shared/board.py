"""The board's ordering: how a (score, arrival, user) triple becomes a sorted-set entry.

The member format itself is ``shared.formats``' (one source for Python and the scripts).
Sorted-set scores are doubles, so the tie-break cannot be packed into them without losing
exactness. Instead the set stores ``-score`` (exact for integers below 2**53) and a member
``<seq:016d>:<user_id>``: Redis orders equal scores by member bytes, i.e. by arrival sequence
(who reached the score first), then by user id. Ascending ``ZRANGE`` is therefore the ranking,
and ``ZRANK`` of a member is its 0-based rank, O(log N).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.formats import decode_member
from shared.redisconn import text


@dataclass(frozen=True, slots=True)
class Entry:
    """One ranked row as the API and the gateway publish it."""

    rank: int
    user_id: str
    name: str
    score: int

    def as_dict(self) -> dict[str, int | str]:
        return {"rank": self.rank, "user_id": self.user_id, "name": self.name, "score": self.score}


def entries_from_reply(rows: list[bytes | str], first_rank: int) -> list[Entry]:
    """Turn the flat ``[member, score, name, ...]`` reply of the read scripts into entries.

    The scripts already turned the stored ``-score`` into an exact positive decimal string.
    """
    out: list[Entry] = []
    for i in range(0, len(rows), 3):
        member, score, name = (text(v) for v in rows[i : i + 3])
        _, user_id = decode_member(member)
        out.append(Entry(first_rank + i // 3, user_id, name or user_id, int(score)))
    return out
