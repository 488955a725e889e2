"""Redis key names of one board; every key shares one hash tag so scripts run on Redis Cluster."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BoardKeys:
    """All keys of one board, e.g. ``{lb:global}:board``; the ``{...}`` part is the hash tag."""

    prefix: str
    board_id: str

    @property
    def tag(self) -> str:
        return f"{{{self.prefix}:{self.board_id}}}"

    @property
    def board(self) -> str:
        """Sorted set: member ``<seq>:<user_id>`` (shared.formats), score minus the user's
        total, so ascending order is the ranking (see shared.board)."""
        return f"{self.tag}:board"

    @property
    def members(self) -> str:
        """Hash user_id -> current board member, to find a user's entry in O(1)."""
        return f"{self.tag}:members"

    @property
    def names(self) -> str:
        """Hash user_id -> display name."""
        return f"{self.tag}:names"

    @property
    def seq(self) -> str:
        """Counter giving every accepted update its arrival order (the tie-break)."""
        return f"{self.tag}:seq"

    @property
    def stream(self) -> str:
        """Stream of score events (shared.events), read by the persister and the gateways."""
        return f"{self.tag}:events"

    @property
    def dead_letters(self) -> str:
        """Stream of score events the persister could not parse or store, each with its error."""
        return f"{self.tag}:events:dead"

    @property
    def rebuild_board(self) -> str:
        """Staging copy of ``board`` that ``persister rebuild`` fills, then renames into place."""
        return f"{self.tag}:rebuild:board"

    @property
    def rebuild_members(self) -> str:
        """Staging copy of ``members`` (see ``rebuild_board``)."""
        return f"{self.tag}:rebuild:members"

    @property
    def rebuild_names(self) -> str:
        """Staging copy of ``names`` (see ``rebuild_board``)."""
        return f"{self.tag}:rebuild:names"

    @property
    def rebuild_banned(self) -> str:
        """Staging copy of ``banned`` (see ``rebuild_board``)."""
        return f"{self.tag}:rebuild:banned"

    def idempotency(self, user_id: str, key: str) -> str:
        """Hash remembering the result of one (user, Idempotency-Key) pair."""
        # '|' cannot occur in a user id or an idempotency key, so the pair is unambiguous.
        return f"{self.tag}:idem:{user_id}|{key}"

    @property
    def banned(self) -> str:
        """Hash user_id -> ``<score>|<member>`` the user had when banned, both parts empty if
        they never scored (shared.formats.banned_value)."""
        return f"{self.tag}:banned"

    def cooldown(self, user_id: str, action: str) -> str:
        """Present (with a TTL) while the user may not complete ``action`` again."""
        return f"{self.tag}:cd:{user_id}|{action}"

    def rate(self, limit: str, subject: str) -> str:
        """The GCRA theoretical arrival time of one limit for one user or address."""
        return f"{self.tag}:rl:{limit}:{subject}"
