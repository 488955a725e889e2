"""Open connections per client address, against a per-address limit (no I/O)."""

from __future__ import annotations

from collections import Counter


class IpCounter:
    """How many connections each address holds; ``limit`` 0 means unlimited.

    An address is forgotten when its last connection ends, so memory follows the addresses
    connected now, not every address ever seen.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be 0 (unlimited) or positive")
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Count one more connection from ``address``; False (and nothing counted) if full."""
        if self.limit and self._open[address] >= self.limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        """Give back one connection taken with a successful ``acquire``."""
        held = self._open.get(address, 0)
        if held <= 0:
            raise ValueError(f"{address!r} holds no connection to release")
        if held == 1:
            del self._open[address]
        else:
            self._open[address] = held - 1

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def __len__(self) -> int:
        """The number of addresses holding at least one connection."""
        return len(self._open)
