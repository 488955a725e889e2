"""The board cache's bookkeeping: generations, age, enabling and bounds (no I/O)."""

from __future__ import annotations

from services.score_api.boardcache import MAX_CACHED_ROWS, BoardCache, cacheable


def enabled_cache(max_age: float = 1.0, max_pages: int = 8) -> BoardCache:
    cache = BoardCache(max_age, max_pages)
    cache.enable()
    return cache


def test_a_page_read_under_the_current_generation_is_served() -> None:
    cache = enabled_cache()
    assert cache.get(10, 0, 0.0) is None
    assert cache.put(10, 0, b"page", cache.generation, 0.0)
    assert cache.get(10, 0, 0.5) == b"page"
    assert cache.get(10, 1, 0.5) is None
    assert cache.get(11, 0, 0.5) is None


def test_nothing_is_cached_before_the_follower_enables_the_cache() -> None:
    cache = BoardCache(1.0)
    assert not cache.put(10, 0, b"page", cache.generation, 0.0)
    assert cache.get(10, 0, 0.0) is None
    cache.enable()
    assert cache.put(10, 0, b"page", cache.generation, 0.0)


def test_a_page_is_served_only_while_younger_than_the_max_age() -> None:
    cache = enabled_cache(max_age=1.0)
    cache.put(10, 0, b"page", cache.generation, 100.0)
    assert cache.get(10, 0, 100.999) == b"page"
    assert cache.get(10, 0, 101.0) is None
    assert len(cache) == 0


def test_invalidation_forgets_every_page() -> None:
    cache = enabled_cache()
    cache.put(10, 0, b"a", cache.generation, 0.0)
    cache.put(5, 5, b"b", cache.generation, 0.0)
    cache.invalidate()
    assert cache.get(10, 0, 0.0) is None
    assert cache.get(5, 5, 0.0) is None
    assert len(cache) == 0


def test_a_read_that_began_before_an_invalidation_is_never_stored() -> None:
    cache = enabled_cache()
    before = cache.generation
    cache.invalidate()  # e.g. a stream entry arrived while the read was in flight
    assert not cache.put(10, 0, b"stale", before, 0.0)
    assert cache.get(10, 0, 0.0) is None
    assert cache.put(10, 0, b"fresh", cache.generation, 0.0)
    assert cache.get(10, 0, 0.0) == b"fresh"


def test_disabling_clears_and_refuses_until_enabled_again() -> None:
    cache = enabled_cache()
    cache.put(10, 0, b"page", cache.generation, 0.0)
    in_flight = cache.generation
    cache.disable()
    assert cache.get(10, 0, 0.0) is None
    assert not cache.put(10, 0, b"page", cache.generation, 0.0)
    cache.enable()
    # A read begun before the outage stays refused after the follower is back.
    assert not cache.put(10, 0, b"old", in_flight, 0.0)
    assert cache.put(10, 0, b"new", cache.generation, 0.0)
    assert cache.get(10, 0, 0.0) == b"new"


def test_a_max_age_of_zero_turns_the_cache_off() -> None:
    cache = BoardCache(0.0)
    cache.enable()
    assert not cache.enabled
    assert not cache.put(10, 0, b"page", cache.generation, 0.0)
    assert cache.get(10, 0, 0.0) is None


def test_only_pages_within_the_top_rows_are_cacheable() -> None:
    assert cacheable(10, 0)
    assert cacheable(MAX_CACHED_ROWS, 0)
    assert cacheable(1, MAX_CACHED_ROWS - 1)
    assert not cacheable(1, MAX_CACHED_ROWS)
    assert not cacheable(100, 1)
    assert not cacheable(0, 0)
    cache = enabled_cache()
    assert not cache.put(10, 95, b"deep", cache.generation, 0.0)
    assert cache.get(10, 95, 0.0) is None


def test_the_number_of_pages_is_bounded_and_the_oldest_goes_first() -> None:
    cache = enabled_cache(max_pages=3)
    for offset in range(3):
        assert cache.put(10, offset, b"%d" % offset, cache.generation, 0.0)
    assert cache.put(10, 1, b"again", cache.generation, 0.0)  # replacing evicts nothing
    assert len(cache) == 3
    assert cache.put(10, 3, b"3", cache.generation, 0.0)
    assert len(cache) == 3
    assert cache.get(10, 0, 0.0) is None
    assert [cache.get(10, o, 0.0) for o in (1, 2, 3)] == [b"again", b"2", b"3"]
