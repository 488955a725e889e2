"""Per-process cache of encoded board pages: which pages are kept, for how long, and when not.

No I/O here. ``services.score_api.follower`` invalidates the cache on every stream entry and
disables it while it has lost Redis; the API invalidates it after its own writes. A page is
served only while nothing has invalidated it and it is younger than ``max_age`` seconds, which
also bounds how long a change that appends no event (``persister rebuild``) stays unseen.
"""

from __future__ import annotations

# Only the top of the board is cached (what live pages ask for), and only a few dozen pages:
# deep pages are rare, and each distinct (limit, offset) would be another entry.
MAX_CACHED_ROWS = 100
MAX_PAGES = 48


def cacheable(limit: int, offset: int) -> bool:
    """Whether the page of ``limit`` rows after ``offset`` may be cached at all."""
    return limit > 0 and offset >= 0 and offset + limit <= MAX_CACHED_ROWS


class BoardCache:
    """Encoded pages keyed by (limit, offset), each tagged with when its Redis read began.

    ``generation`` changes on every invalidation. A reader notes it before reading Redis and
    hands it back to ``put``, which stores nothing if it changed meanwhile: a page read before
    an invalidation can never replace what the invalidation cleared.
    """

    def __init__(self, max_age: float, max_pages: int = MAX_PAGES) -> None:
        self.max_age = max_age
        self.max_pages = max_pages
        self.generation = 0
        # Off until the stream follower knows its position; never on when max_age is 0.
        self.enabled = False
        self._pages: dict[tuple[int, int], tuple[float, bytes]] = {}

    def __len__(self) -> int:
        return len(self._pages)

    def get(self, limit: int, offset: int, now: float) -> bytes | None:
        """The cached page, or None (missing, expired or cache disabled)."""
        found = self._pages.get((limit, offset))
        if found is None:
            return None
        read_at, body = found
        if now - read_at >= self.max_age:
            del self._pages[(limit, offset)]
            return None
        return body

    def put(self, limit: int, offset: int, body: bytes, generation: int, read_at: float) -> bool:
        """Keep ``body`` if it was read under the current generation; whether it was kept."""
        if not self.enabled or generation != self.generation or not cacheable(limit, offset):
            return False
        pages = self._pages
        if (limit, offset) not in pages and len(pages) >= self.max_pages:
            del pages[next(iter(pages))]  # the oldest insertion goes first
        pages[(limit, offset)] = (read_at, body)
        return True

    def invalidate(self) -> None:
        """The board may have changed: forget every page and every read in flight."""
        self.generation += 1
        self._pages.clear()

    def enable(self) -> None:
        """The follower is in step with the stream: caching may (re)start, from empty."""
        self.invalidate()
        self.enabled = self.max_age > 0

    def disable(self) -> None:
        """The follower lost the stream: serve nothing cached until it is back in step."""
        self.enabled = False
        self.invalidate()
